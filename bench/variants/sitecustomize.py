"""Switches how a cartd process writes a pulled file, for `bench/run.py --variant`; cartd
itself never loads it.

`bench/run.py` starts cartd with this folder on `PYTHONPATH` and `CARTD_BENCH_WRITE`
naming a variant: Python imports this module at start-up, which sets `cartd.durable`'s
thresholds (or wraps its commit) before cartd runs, so that the variants can be timed
back to back on one machine against the same code:

- `direct`: files of 8 MiB or more written with `O_DIRECT` on a helper thread (cartd
  until 2026-11-30).
- `cached`: every file written through the page cache, the kernel asked to start
  writing back every 8 MiB, fsync before the move into place: the pages stay cached,
  so the first download reads memory (cartd since 2026-11-30, for files under an
  eighth of the machine's memory).
- `dontneed`: as `cached`, then the pages of a file of 8 MiB or more dropped after the
  fsync (`posix_fadvise(POSIX_FADV_DONTNEED)`): the first download reads the disk.
- `nosync`: as `cached` without a file's own fsync (a group of small files is still
  synced together before it is recorded). Not durable (a crash may lose a file recorded
  verified): only to show what the fsync costs.

A fifth, `threaded` (as `cached`, the writes made by a helper thread as `direct`
makes them), was measured at commit ba01b1f of this branch and lost: the variant
ran in that commit's cartd only.
"""

from __future__ import annotations

import os


def _install(variant: str) -> None:
    from cartd import durable

    big = 8 * durable.MiB
    durable.DIRECT_FROM = big if variant == "direct" else 1 << 62
    if variant in {"direct", "cached"}:
        return
    if variant not in {"dontneed", "nosync"}:
        raise SystemExit(f"CARTD_BENCH_WRITE: no variant {variant!r}")

    def commit(self: durable.DurableFile, *, sync: bool = True) -> None:
        writer = self._writer
        self.finish()
        if variant == "dontneed" and sync:
            os.fsync(writer.descriptor)
            if getattr(writer, "written", 0) >= big:
                os.posix_fadvise(writer.descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        self._close()

    durable.DurableFile.commit = commit  # type: ignore[method-assign]


if os.environ.get("CARTD_BENCH_WRITE"):
    _install(os.environ["CARTD_BENCH_WRITE"])
