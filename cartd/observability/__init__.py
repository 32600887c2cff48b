"""Metrics and structured logs, kept apart from the service so nothing runs at import time."""
