"""Draw docs/benchmarks.png from a harness run: python benchmarks/peers/chart.py RUN_DIR [OUT.png]

RUN_DIR is run.py's --out folder (its results.jsonl). Needs matplotlib (not a tabserve dependency)."""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    run = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parents[2] / "docs" / "benchmarks.png"
    cells: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for line in (run / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        if not r.get("ok") or "c1" not in r:  # failed rows and the in-process timing lines
            continue
        name = r.get("row") or r["server"]  # run.py says "row"; the shared harness said "server"
        cells[name]["c1_rps"].append(r["c1"]["ok_rps"])
        cells[name]["c32_rps"].append(r["c32"]["ok_rps"])
        cells[name]["batch_rows_per_s"].append(r["batch"]["rows_per_s"])
    names = sorted(cells, key=lambda n: -statistics.median(cells[n].get("c32_rps", [0])))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (key, title) in zip(axes, (("c1_rps", "1 row, 1 connection (req/s)"),
                                       ("c32_rps", "1 row, 32 connections (req/s)"),
                                       ("batch_rows_per_s", "1000-row batches, 4 connections (rows/s)")),
                                strict=True):
        values = [statistics.median(cells[n][key]) if cells[n].get(key) else 0 for n in names]
        bars = ax.barh(names, values, color=["#2a7" if n.startswith("tabserve") else "#888" for n in names])
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.invert_yaxis()
    fig.suptitle(f"Same RandomForest, server pinned to one core ({run.name}); median of rounds", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
