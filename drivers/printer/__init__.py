"""The thermal receipt printer (ESC/POS over serial or USB): protocol, transport, driver, simulator."""
