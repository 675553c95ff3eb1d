"""Holding a request while acting on it: the claim `claim_request` hands out (see the
migrations), and the writes only its holder may make.

    held = take_claim(store, request_id, owner, lease_s)
    if isinstance(held, HeldClaim):
        with held:            # a failure inside gives the claim back, then re-raises
            held.mark_delivered(sid, timings)

Every write is conditional on the claim token, so a run that lost its claim (it outlived
the lease) cannot overwrite the work of the run that holds it now: the writes say False.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from . import logs
from .errors import AppError, StoreError
from .records import ClaimOutcome, FailureReason, RequestRecord
from .services import RequestStorage


class HeldClaim:
    def __init__(self, store: RequestStorage, record: RequestRecord, token: str) -> None:
        self._store = store
        self.record = record
        self.token = token

    def __enter__(self) -> HeldClaim:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """On a failure, give the claim back, so QStash's retry of this callback can pick the
        request up at once rather than after the lease."""
        if error is None:
            return
        reason = f"{error.message}: {error.detail}" if isinstance(error, AppError) else repr(error)
        try:
            self._store.release(self.record.id, self.token, reason[:500])
        except StoreError:
            logs.warning("could not release the claim; it expires by itself")

    def point_at(self, image_path: str) -> bool:
        return self._store.update_claimed(self.record.id, self.token, {"image_path": image_path})

    def mark_sending(self, *, image_path: str | None, extra: dict[str, Any]) -> bool:
        return self._store.mark_sending(
            self.record.id, self.token, image_path=image_path, extra=extra
        )

    def mark_delivered(self, message_sid: str, timings: dict[str, int]) -> bool:
        return self._store.mark_delivered(self.record.id, self.token, message_sid, timings)

    def mark_failed(
        self, reason: FailureReason, detail: str, *, notified: bool, message_sid: str | None
    ) -> bool:
        return self._store.mark_failed(
            self.record.id, self.token, reason, detail, notified=notified, message_sid=message_sid
        )


def take_claim(
    store: RequestStorage, request_id: str, owner: str, lease_s: int
) -> HeldClaim | ClaimOutcome:
    """The claim on `request_id` for `owner`, or why there is none."""
    claim = store.claim(request_id, owner, lease_s)
    if claim.outcome is not ClaimOutcome.CLAIMED or claim.record is None or claim.token is None:
        return claim.outcome if claim.outcome is not ClaimOutcome.CLAIMED else ClaimOutcome.MISSING
    return HeldClaim(store, claim.record, claim.token)
