"""The HTTP layer: thin routes over `cartd.service`."""
