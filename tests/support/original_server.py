"""Run the real Pacifica Cartd 0.7.0's server or Celery worker, with its python.

Not imported by the tests: `original_service.py` runs this file with the
`cartd-original` venv's interpreter, the original's settings in the environment
(`VOLUME_PATH`, `PEEWEE_URL`, `ARCHIVE_INTERFACE_URL`, `BROKER_URL`). The one thing
added to the original's own start is the Celery queue, named by `ORIGINAL_QUEUE`, so
that its tasks go through a queue no other test run reads (the original always uses
Celery's default queue `celery`).

    python original_server.py serve PORT CPCONFIG   # pacifica-cartd-cmd dbsync, then
                                                    # pacifica-cartd -p PORT
    python original_server.py worker                # celery -A pacifica.cartd.tasks worker
"""

import os
import sys

from pacifica.cartd.__main__ import cmd, main
from pacifica.cartd.tasks import CART_APP

CART_APP.conf.task_default_queue = os.environ["ORIGINAL_QUEUE"]


def run(argv):
    if argv[0] == "serve":
        port, cpconfig = argv[1], argv[2]
        if cmd("dbsync") != 0:
            sys.exit("the original's dbsync failed")
        main("-p", port, "-a", "127.0.0.1", "--cpconfig", cpconfig)
    elif argv[0] == "worker":
        # One task at a time, in the worker's own process: on SQLite, two of the
        # original's worker processes writing at once fail with "database is locked" and
        # leave the cart staging forever.
        CART_APP.worker_main(
            [
                "worker",
                "-Q",
                os.environ["ORIGINAL_QUEUE"],
                "-l",
                "INFO",
                "--pool",
                "solo",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
            ]
        )
    else:
        sys.exit(f"unknown command {argv[0]}")


if __name__ == "__main__":
    run(sys.argv[1:])
