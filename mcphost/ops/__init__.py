"""Running in production: logging and the per-request record, Prometheus metrics, systemd
integration, the garbage collector's set-up, the SDK's wire models built on first use
(a start-up cost), and draining.

It may import core only; what it counts or logs about higher layers reaches it as plain data.
"""
