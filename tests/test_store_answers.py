"""store.py reads the SQL functions' JSON answers once, into the enums of shared/records.py;
an answer our code does not know is a `StoreError`, never a guess."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import StoreError
from shared.records import ClaimOutcome, CreationOutcome, RequestStatus
from shared.store import read_claim, read_creation

ROW = {
    "id": "5f0c1a52-8a55-4a8e-9d2c-1f1e0b7c9a11",
    "status": "composing",
    "recipient": "+15552000001",
    "sender": "+15550001111",
    "prompt": "a fox",
    "media_token": "t",
}


def test_a_claim_comes_with_its_row_and_token() -> None:
    claim = read_claim({"outcome": "claimed", "token": "abc", "request": ROW})
    assert claim.outcome is ClaimOutcome.CLAIMED and claim.token == "abc"
    assert claim.record is not None and claim.record.status is RequestStatus.COMPOSING


@pytest.mark.parametrize(
    "answer",
    [
        {"outcome": "claimed", "request": ROW},  # no token
        {"outcome": "claimed", "token": "abc"},  # no row
        {"outcome": "grabbed", "request": ROW},  # a value we do not know
        {"outcome": "done", "request": {"id": "x"}},  # a row we cannot read
    ],
)
def test_a_claim_answer_we_cannot_trust_is_a_store_error(answer: dict[str, Any]) -> None:
    with pytest.raises(StoreError):
        read_claim(answer)


def test_no_answer_at_all_is_a_missing_request() -> None:
    assert read_claim(None).outcome is ClaimOutcome.MISSING


@pytest.mark.parametrize("outcome", ["taken", "busy", "done"])
def test_a_refused_claim_has_no_token(outcome: str) -> None:
    claim = read_claim({"outcome": outcome, "request": ROW, "token": None})
    assert claim.outcome is ClaimOutcome(outcome) and claim.token is None


def test_a_created_request_comes_with_its_row() -> None:
    creation = read_creation({"outcome": "created", "request": ROW})
    assert creation.outcome is CreationOutcome.CREATED
    assert creation.record is not None and creation.record.id == ROW["id"]


@pytest.mark.parametrize("outcome", ["budget", "opted_out", "not_allowed", "per_number_day"])
def test_a_request_not_recorded_has_no_row(outcome: str) -> None:
    creation = read_creation({"outcome": outcome})
    assert creation.outcome is CreationOutcome(outcome) and creation.record is None


@pytest.mark.parametrize(
    "answer",
    [None, [], {"outcome": "queued"}, {"outcome": "created"}, {"outcome": "duplicate"}],
)
def test_a_creation_answer_we_cannot_trust_is_a_store_error(answer: object) -> None:
    with pytest.raises(StoreError):
        read_creation(answer)
