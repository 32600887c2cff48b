"""Runners: what executes pipeline steps. Each is a few lines around `Pipeline`."""
