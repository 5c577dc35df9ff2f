"""callstream: call-center video calls to per-segment emotion timelines in PostgreSQL."""

__version__ = "0.1.0"
