"""Makes the process ignore SIGTERM as it is imported."""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
