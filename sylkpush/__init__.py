"""Sylk Pushserver: turns wake-up requests into Apple and Firebase pushes."""

__version__ = "2.0.0"
