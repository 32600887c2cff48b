"""From a cart's stored files to the tar members it is served as."""

from __future__ import annotations

from cartd.bundle import Member, layout
from cartd.folders import Entry
from cartd.records import Cart, CartFile
from cartd.storage import Volume


def cart_members(cart: Cart, files: list[CartFile], volume: Volume, top: str) -> list[Member]:
    entries = [
        Entry(
            path=file.path,
            size=file.size or 0,
            mtime=file.mtime or 0.0,
            source=volume.file_path(cart.id, file.id),
        )
        for file in files
    ]
    return layout(top, entries, folder_mtime=cart.created_at.timestamp())
