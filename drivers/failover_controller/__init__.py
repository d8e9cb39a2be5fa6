"""The failover arbiter's firmware (MicroPython 1.29, RP2040 + W5500; docs/failover.md).

Modules: ``lease`` (the decisions, a pure state machine), ``board`` (the thin hardware layer:
pins, the switcher's UART, the watchdog, MQTT reporting), ``main`` (the supervision loop),
``config.json`` (pins, timers, topic, broker). Every file here is valid MicroPython; on the board
they are copied flat beside ``sis_wire.py`` (drivers/switcher/sis_wire.py).
"""
