"""The broker x database cells distributed mode is tested on.

`CELLS` pairs each broker with a different database server, so two cells cover every
server: the API's tests run whole on those. `MATRIX` is every pairing, for a small core.
Kept apart from `cluster` so that `conftest` can parametrise with them without a cycle.
"""

from __future__ import annotations

import pytest


def _cell(broker: str, database: str) -> object:
    marks = [getattr(pytest.mark, broker), getattr(pytest.mark, database)]
    return pytest.param((broker, database), id=f"{broker}-{database}", marks=marks)


RABBITMQ_POSTGRES = _cell("rabbitmq", "postgres")
REDIS_MYSQL = _cell("redis", "mysql")
CELLS = [RABBITMQ_POSTGRES, REDIS_MYSQL]
MATRIX = [*CELLS, _cell("rabbitmq", "mysql"), _cell("redis", "postgres")]
