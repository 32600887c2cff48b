"""JSON views of cartd's state (API.md section 3), as pydantic models so that the
OpenAPI description shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from cartd import __version__
from cartd.records import Cart, CartFile
from cartd.service.changes import reason_of


class FileView(BaseModel):
    id: str = Field(description="the archive's id of the file")
    path: str = Field(description="where the file goes in the tar, under the top folder")
    hashtype: str
    size: int | None = Field(description="bytes, once the archive has said")
    status: str = Field(description="waiting, staging (asked for, or on tape), staged, error")
    error: str | None = Field(description="why the file failed, or the last passing fault")
    reason: str | None = Field(
        description="why it holds its cart up: failed, retrying, on_tape, shared (another"
        " file recalls the same archive file), queued (its turn, or being pulled); null"
        " once staged"
    )
    attempts: int = Field(description="failed tries since the last success")
    polls: int = Field(description="times the archive was asked while the file sat on tape")


class CartView(BaseModel):
    uid: str
    status: str = Field(description="as X-Pacifica-Status: staging, ready or error")
    phase: str = Field(description="as X-Pacifica-Phase: waiting, staging, bundling, ready, error")
    error: str | None
    created_at: datetime
    updated_at: datetime
    bundle: bool
    files: list[FileView]


def cart_view(cart: Cart, files: list[CartFile]) -> CartView:
    return CartView(
        uid=cart.uid,
        status=cart.status.pacifica_status,
        phase=cart.status.value,
        error=cart.error,
        created_at=cart.created_at,
        updated_at=cart.updated_at,
        bundle=cart.bundle,
        files=[
            FileView(
                id=file.archive_id,
                path=file.path,
                hashtype=file.hashtype,
                size=file.size,
                status=file.status.value,
                error=file.error,
                reason=None if (reason := reason_of(file)) is None else reason.value,
                attempts=file.attempts,
                polls=file.polls,
            )
            for file in files
        ],
    )


class ErrorBody(BaseModel):
    """Every error's JSON body. `traceback` and `version` are the keys Pacifica Cartd's
    CherryPy error pages carried besides `status` and `message`, kept so that a client
    reading them finds them."""

    status: int
    message: str = Field(description="what is wrong, in words; never a traceback")
    traceback: str = Field(
        description="always empty: the original's error pages had this key; cartd never"
        " sends a traceback"
    )
    version: str = Field(
        description="the version of the server that answered (cartd's; the original put"
        " CherryPy's here)"
    )


def error_body(status: int, message: str) -> dict[str, object]:
    """The JSON of an error answer (an `ErrorBody`)."""
    return {"status": status, "message": message, "traceback": "", "version": __version__}


class Message(BaseModel):
    message: str


def error(description: str) -> dict[str, object]:
    """An OpenAPI response entry whose body is an `ErrorBody`."""
    return {"description": description, "model": ErrorBody}
