"""What every part reports about itself: ``ok``, ``degraded`` or ``missing``, with a reason a technician
can act on and the time it last changed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class HealthStatus(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    MISSING = "missing"


@dataclass(frozen=True)
class Health:
    status: HealthStatus
    reason: str = ""
    since: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {"status": str(self.status), "reason": self.reason, "since": round(self.since, 3)}


OK = Health(HealthStatus.OK)
