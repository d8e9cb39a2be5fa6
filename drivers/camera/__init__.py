"""Cameras and the document camera: one frame-source interface with V4L2, picamera2 and synthetic backends."""
