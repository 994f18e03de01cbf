"""Sleeps at import, longer than the test's load timeout, every time it is imported."""

import time

time.sleep(3)
