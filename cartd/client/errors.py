"""The errors of `cartd get`; each knows the exit code the command ends with.

GetError                base
├── OrderError          2: the order cannot be read, or the server refused it
├── CartFailed          1: the cart ended in error (the message is the cart's), or is gone
├── TransferFailed      1: the server cannot be reached, or the download kept breaking off
├── VerificationFailed  3: the tar is not what the order says (the message names the member)
└── ExtractFailed       1: the verified tar could not be unpacked where asked
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_MISMATCH = 3
#: As a shell reports a command ended by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

#: The exit codes as `cartd get --help` tells them.
EXIT_CODES = """\
exit codes:
  0    the tar is saved and every member matched the order's checksum
  1    the cart failed (its error is printed), or the server could not be reached or
       the download kept breaking off (FILE.part is kept: run the same command again)
  2    a usage error, or an order that cannot be read or that the server refused
  3    a member of the tar did not match the order (it is named; the download is kept
       as FILE.bad, and no FILE is made)
  130  interrupted (Ctrl-C); FILE.part is kept: run the same command again to resume
"""


class GetError(Exception):
    """Base of what `cartd get` reports and exits on."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OrderError(GetError):
    """The order cannot be read or is not valid; nothing was downloaded."""

    exit_code = EXIT_USAGE


class CartFailed(GetError):
    """The cart ended in error, or the server no longer has it."""


class TransferFailed(GetError):
    """The server could not be reached or the download kept breaking off; once a cart
    was ordered, FILE.part is kept (`resumable`), and the same command run again takes
    it up."""

    resumable = False


class VerificationFailed(GetError):
    """A member of the tar does not match the order, or the tar is damaged."""

    exit_code = EXIT_MISMATCH


class ExtractFailed(GetError):
    """The tar was verified and kept, but could not be unpacked where asked."""
