"""Cart and file statuses, what the compatible header says, and allowed moves."""

from __future__ import annotations

import pytest

from cartd.status import (
    CART_TRANSITIONS,
    FILE_TRANSITIONS,
    CartStatus,
    FileStatus,
    cart_sources,
    file_sources,
)


@pytest.mark.parametrize(
    ("status", "header"),
    [
        (CartStatus.WAITING, "staging"),
        (CartStatus.STAGING, "staging"),
        (CartStatus.BUNDLING, "staging"),
        (CartStatus.READY, "ready"),
        (CartStatus.ERROR, "error"),
    ],
)
def test_pacifica_status_only_knows_staging_ready_error(status: CartStatus, header: str) -> None:
    assert status.pacifica_status == header


def test_statuses_are_stored_as_lower_case_strings() -> None:
    assert [str(s) for s in CartStatus] == [
        "waiting",
        "staging",
        "bundling",
        "ready",
        "error",
        "deleted",
    ]
    assert CartStatus("ready") is CartStatus.READY
    assert [str(s) for s in FileStatus] == ["waiting", "staging", "staged", "error"]


def test_active_statuses() -> None:
    active = {s for s in CartStatus if s.is_active}
    assert active == {CartStatus.WAITING, CartStatus.STAGING, CartStatus.BUNDLING}


def test_bundling_sources() -> None:
    sources = cart_sources(CartStatus.BUNDLING)
    assert CartStatus.WAITING in sources
    assert CartStatus.STAGING in sources
    assert CartStatus.READY not in sources
    assert CartStatus.ERROR not in sources
    assert CartStatus.DELETED not in sources


def test_only_bundling_becomes_ready() -> None:
    assert cart_sources(CartStatus.READY) == frozenset({CartStatus.BUNDLING})


def test_every_live_cart_can_be_deleted() -> None:
    assert cart_sources(CartStatus.DELETED) == frozenset(CartStatus) - {CartStatus.DELETED}


def test_deleted_has_no_way_out() -> None:
    assert CART_TRANSITIONS[CartStatus.DELETED] == frozenset()
    for target in CartStatus:
        assert CartStatus.DELETED not in cart_sources(target)


def test_every_status_has_a_transition_entry() -> None:
    assert set(CART_TRANSITIONS) == set(CartStatus)
    assert set(FILE_TRANSITIONS) == set(FileStatus)


def test_no_status_moves_to_itself() -> None:
    for status, targets in CART_TRANSITIONS.items():
        assert status not in targets
    for file_status, file_targets in FILE_TRANSITIONS.items():
        assert file_status not in file_targets


def test_a_staged_file_only_goes_back_to_be_pulled_again() -> None:
    assert FILE_TRANSITIONS[FileStatus.STAGED] == frozenset({FileStatus.WAITING})
    assert FileStatus.STAGED not in file_sources(FileStatus.ERROR)


def test_a_ready_cart_goes_back_to_staging_or_is_deleted() -> None:
    assert CART_TRANSITIONS[CartStatus.READY] == frozenset({CartStatus.STAGING, CartStatus.DELETED})


def test_failed_file_can_be_retried() -> None:
    assert FileStatus.ERROR in file_sources(FileStatus.WAITING)
    assert FileStatus.ERROR not in file_sources(FileStatus.STAGED)
