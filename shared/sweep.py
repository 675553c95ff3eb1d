"""The sweep: finish requests stuck past their deadline, and delete old ones.

Run it every few minutes: a QStash schedule can POST to `composite?sweep=1` (signed like any
QStash call), or run `python -m shared.sweep` anywhere with the functions' settings.

- A request still unfinished SWEEP_AFTER_MINUTES after it was made (its callbacks were lost,
  or QStash gave up on an outage) ends delivered, if Twilio already has its picture, or
  failed as `expired` with the person told. One that a callback is working on is left alone.
- Finished requests older than RETENTION_DAYS are deleted with their pictures: prompts,
  phone numbers and images are not kept longer than that. Opt-outs are kept, so a STOP
  stays honoured.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from . import logs
from .delivery import finish_stuck
from .delivery_decisions import SweepTally, sweep_tally
from .errors import AppError
from .services import Services, get_services

BATCH = 100


@dataclass
class SweepReport:
    expired: int = 0
    delivered: int = 0
    skipped: int = 0  # a callback was working on it
    errors: int = 0
    purged: int = 0
    photos_forgotten: int = 0

    def count(self, tally: SweepTally) -> None:
        if tally is SweepTally.EXPIRED:
            self.expired += 1
        elif tally is SweepTally.DELIVERED:
            self.delivered += 1
        else:
            self.skipped += 1


def sweep(services: Services, now: datetime | None = None) -> SweepReport:
    now = now or datetime.now(UTC)
    settings = services.settings
    report = SweepReport()
    deadline = now - timedelta(minutes=settings.sweep_after_minutes)
    for record in services.store.unfinished_before(deadline, BATCH):
        with logs.log_context(request_id=record.id):
            try:
                outcome = finish_stuck(record.id, services)
            except AppError as exc:
                # Left for the next sweep: it will still be stuck, and still be found.
                logs.error("the sweep could not finish a request", error=exc.message)
                report.errors += 1
                continue
        report.count(sweep_tally(outcome))
    if settings.retention_days is not None:
        report.purged = purge(services, now - timedelta(days=settings.retention_days))
    report.photos_forgotten = forget_old_photos(
        services, now - timedelta(minutes=settings.follow_up_minutes)
    )
    logs.info("sweep done", **asdict(report))
    return report


def purge(services: Services, cutoff: datetime) -> int:
    """Delete finished requests made before `cutoff`, pictures first."""
    old = services.store.finished_before(cutoff, BATCH)
    services.pictures.remove([path for _, paths in old for path in paths])
    return services.store.delete([request_id for request_id, _ in old])


def forget_old_photos(services: Services, cutoff: datetime) -> int:
    """Photos sent without words and never followed up on: gone after FOLLOW_UP_MINUTES."""
    old = services.store.photos_before(cutoff, BATCH)
    services.pictures.remove([path for _, _, path in old])
    for address, sender, _ in old:
        services.store.forget_photo(address, sender)
    return len(old)


def main() -> int:
    report = sweep(get_services())
    print(json.dumps(asdict(report)))
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
