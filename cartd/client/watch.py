"""A thread that follows the cart while the main thread waits for it or downloads it.

It asks `HEAD /<uid>` with `Prefer: wait=N` (a server that honours it answers when the
cart changes; one that does not answers at once, and the thread pauses before asking
again: a quarter second at first, half as long again each time nothing changed, at most
two). While the cart is being made it looks at `GET /<uid>/files` at most every
`FILES_EVERY` seconds for the file holding the cart up (less often for a cart whose view
is long to send: `FILES_SHARE`). It stops once the cart is ready,
failed or gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cartd.client.errors import TransferFailed
from cartd.client.progress import Display
from cartd.client.session import STAGING, CartSession, CartState, FileState

#: Seconds a server that honours `Prefer: wait=N` on HEAD may hold the question.
HEAD_WAIT = 5
#: Least seconds between two looks at the files of a cart.
FILES_EVERY = 3.0
#: At most this share of the time goes to looking at the files: a cart of 100,000 files,
#: whose view takes a second, is looked at every 20 seconds.
FILES_SHARE = 0.05


@dataclass(frozen=True)
class PollPolicy:
    """Pauses between two questions about a cart that did not change."""

    initial: float = 0.25
    factor: float = 1.5
    cap: float = 2.0

    def delay(self, unchanged: int) -> float:
        return float(min(self.cap, self.initial * self.factor**unchanged))


def holder_text(files: list[FileState]) -> str | None:
    """The file that holds a cart up and why, in words; None when every file is staged.
    A failed file first, then one on tape, one being retried, one being pulled, and one
    not asked for yet."""
    waiting = [file for file in files if file.status != "staged"]
    if not waiting:
        return None

    def rank(file: FileState) -> int:
        if file.status == "error":
            return 0
        if file.polls:
            return 1
        if file.attempts:
            return 2
        return 3 if file.status == STAGING else 4

    file = min(waiting, key=rank)
    if file.status == "error":
        why = f"failed: {file.error or 'no reason given'}"
    elif file.polls:
        why = f"on tape, asked {file.polls} times"
    elif file.attempts:
        why = f"{file.attempts} failed tries, retrying ({file.error or 'no reason given'})"
    elif file.status == STAGING:
        why = "being staged"
    else:
        why = "waiting its turn"
    others = len(waiting) - 1
    more = f" (and {others} more files)" if others else ""
    return f"{file.path}: {why}{more}"


class Watcher:
    """Follows one cart on a thread of its own; `next_state` waits for its next answer."""

    def __init__(
        self,
        session: Callable[[], CartSession],
        uid: str,
        display: Display,
        policy: PollPolicy = PollPolicy(),
    ) -> None:
        self._session = session
        self._uid = uid
        self._display = display
        self._policy = policy
        self._stopped = threading.Event()
        self._showing = threading.Lock()  # held while showing, so nothing shows after stop
        self._changed = threading.Condition()
        self._version = 0
        self._latest: CartState | None = None
        self._finished = False
        self._thread = threading.Thread(target=self._run, name=f"watch-{uid}", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop at once: nothing more is shown once this returns, and a question under way
        is answered into nothing."""
        with self._showing:
            self._stopped.set()
        with self._changed:
            self._changed.notify_all()

    @property
    def latest(self) -> CartState | None:
        with self._changed:
            return self._latest

    def next_state(self, seen: int, timeout: float) -> tuple[int, CartState | None]:
        """The first answer after the `seen`-th (or the latest, once the thread ended or
        `timeout` passed), with its number."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._version > seen or self._finished or self._stopped.is_set(),
                timeout,
            )
            return self._version, self._latest

    def _show(self, state: CartState | None = None, holder: str | None = None) -> bool:
        """Show a state, or the holder of the cart; False once stopped."""
        with self._showing:
            if self._stopped.is_set():
                return False
            if state is not None:
                self._display.staging(state)
            else:
                self._display.holder(holder)
            return True

    def _tell(self, state: CartState) -> None:
        with self._changed:
            self._latest = state
            self._version += 1
            self._changed.notify_all()

    def _run(self) -> None:
        try:
            with self._session() as session:
                self._follow(session)
        finally:
            with self._changed:
                self._finished = True
                self._changed.notify_all()

    def _follow(self, session: CartSession) -> None:
        unchanged, previous = 0, None
        files_due = 0.0
        while not self._stopped.is_set():
            asked = time.monotonic()
            try:
                state = session.state(self._uid, wait=HEAD_WAIT)
            except TransferFailed:
                state = None  # the download says what went wrong, if anything did
            if state is not None:
                if not self._show(state):
                    return
                self._tell(state)
                if state.settled:
                    self._show(holder=None)
                    return
                if state.phase is not None and time.monotonic() >= files_due:
                    looked = time.monotonic()
                    files = session.files(self._uid)
                    took = time.monotonic() - looked
                    files_due = looked + max(FILES_EVERY, took / FILES_SHARE)
                    if files is not None and not self._show(holder=holder_text(files)):
                        return
            progress = (
                None if state is None else (state.phase, state.files_staged, state.bytes_staged)
            )
            unchanged = unchanged + 1 if progress == previous else 0
            previous = progress
            pause = self._policy.delay(unchanged) - (time.monotonic() - asked)
            self._stopped.wait(max(0.0, pause))
