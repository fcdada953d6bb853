"""The model report: one self-contained HTML page (PNG charts embedded as data URIs) from a bundle.

Sections: the model (name, version, task, estimator, lineage), holdout metrics, ONNX parity, feature
importance (impurity and permutation, from the manifest), feature statistics (training quantiles) and,
when rows with the target are given, predicted vs actual and the mean |SHAP| per feature on those rows.
matplotlib (the ``[report]`` extra) draws the charts with its non-interactive Agg backend.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from tabserve.core.manifest import Manifest

_CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.ok{color:#1a7f37}.bad{color:#c62828}
img{max-width:100%}.note{color:#666;font-size:.9em}"""


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Rows scored by the bundle: what the optional ``--data`` file adds to the report."""

    name: str
    actual: np.ndarray
    predicted: np.ndarray
    mean_abs_shap: dict[str, float] | None  # per feature, over the rows and outputs
    warning: str | None = None  # e.g. the rows are the training data: the charts are optimistic


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return f'<img alt="chart" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def importance_chart(manifest: Manifest) -> str | None:
    fig = importance_figure(manifest)
    return None if fig is None else _png(fig)


def importance_figure(manifest: Manifest) -> Any:
    imp = manifest.importance
    if imp is None or (imp.impurity is None and imp.permutation is None):
        return None
    plt = _pyplot()
    names = manifest.feature_names
    panels = [p for p in ("permutation", "impurity") if getattr(imp, p) is not None]
    # constrained: each panel's feature names get their own room (side by side, long names ran into the
    # panel on their left)
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 0.3 * len(names) + 1.2), squeeze=False,
                             layout="constrained")
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "permutation":
            means = np.array([imp.permutation[n].mean for n in names])  # type: ignore[index]
            stds = np.array([imp.permutation[n].std for n in names])  # type: ignore[index]
            title = f"permutation ({imp.scoring} drop, {imp.checked_on}, {imp.repeats} repeats)"
        else:
            means, stds = np.array([imp.impurity[n] for n in names]), None  # type: ignore[index]
            title = "impurity (mean decrease, sums to 1)"
        order = np.argsort(means)
        ax.barh([names[i] for i in order], means[order], xerr=None if stds is None else stds[order],
                color="#4c72b0")
        ax.set_title(title, fontsize=10)
        ax.axvline(0, color="#888", linewidth=0.8)
    return fig


def parity_chart(manifest: Manifest) -> str | None:
    p = manifest.parity
    if p is None:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 1.8))
    tiny = 1e-18  # a zero difference still gets a bar on the log axis
    labels = ["max abs diff", "atol", "max rel diff", "rtol"]
    values = [max(p.max_abs_diff, tiny), max(p.atol, tiny), max(p.max_rel_diff, tiny), max(p.rtol, tiny)]
    ax.barh(labels, values, color=["#4c72b0", "#bbbbbb", "#4c72b0", "#bbbbbb"])
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_title(f"model.onnx vs the source model, {p.rows_checked} rows (grey: tolerance)", fontsize=10)
    return _png(fig)


def statistics_chart(manifest: Manifest) -> str | None:
    numeric = [f for f in manifest.features if f.stats is not None]
    if not numeric:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(numeric) + 1.2))
    boxes = []
    for f in numeric:
        s = f.stats
        assert s is not None
        q = dict(zip(s.quantiles.probs, s.quantiles.values, strict=False))
        scale = s.std if s.std > 0 else 1.0  # standardised so that every feature fits one axis
        at = {k: (v - s.mean) / scale for k, v in (("whislo", s.min), ("whishi", s.max), ("med", q.get(0.5, s.mean)),
                                                    ("q1", q.get(0.25, s.mean)), ("q3", q.get(0.75, s.mean)))}
        boxes.append({"label": f.name, **at, "fliers": []})
    ax.bxp(boxes, orientation="horizontal", showfliers=False)
    ax.set_xlabel("(value - mean) / std on the training rows; whiskers at min and max")
    return _png(fig)


def evaluation_charts(manifest: Manifest, ev: Evaluation) -> str:
    plt = _pyplot()
    parts = [_png(evaluation_figure(manifest, ev))]
    if ev.mean_abs_shap:
        names = list(ev.mean_abs_shap)
        values = np.array([ev.mean_abs_shap[n] for n in names])
        order = np.argsort(values)
        fig, ax = plt.subplots(figsize=(5, 0.35 * len(names) + 1.2))
        ax.barh([names[i] for i in order], values[order], color="#dd8452")
        ax.set_title("mean |SHAP value| on these rows", fontsize=10)
        parts.append(_png(fig))
    return "".join(parts)


def evaluation_figure(manifest: Manifest, ev: Evaluation) -> Any:
    """Predicted against actual: a scatter (regression) or a confusion matrix (classification)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
    if manifest.task == "regression":
        ax.scatter(ev.actual, ev.predicted, s=8, alpha=0.5)
        low, high = float(np.nanmin(ev.actual)), float(np.nanmax(ev.actual))
        ax.plot([low, high], [low, high], color="#c62828", linewidth=1)
        ax.set_xlabel("actual"), ax.set_ylabel("predicted")
    else:
        labels = [str(c) for c in manifest.classes or []]
        index = {c: i for i, c in enumerate(labels)}
        counts = np.zeros((len(labels), len(labels)), dtype=int)
        for a, p in zip(ev.actual, ev.predicted, strict=True):
            if str(a) in index and str(p) in index:
                counts[index[str(a)], index[str(p)]] += 1
        # Coloured by the share of each actual class (a big class no longer makes every other cell pale), the
        # count and that share written in white on dark cells and in black on light ones.
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(counts):
            ax.text(j, i, f"{v}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=9,
                    color="white" if _luminance(image.cmap(share[i, j])) < WHITE_TEXT_BELOW else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted"), ax.set_ylabel("actual")
        fig.colorbar(image, ax=ax, label="share of the actual class", format=lambda x, _: f"{x:.0%}")
    ax.set_title(f"{ev.name}: {len(ev.actual)} rows", fontsize=10)
    return fig


WHITE_TEXT_BELOW = 0.179  # the luminance where white and black text have the same contrast ratio (WCAG)


def _luminance(rgba: tuple[float, ...]) -> float:
    """Relative luminance (WCAG) of an RGB colour in 0..1."""
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return html.escape(str(value))


def render(manifest: Manifest, evaluation: Evaluation | None = None) -> str:
    m = manifest
    title = f"{m.name} {m.version}"
    model = m.training.get("model") or (m.explain.estimator if m.explain else "")
    out = [(f"<!doctype html><html><head><meta charset='utf-8'><title>tabserve report: {html.escape(title)}"
            f"</title><style>{_CSS}</style></head><body><h1>Model report: {html.escape(title)}</h1>"),
           _table(["", ""], [["task", m.task], ["model", model], ["features", len(m.features)],
                             ["classes", ", ".join(map(str, m.classes or [])) or "-"],
                             ["created", m.lineage.created_at], ["source", m.lineage.source],
                             ["explanations", (f"{m.explain.kind} ({m.explain.space})" if m.explain else
                                               m.training.get("explain_unavailable", "not available"))]])]
    out.append("<h2>Holdout metrics</h2>")
    out.append(_table(["metric", "value"], [[k, v] for k, v in m.metrics.items()]) if m.metrics else
               "<p class='note'>No metrics recorded (an import without a target).</p>")
    out.append("<h2>ONNX parity</h2>")
    if m.parity is not None:
        p = m.parity
        verdict = "<span class='ok'>passed</span>" if p.passed else "<span class='bad'>failed</span>"
        out.append(f"<p>model.onnx against the source model on {p.rows_checked} rows ({html.escape(p.checked_on)})"
                   f": {verdict}</p>")
        out.append(_table(["max abs diff", "max rel diff", "rtol", "atol", "label mismatches"],
                          [[p.max_abs_diff, p.max_rel_diff, p.rtol, p.atol, p.label_mismatches]]))
        out.append(parity_chart(m) or "")
    out.append("<h2>Feature importance</h2>")
    chart = importance_chart(m)
    out.append(chart or "<p class='note'>No importance recorded in this bundle.</p>")
    if m.importance is not None and m.importance.notes:
        out.append("".join(f"<p class='note'>{html.escape(n)}</p>" for n in m.importance.notes))
    out.append("<h2>Feature statistics (training rows)</h2>")
    rows = []
    for f in m.features:
        s = f.stats
        rows.append([f.name, f.kind, f.dtype] + ([s.min, s.mean, s.std, s.max, s.missing] if s else
                                                  ["-", "-", "-", "-", "-"]) +
                    [len(f.categories) if f.categories else "-"])
    out.append(_table(["feature", "kind", "dtype", "min", "mean", "std", "max", "missing", "categories"], rows))
    out.append(statistics_chart(m) or "")
    if evaluation is not None:
        out.append(f"<h2>On {html.escape(evaluation.name)}</h2>")
        if evaluation.warning:
            out.append(f"<p class='bad'>{html.escape(evaluation.warning)}</p>")
        out.append(evaluation_charts(m, evaluation))
    out.append("</body></html>")
    return "\n".join(out)
