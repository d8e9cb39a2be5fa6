"""GPIO parts on gpiozero: help button, status LED, presence sensor, relays, buzzer.

Modules: ``driver`` (``Gpio`` peripheral), ``status_led`` (the LED's patterns), ``config``.
"""
