"""The embedded runner's scheduling: how file steps are shared out among workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

from cartd.observability.metrics import Metrics
from cartd.service.pipeline import Advanced, Pipeline
from cartd.workers.embedded import MAX_BATCH, EmbeddedRunner


class RecordingPipeline:
    """Stands in for the pipeline: records the batches of file steps it is handed."""

    def __init__(
        self, again: dict[int, float] | None = None, sized: dict[int, list[int]] | None = None
    ) -> None:
        self.batches: list[list[int]] = []
        self.again = dict(again or {})
        self.sized = dict(sized or {})
        self.lock = threading.Lock()
        self.metrics = Metrics()  # the steps taken are counted on it

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def advance(self, file_ids: Sequence[int]) -> Advanced:
        with self.lock:
            self.batches.append(list(file_ids))
            return Advanced([self.again.pop(file_id, None) for file_id in file_ids])

    def size_cart(self, cart_id: int) -> Advanced:
        with self.lock:
            self.batches.append([-cart_id])
            return Advanced([None], self.sized.pop(cart_id, []))

    def steps(self) -> list[int]:
        with self.lock:
            return [step for batch in self.batches for step in batch]


class EmptyStore:
    def __init__(self, unsized: list[int] | None = None) -> None:
        self.unsized = unsized or []

    def unfinished(self) -> tuple[list[Any], list[int], list[int]]:
        return [], [], []

    def unsized_carts(self, more_than: int) -> list[int]:
        return self.unsized


def run(pipeline: RecordingPipeline, workers: int, submit: Iterable[int], expect: int) -> None:
    runner = EmbeddedRunner(
        cast(Pipeline, pipeline), cast(Any, EmptyStore()), cast(Any, None), workers
    )
    runner.submit_files(submit)  # queued before the workers start: all due at once
    runner.start()
    deadline = time.monotonic() + 10
    while len(pipeline.steps()) < expect and time.monotonic() < deadline:
        time.sleep(0.01)
    runner.stop()


def test_due_file_steps_are_shared_out_in_batches_of_at_most_a_workers_share() -> None:
    pipeline = RecordingPipeline()
    run(pipeline, workers=4, submit=range(40), expect=40)
    assert sorted(pipeline.steps()) == list(range(40)), "each step ran exactly once"
    assert all(len(batch) <= MAX_BATCH for batch in pipeline.batches)
    assert len(pipeline.batches[0]) == 10, "the first worker takes its share, not all"
    assert len(pipeline.batches) >= 4


class HoldingPipeline(RecordingPipeline):
    """Keeps every batch under way until `release`: the first round of batches stays."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()

    def advance(self, file_ids: Sequence[int]) -> Advanced:
        advanced = super().advance(file_ids)
        self.released.wait(10)
        return advanced


def test_the_first_round_of_batches_takes_every_file_of_a_new_cart() -> None:
    """Each batch sizes its files before it pulls them: a file left for a later round
    would keep the cart's length (what a waiting download needs) unknown until a batch
    of the first round has pulled all of its own."""
    pipeline = HoldingPipeline()
    runner = EmbeddedRunner(cast(Pipeline, pipeline), cast(Any, EmptyStore()), cast(Any, None), 4)
    runner.submit_files(range(100))
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while len(pipeline.steps()) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pipeline.lock:
            first_round = [list(batch) for batch in pipeline.batches]
    finally:
        pipeline.released.set()
        runner.stop()
    assert sorted(len(batch) for batch in first_round) == [25, 25, 25, 25]
    assert sorted(step for batch in first_round for step in batch) == list(range(100))


def test_a_lone_due_step_is_not_held_back_for_a_batch() -> None:
    pipeline = RecordingPipeline()
    run(pipeline, workers=4, submit=[7], expect=1)
    assert pipeline.batches == [[7]]


def test_a_step_that_asks_to_run_again_runs_again_alone_when_due() -> None:
    pipeline = RecordingPipeline(again={3: 0.2})
    run(pipeline, workers=2, submit=range(6), expect=7)
    assert sorted(pipeline.steps()) == [0, 1, 2, 3, 3, 4, 5]
    assert pipeline.batches[-1] == [3]


def test_other_steps_are_never_batched_with_file_steps() -> None:
    pipeline = RecordingPipeline()
    runner = EmbeddedRunner(cast(Pipeline, pipeline), cast(Any, EmptyStore()), cast(Any, None), 1)
    runner.submit_size(5)
    runner.submit_files(range(3))
    runner.start()
    deadline = time.monotonic() + 10
    while len(pipeline.steps()) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    runner.stop()
    assert pipeline.batches == [[-5], [0, 1, 2]]


def test_the_files_a_sizing_step_starts_are_run() -> None:
    pipeline = RecordingPipeline(sized={5: [10, 11, 12]})
    runner = EmbeddedRunner(cast(Pipeline, pipeline), cast(Any, EmptyStore()), cast(Any, None), 1)
    runner.submit_size(5)
    runner.start()
    deadline = time.monotonic() + 10
    while len(pipeline.steps()) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    runner.stop()
    assert pipeline.batches == [[-5], [10, 11, 12]]


def test_a_queued_step_submitted_again_sooner_runs_at_the_sooner_time() -> None:
    pipeline = RecordingPipeline()
    runner = EmbeddedRunner(cast(Pipeline, pipeline), cast(Any, EmptyStore()), cast(Any, None), 1)
    runner.submit_file(9, delay=3600)  # waiting for its next poll, an hour away
    runner.start()
    runner.submit_file(9, delay=0)  # made due now (`cartd fixit`)
    runner.submit_file(9, delay=1800)  # a later time changes nothing
    deadline = time.monotonic() + 10
    while not pipeline.steps() and time.monotonic() < deadline:
        time.sleep(0.01)
    runner.stop()
    assert pipeline.steps() == [9]


def test_a_step_submitted_again_while_due_runs_once() -> None:
    pipeline = RecordingPipeline()
    runner = EmbeddedRunner(cast(Pipeline, pipeline), cast(Any, EmptyStore()), cast(Any, None), 1)
    runner.submit_files([1, 2])
    runner.submit_file(1)
    runner.submit_file(2, delay=60)  # a later time changes nothing
    runner.submit_files([3])
    runner.start()
    deadline = time.monotonic() + 10
    while len(pipeline.steps()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    runner.stop()
    assert pipeline.steps() == [1, 2, 3]


def test_a_start_takes_up_again_the_sizing_ahead_of_large_carts() -> None:
    """What the store names as carts with many files still unsized (their sizing-ahead
    steps were held in the memory of a process that stopped) get a sizing step."""
    pipeline = RecordingPipeline()
    store = EmptyStore(unsized=[5, 8])
    runner = EmbeddedRunner(cast(Pipeline, pipeline), cast(Any, store), cast(Any, None), 1)
    runner.start()
    deadline = time.monotonic() + 10
    while len(pipeline.steps()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    runner.stop()
    assert sorted(pipeline.batches) == [[-8], [-5]]
