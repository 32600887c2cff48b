"""Make carts with the real Pacifica Cartd 0.7.0, run by the python of its side venv.

Not imported by the tests: `tests/support/original.py` runs this file with the
`cartd-original` venv's interpreter, the original's settings in the environment
(`VOLUME_PATH`, `PEEWEE_URL`, `ARCHIVE_INTERFACE_URL`), and a JSON list of carts to
make on stdin. The original's own code does the work: its `dbsync` creates the
schema, and its Celery tasks run eagerly in this process (no broker, no worker), so
each cart is made exactly as a worker of the original would make it. Prints, as
JSON, each cart's id, status and error as the original's tables hold them.

Kinds of cart:

- `ready`: ordered and made to the end (streamed, or with `"bundle": true`).
- `partial`: ordered, then only its first file staged: an order still in progress.
- `unordered`: the POST's row only: the original's worker never took the order.
- `error`: ordered and made to the end, which fails (the order's checksum is wrong).
- `deleted`: made ready, then deleted through the original's own DELETE code.
"""

import itertools
import json
import sys
from collections import deque

from pacifica.cartd.__main__ import cmd
from pacifica.cartd.archive_requests import ArchiveRequests
from pacifica.cartd.orm import Cart, File
from pacifica.cartd.tasks import (
    get_files_locally,
    pull_file,
    stage_file_task,
    stage_files,
    status_file_task,
)
from pacifica.cartd.utils import Cartutils

SENT = deque()
_task_ids = itertools.count(1)


class Sent:
    """What `delay` hands back; the original records its `str` as the Celery task id."""

    def __init__(self):
        self.id = f"task-{next(_task_ids)}"

    def __str__(self):
        return self.id


def _sender(task):
    def delay(*args):
        SENT.append((task, args))
        return Sent()

    return delay


for _task in (stage_files, get_files_locally, stage_file_task, status_file_task, pull_file):
    _task.delay = _sender(_task)
# A checksum mismatch is tried 5 times a second apart; the tries are not the point here.
ArchiveRequests.default_retry_sleep = 0


def work():
    """Run the tasks sent, and those they send, in order: one worker of the original."""
    while SENT:
        task, args = SENT.popleft()
        task(*args)


def _ordered(spec):
    """What the original's POST writes, before its Celery task takes the order."""
    cart = Cart(cart_uid=spec["uid"], status="staging", bundle=spec.get("bundle", False))
    cart.save()
    return cart


def make(spec):
    kind = spec["kind"]
    cart = _ordered(spec)
    if kind in ("ready", "error", "deleted"):
        stage_files(spec["fileids"], cart.id)
        work()
    elif kind == "partial":
        Cartutils.update_cart_files(cart, spec["fileids"])
        first = File.select().where(File.cart == cart.id).order_by(File.id).first()
        stage_file_task(first.id)
        work()
    if kind == "deleted":
        Cartutils().remove_cart(spec["uid"], lambda *_args, **_kwargs: None)
    Cart.database_connect()
    cart = Cart.get(Cart.id == cart.id)
    return {"uid": spec["uid"], "id": cart.id, "status": cart.status, "error": cart.error}


def main():
    specs = json.load(sys.stdin)
    if cmd("dbsync") != 0:
        raise SystemExit("the original's dbsync failed")
    made = [make(spec) for spec in specs]
    json.dump(made, sys.stdout)


if __name__ == "__main__":
    main()
