"""Reading a daemon's Prometheus metrics in tests: every sample of its ``/metrics``, keyed by
name and labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from mcphost.testing import RunningDaemon
from tests.authkit import bearer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""Each sample's value by :func:`key`."""


def scrape(daemon: RunningDaemon, token: str | None = None) -> Samples:
    """Every sample of the admin listener's ``/metrics``, parsed by prometheus_client's own parser."""
    status, body = daemon.get("/metrics", bearer(token) if token else None, admin=True)
    assert status == 200, body
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    """The :data:`Samples` key of the sample ``name`` with ``labels``."""
    return name, frozenset(labels.items())
