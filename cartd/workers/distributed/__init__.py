"""The distributed runner: API processes send each step to a Celery broker, and `cartd
worker` processes run it with the same pipeline the embedded runner calls.

The database stays the only source of truth. A message only says "look at this file
now" (or later); a message lost is found again by a worker's sweep, and a message
delivered twice finds its work done or taken and returns.
"""
