"""The in-process runner of `cartd serve` when no broker is configured.

A few threads take due steps from one timed queue. A step that must wait (a
file on tape, a retry after a fault) is put back with its due time instead of
sleeping, so waiting files never hold a thread. The queue itself is not
durable and need not be: every fact lives in the database. `start` rebuilds the
queue from it, and a sweep every few seconds picks up work this process was
not told about (a `cartd fixit` run from a shell, another API process).

File steps due at once (a new cart's files, all of them at its start) wait in a lane
of their own, a file id each, rather than in the timed queue, where a step costs
about 240 bytes: a cart of 100,000 files queued 24 MB there.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from cartd.db.store import CartStore
from cartd.service.pipeline import SIZE_AHEAD_FROM, Pipeline
from cartd.storage import Volume
from cartd.workers.steps import Kind, follow_up, take_step

log = logging.getLogger(__name__)

Task = tuple[Kind, int]

#: Most file steps a worker takes at once. Files taken together are recorded in one
#: transaction; a worker takes no more than its share of the due steps, so files of a
#: small cart are still pulled side by side.
MAX_BATCH = 64


class EmbeddedRunner:
    def __init__(
        self,
        pipeline: Pipeline,
        store: CartStore,
        volume: Volume,
        workers: int,
        sweep_interval: float = 5.0,
    ) -> None:
        self.pipeline = pipeline
        self.store = store
        self.volume = volume
        self.workers = workers
        self.sweep_interval = sweep_interval
        self._queue: list[tuple[float, int, Task]] = []
        #: When each queued task is due. An entry of the heap whose time is not this one
        #: was superseded by an earlier one (see `_push`) and is dropped when met.
        self._queued: dict[Task, float] = {}
        #: File steps due now, outside the timed queue (a step is in one or the other),
        #: in their order; due since the first was queued into the empty lane.
        self._lane: deque[int] = deque()
        self._in_lane: set[int] = set()
        self._lane_since = 0.0
        self._running: set[Task] = set()
        self._rerun: set[Task] = set()  # submitted again while running: run once more
        self._order = itertools.count()
        self._cond = threading.Condition(threading.RLock())
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def submit_file(self, file_id: int, delay: float = 0.0) -> None:
        self._push(("file", file_id), delay)

    def submit_files(self, file_ids: Iterable[int], delay: float = 0.0) -> None:
        # Queued together, so waking workers find all of them due and share them out.
        with self._cond:
            for file_id in file_ids:
                self._push(("file", file_id), delay)

    def submit_size(self, cart_id: int, delay: float = 0.0) -> None:
        self._push(("size", cart_id), delay)

    def submit_finish(self, cart_id: int, delay: float = 0.0) -> None:
        self._push(("finish", cart_id), delay)

    def _push(self, task: Task, delay: float) -> None:
        """Queue a task; one queued already runs at the earlier of the two times (a file
        waiting for its next poll that `cartd fixit` made due runs now)."""
        with self._cond:
            if task in self._running:
                self._rerun.add(task)
                return
            kind, ident = task
            if kind == "file" and ident in self._in_lane:
                return  # to run now already
            due = time.monotonic() + delay
            if kind == "file" and delay <= 0:
                self._queued.pop(task, None)  # its entry for later is superseded
                if not self._lane:
                    self._lane_since = due
                self._lane.append(ident)
                self._in_lane.add(ident)
                self._cond.notify()
                return
            if kind != "file" and delay <= 0:
                # A cart's step due now goes before the file steps already due: it is
                # short, and what it does (size a large cart ahead of its pulls, end a
                # cart) matters to every client of the cart.
                due = min(due, self._queue[0][0] if self._queue else due, self._lane_due(due))
            if task in self._queued and self._queued[task] <= due:
                return
            self._queued[task] = due
            heapq.heappush(self._queue, (due, next(self._order), task))
            self._cond.notify()

    def start(self) -> None:
        self.pipeline.start()
        self.sweep()
        # A large cart's sizing ahead (`Pipeline.size_cart`) is a chain of steps this
        # process held only in memory: a restart takes it up again, else a download
        # waiting for the cart's length would wait until its batches had sized it all.
        for cart_id in self.store.unsized_carts(SIZE_AHEAD_FROM):
            self.submit_size(cart_id)
        for index in range(self.workers):
            self._spawn(self._work, f"cartd-worker-{index}")
        self._spawn(self._sweep_forever, "cartd-sweeper")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def sweep(self) -> None:
        """Queue whatever the database says is unfinished; queued work is not doubled."""
        files, finishing, deleted = self.store.unfinished()
        for cart_id in deleted:
            self.volume.remove_cart(cart_id)
            self.store.forget(cart_id)
        with self._cond:
            queued, running = dict(self._queued), set(self._running)
            in_lane = set(self._in_lane)
            now = time.monotonic()
        sizing = {ident for kind, ident in [*queued, *running] if kind == "size"}
        wall = time.time()
        for file_id, cart_id, due in files:
            delay = max(0.0, (due or wall) - wall)
            task: Task = ("file", file_id)
            # Queued for no later than the database says: nothing to do (that is all of a
            # large cart's files, mostly: pushed one at a time, a lock each, they made each
            # sweep of a 100,000-file cart cost a core-second). A running one is pushed, to
            # run once more: a re-drive (`cartd fixit`) may have come while it ran.
            if task not in running and (
                file_id in in_lane or queued.get(task, float("inf")) <= now + delay
            ):
                continue
            if cart_id not in sizing:
                self.submit_file(file_id, delay)
        for cart_id in finishing:
            self.submit_finish(cart_id)

    def _sweep_forever(self) -> None:
        while not self._stopping.wait(self.sweep_interval):
            try:
                self.sweep()
            except Exception:
                log.exception("sweeping for unfinished work failed; trying again later")

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        self.pipeline.stop()

    def _next(self) -> list[Task]:
        """The next due task; for a file step, with more due file steps (its share)."""
        with self._cond:
            while not self._stopping.is_set():
                self._drop_superseded()
                now = time.monotonic()
                head = self._queue[0] if self._queue and self._queue[0][0] <= now else None
                if head is not None and head[2][0] != "file" and head[0] <= self._lane_due(now):
                    return [self._pop()]
                # A share of all the file steps due or under way, so that the first
                # batches of a new cart take every one of its files (up to `MAX_BATCH`
                # each): each batch sizes its files first, and a download waiting for the
                # cart's length has it once the first round has sized them.
                due = len(self._in_lane) + self._due_count(now, MAX_BATCH * self.workers)
                under_way = sum(1 for kind, _ in self._running if kind == "file")
                first = self._pop_file(now)
                if first is not None:
                    share = min(-(-(due + under_way) // self.workers), MAX_BATCH)
                    tasks = [first]
                    while len(tasks) < share and (task := self._pop_file(now)) is not None:
                        tasks.append(task)
                    return tasks
                self._cond.wait(self._queue[0][0] - now if self._queue else None)
            return []

    def _lane_due(self, otherwise: float) -> float:
        return self._lane_since if self._lane else otherwise

    def _pop_file(self, now: float) -> Task | None:
        """The earliest due file step, from the lane or the timed queue, or None (when
        a step of another kind comes first)."""
        self._drop_superseded()
        head = self._queue[0] if self._queue else None
        if self._lane and (head is None or self._lane_since < head[0] or head[0] > now):
            file_id = self._lane.popleft()
            self._in_lane.discard(file_id)
            task: Task = ("file", file_id)
            self._running.add(task)
            return task
        if head is not None and head[0] <= now and head[2][0] == "file":
            return self._pop()
        return None

    def _drop_superseded(self) -> None:
        while self._queue and self._queued.get(self._queue[0][2]) != self._queue[0][0]:
            heapq.heappop(self._queue)

    def _pop(self) -> Task:
        _, _, task = heapq.heappop(self._queue)
        del self._queued[task]
        self._running.add(task)
        return task

    def _due_count(self, now: float, cap: int) -> int:
        """How many queued steps are due, counting up to `cap`.

        The due entries of a heap form a subtree at its root, so only they are visited.
        """
        count, stack = 0, [0]
        while stack and count < cap:
            index = stack.pop()
            if index < len(self._queue) and self._queue[index][0] <= now:
                count += 1
                stack += (2 * index + 1, 2 * index + 2)
        return count

    def _work(self) -> None:
        while tasks := self._next():
            kind = tasks[0][0]
            idents = [ident for _, ident in tasks]
            outcome = take_step(self.pipeline, kind, idents)
            with self._cond:
                for index, task in enumerate(tasks):
                    self._running.discard(task)
                    if task in self._rerun:  # submitted again while it ran: run once more
                        self._rerun.discard(task)
                        outcome.delays[index] = 0.0
            if not self._stopping.is_set():
                follow_up(self, kind, idents, outcome)
