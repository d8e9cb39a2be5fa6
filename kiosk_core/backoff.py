"""Exponential backoff with jitter, the one implementation every retry loop of the firmware uses.

Two flavours (see the AWS Architecture Blog's "Exponential Backoff And Jitter"):

- ``full_jitter``: uniform(0, ceiling). Spreads a fleet best: after a central outage 15,000 kiosks do
  not reconnect in lock-step. Used for network links (fleet, local bus, live push, upload).
- ``equal_jitter``: ceiling/2 + uniform(0, ceiling/2). Never collapses to an immediate retry. Used for
  local devices (card reader, switcher, cameras), where hammering a port that just vanished helps nobody.

``ceiling = min(cap, base * 2**attempt)``, attempt counted from 0.
"""

from __future__ import annotations

import random

_MAX_EXPONENT = 30  # 2**30 * any sane base is far beyond any cap; keeps the float finite


def ceiling(attempt: int, base: float, cap: float) -> float:
    return min(cap, base * (2 ** min(max(attempt, 0), _MAX_EXPONENT)))


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    return (rng or random).uniform(0, ceiling(attempt, base, cap))


def equal_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    c = ceiling(attempt, base, cap)
    return c / 2 + (rng or random).uniform(0, c / 2)
