"""The queries behind one recall for many carts, on PostgreSQL and MariaDB (the real servers
on this machine): which row leads, which wake, and how the space ledger counts a shared
file once and plans evictions. Their SQL (correlated EXISTS, grouped sums, expressions in
GROUP BY) is where the dialects differ most; the cases are those run on SQLite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cartd.db import migrate
from cartd.db.engine import database_url, make_engine
from cartd.db.store import CartStore
from tests.conftest import scratch_database
from tests.unit import test_copies

CASES: list[Callable[[CartStore], None]] = [
    test_copies.test_the_lowest_open_row_leads_and_a_verified_copy_is_a_donor,
    test_copies.test_a_file_asked_to_be_staged_keeps_the_lead_against_a_lower_row,
    test_copies.test_a_failed_cart_leads_no_more,
    test_copies.test_recording_a_copy_wakes_the_rows_waiting_for_it,
    test_copies.test_usage_counts_each_archive_file_once_whoever_is_left,
    test_copies.test_a_cart_reserves_only_what_it_does_not_share,
    test_copies.test_eviction_counts_only_the_bytes_no_other_cart_names,
    test_copies.test_carts_that_share_every_file_are_evicted_together_for_room,
    test_copies.test_files_without_a_checksum_are_never_counted_as_one_copy,
    test_copies.test_the_cart_being_admitted_keeps_what_it_shares_with_an_evicted_one,
]


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CartStore]:
    with scratch_database(request.param) as url:
        engine = make_engine(database_url(url, tmp_path))
        migrate.upgrade(engine)
        try:
            yield CartStore(engine)
        finally:
            engine.dispose()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__.removeprefix("test_"))
def test_on_a_database_server(case: Callable[[CartStore], None], store: CartStore) -> None:
    case(store)
