"""Conch's tests, mirroring the source tree."""
