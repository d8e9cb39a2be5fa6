"""CPython stand-ins for the MicroPython modules the arbiter's firmware uses, wired to the simulators.

``install(board, pins={gpio: line}, uarts={id: path})`` puts ``machine``, ``network`` and ``umqtt``
(``umqtt.simple``) into ``sys.modules`` and MicroPython's ``time.ticks_ms``/``ticks_diff``/
``ticks_add``/``sleep_ms`` onto CPython's ``time``, so ``drivers/failover_controller`` runs unchanged:

- ``machine``: ``Pin`` over a ``WireBoard`` (drivers/gpio/wire_pins.py), ``UART`` over a pty or serial
  device path (termios, non-blocking), ``WDT`` that really resets: the process exits (code 3) when it
  is not fed within its timeout;
- ``network``: ``WIZNET5K`` that is always up (the host's network is the arbiter's);
- ``umqtt.simple``: ``MQTTClient`` with micropython-lib's interface over ``mpsocket`` (sockets with
  MicroPython's ``read``/``write``). ``sim.micropython.umqtt_real.load(path)`` runs micropython-lib's own
  ``umqtt/simple.py`` instead, when a checkout of it is at hand.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

TICKS_PERIOD = 1 << 30  # MicroPython's ticks wrap here (ticks_ms & 0x3FFFFFFF)


def ticks_ms() -> int:
    return (time.monotonic_ns() // 1_000_000) & (TICKS_PERIOD - 1)


def ticks_add(t: int, delta: int) -> int:
    return (t + delta) & (TICKS_PERIOD - 1)


def ticks_diff(a: int, b: int) -> int:
    d = (a - b) & (TICKS_PERIOD - 1)
    return d - TICKS_PERIOD if d >= TICKS_PERIOD // 2 else d


def sleep_ms(ms: int) -> None:
    time.sleep(ms / 1000)


def install(board: Any, pins: Mapping[int, str], uarts: Mapping[int, str], client_class: Any = None) -> None:
    """Make the stand-ins importable under MicroPython's names (``client_class``: the ``MQTTClient``
    ``umqtt.simple`` exports; default the stand-in)."""
    import types

    from sim.micropython import machine, network
    from sim.micropython.umqtt import simple

    machine.configure(board, pins, uarts)
    for name, fn in (("ticks_ms", ticks_ms), ("ticks_diff", ticks_diff), ("ticks_add", ticks_add)):
        setattr(time, name, fn)
    time.sleep_ms = sleep_ms  # type: ignore[attr-defined]
    sys.modules["machine"] = machine
    sys.modules["network"] = network
    umqtt = types.ModuleType("umqtt")
    mod = simple
    if client_class is not None:
        mod = types.ModuleType("umqtt.simple")
        mod.MQTTClient = client_class  # type: ignore[attr-defined]
        mod.MQTTException = getattr(sys.modules.get(client_class.__module__), "MQTTException", Exception)  # type: ignore[attr-defined]
    umqtt.simple = mod  # type: ignore[attr-defined]
    sys.modules["umqtt"] = umqtt
    sys.modules["umqtt.simple"] = mod
