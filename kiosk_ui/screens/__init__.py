"""The kiosk's screens, one per module. ``kiosk_ui.router`` says which screen shows which state."""
