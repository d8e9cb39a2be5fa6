"""Reusable widgets of the kiosk screens (one per module)."""
