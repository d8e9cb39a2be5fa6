"""The status LED's language: steady = ready, slow blink = busy, double flash = fault, dark = off.

The patterns run on gpiozero's own background threads (``blink``, ``source``), so a stalled event loop
cannot freeze the LED in a misleading state.
"""

from __future__ import annotations

import itertools
from enum import StrEnum
from typing import Any


class LedState(StrEnum):
    OFF = "off"
    READY = "ready"
    BUSY = "busy"
    FAULT = "fault"


#: busy: 0.5 s on, 0.5 s off
BUSY_ON_OFF_S = (0.5, 0.5)
#: fault: two short flashes, then a pause, in steps of FAULT_STEP_S (told apart from busy across a room)
FAULT_PATTERN = (1, 0, 1, 0, 0, 0, 0, 0)
FAULT_STEP_S = 0.15


class StatusLed:
    """Wraps a gpiozero ``LED``; ``state`` is what it shows."""

    def __init__(self, led: Any) -> None:
        self.led = led
        self.state = LedState.OFF

    def show(self, state: LedState) -> None:
        if state == self.state:
            return
        self.led.source = None  # stops a running fault pattern thread
        self.led.off()  # stops a running blink thread
        if state is LedState.READY:
            self.led.on()
        elif state is LedState.BUSY:
            self.led.blink(*BUSY_ON_OFF_S, background=True)
        elif state is LedState.FAULT:
            self.led.source_delay = FAULT_STEP_S
            self.led.source = itertools.cycle(FAULT_PATTERN)
        self.state = state
