"""Use cases: what cartd does, independent of HTTP and of how steps are run."""
