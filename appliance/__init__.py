"""kiosk-appliance: the daemon that owns config, drivers, sessions, health and the fleet link."""

__version__ = "0.1.0"
