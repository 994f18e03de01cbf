"""Plugins in worker processes of their own (``isolation = "process"``): the wire, the
worker process, and the daemon's supervisor of each worker."""
