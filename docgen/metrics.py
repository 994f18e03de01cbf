"""The metrics a daemon exposes, read from the Prometheus registry it builds."""

from __future__ import annotations

from dataclasses import dataclass

from docgen.sources import metrics_registry


@dataclass(frozen=True)
class MetricInfo:
    """One metric family as ``/metrics`` shows it."""

    name: str
    """The name of its series (a counter's with ``_total``)."""
    type: str
    labels: tuple[str, ...]
    help: str


def metrics() -> list[MetricInfo]:
    """Every family of the registry, sorted by name."""
    found = []
    for family in metrics_registry().collect():
        # A family made with labels but no series yet (a plugin's, before any plugin
        # loaded) names them only in its constructor's argument, kept as _labelnames.
        labels = dict.fromkeys(getattr(family, "_labelnames", ()))
        for sample in family.samples:
            labels.update(dict.fromkeys(k for k in sample.labels if k not in ("le", "quantile")))
        name = f"{family.name}_total" if family.type == "counter" else family.name
        found.append(MetricInfo(name, family.type, tuple(labels), " ".join(family.documentation.split())))
    return sorted(found, key=lambda m: m.name)
