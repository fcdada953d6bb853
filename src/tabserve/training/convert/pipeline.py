"""Pipeline: each step's converter in turn ('passthrough' and None steps are skipped)."""

from __future__ import annotations

from typing import Any

from sklearn.pipeline import Pipeline

from tabserve.training.convert.graph import Graph, Table, Tensor
from tabserve.training.convert.registry import convert, register


@register(Pipeline, takes_table=True)
def convert_pipeline(graph: Graph, pipeline: Pipeline, x: Tensor | Table) -> Any:
    out: Any = x
    for _, step in pipeline.steps:
        if step is None or step == "passthrough":
            continue
        out = convert(graph, step, out)
    return out
