"""The service's notion of "now": the dataset's snapshot time, the wall clock, or a fixed instant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo

AS_OF = "as_of"
REAL = "real"


@dataclass(frozen=True, slots=True)
class Clock:
    """Answers `now()` in the shop's time zone; every window check in the service reads it."""

    tz: tzinfo
    fixed: datetime | None = None
    """The frozen instant; None means the wall clock."""

    @classmethod
    def from_spec(cls, spec: str, *, as_of: datetime, tz: tzinfo) -> Clock:
        """`as_of` (the dataset snapshot), `real` (wall clock) or an ISO 8601 time with an offset."""
        if spec == AS_OF:
            return cls(tz=tz, fixed=as_of.astimezone(tz))
        if spec == REAL:
            return cls(tz=tz)
        try:
            when = datetime.fromisoformat(spec)
        except ValueError:
            raise ValueError(
                f"--now must be 'as_of', 'real' or an ISO time like 2026-11-20T15:00:00+08:00, got {spec!r}"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=tz)
        return cls(tz=tz, fixed=when.astimezone(tz))

    def now(self) -> datetime:
        if self.fixed is not None:
            return self.fixed
        return datetime.now(self.tz).replace(microsecond=0)
