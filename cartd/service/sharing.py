"""One recall for many carts: a file that another cart already holds verified is linked,
not pulled again.

Two rows name the same archive file when they have the same (archive id, hash type, hash
sum) (`cartd.db.copies`). Before a file's step asks the archive anything, it looks at the
other rows naming its file:

- a verified copy in a live cart (its bytes on the volume with the size and modification
  time recorded when verified, the check a download makes) is **hard-linked** into the
  file's place: a link made under a partial name and moved into place, as a pull's
  partial is, and recorded verified with the pulled files of its batch (one folder sync,
  one commit). No archive request, no new bytes on the volume;
- else, when another row is the lead (the open row of an active cart with the lowest
  id, one that asked the archive to stage the file first), the file **waits** for it:
  its step ends with a short delay, growing as a tape poll's does but capped at
  `WAIT_MAX`, and the step that records the lead verified makes it due at once
  (`wake`), so it links a moment later;
- else the file is the lead and its step recalls the file from the archive as before.

The bytes of a hard link stay until the last cart naming them lets go, so deleting or
evicting a cart (which removes its own folder) never takes bytes another cart still
needs; the space ledger counts each archive file once (`cartd.db.space`).

The lead is a fact of the shared database, so two carts on two workers recall a file
once. One race is left, and is rare: a lower row made open again (`fixit` on a failed
cart, or a ready cart whose copy was damaged) while a higher row is pulling the same
file from the archive's disk recalls it a second time (a row that asked for the file
from tape keeps its lead); each copy is then verified and kept, and the volume holds
those bytes twice while the ledger counts them once. A filesystem without hard links
makes every file its own lead's bytes: a failed link is logged and the file is pulled.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from cartd.db.copies import NONE, Copies, CopyStore, Donor
from cartd.segments import unchanged
from cartd.storage import Volume

log = logging.getLogger(__name__)

#: Longest wait of a file for the lead's copy, in seconds. The lead's step wakes it when
#: the copy is verified; this bounds the wait when the lead's cart fails or is deleted.
WAIT_MAX = 30.0


@dataclass(frozen=True)
class Linked:
    """A verified copy linked into a file's place, not yet recorded."""

    size: int
    mtime: float
    folder: Path
    crc32: int | None  # the copy's, when recorded


class Sharing:
    def __init__(self, copies: CopyStore, volume: Volume) -> None:
        self.copies = copies
        self.volume = volume

    def lookup(self, file_ids: Collection[int]) -> dict[int, Copies]:
        """The copies of the files of a batch (those without any left out)."""
        return self.copies.lookup(file_ids)

    def copies_of(self, file_id: int) -> Copies:
        return self.copies.lookup([file_id]).get(file_id, NONE)

    def link(self, cart_id: int, file_id: int, donors: Sequence[Donor]) -> Linked | None:
        """Link the first sound copy among `donors` into the file's place; None when none
        is (deleted, repaired or changed meanwhile, or the filesystem refuses links)."""
        final = self.volume.file_path(cart_id, file_id)
        for donor in donors:
            source = self.volume.file_path(donor.cart_id, donor.file_id)
            partial = self.volume.partial_path(cart_id, file_id)
            try:
                os.link(source, partial)
            except FileNotFoundError:
                continue  # its cart was deleted, or its copy removed to be pulled again
            except OSError as exc:
                log.warning("cannot link a copy of file %d: %s", donor.file_id, exc.strerror)
                continue
            try:
                # The link's own stat: the bytes it holds, whatever happens to the source.
                if not unchanged(partial.stat(), donor.size, donor.mtime):
                    continue
                self.volume.commit(partial, final, sync=False)
            finally:
                partial.unlink(missing_ok=True)
            return Linked(donor.size, donor.mtime, final.parent, donor.crc32)
        return None

    def wake(self, verified: Sequence[int]) -> list[int]:
        """Make due now the files waiting for a copy of those just recorded verified."""
        return self.copies.wake(verified)
