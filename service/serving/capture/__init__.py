"""Captured traffic: sampled requests kept as a training manifest (off by default)."""

from service.serving.capture.writer import CaptureWriter

__all__ = ["CaptureWriter"]
