"""Reading a ``/metrics`` answer in tests: samples by name and labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(value for n, have, value in samples(text)
               if n == name and all(have.get(k) == v for k, v in labels.items()))


def label_values(text: str, name: str, label: str) -> set[str]:
    return {have[label] for n, have, _ in samples(text) if n == name and label in have}


def names(text: str) -> set[str]:
    """Every sample name, and every family name (a family with no sample yet still has its HELP line)."""
    out = {n for n, _, _ in samples(text)}
    for family in text_string_to_metric_families(text):
        out.add(family.name)
        if family.type == "counter":
            out.add(family.name + "_total")
    return out
