"""Memory over many traffic-policy changes: PUT a variant, DELETE it, N times, in-process.

    .venv/bin/python benchmarks/traffic_rounds.py [--rounds 2000] [--warmup 100]

Trains a small linear model once, serves a model folder holding it as versions 1 and 2 (2 served), and runs
``PUT /api/v1/admin/traffic/demo {"variants": {"1": 10}}`` then ``DELETE`` for --warmup rounds, then --rounds
more. Prints the process RSS after the warm-up and at the end, the slots the manager holds, and the time per
round. A removed variant used to keep its slot and its model (issue #14: 2-3 MB more per 2,000 rounds).
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

import tabserve


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def model_folder(root: Path) -> Path:
    from tabserve.training import train_file
    from tabserve.training.demo import demo_dataset

    data = demo_dataset()
    frame = data.X.copy()
    frame["target"] = data.target.values
    csv = root / "demo.csv"
    frame.to_csv(csv, index=False)
    folder = root / "models" / "demo"
    train_file(csv, "target", estimator="linear", name="demo", dest=folder / "1")
    shutil.copytree(folder / "1", folder / "2")
    manifest = json.loads((folder / "2" / "tabserve.json").read_text())
    manifest["version"] = "2"
    (folder / "2" / "tabserve.json").write_text(json.dumps(manifest))
    return folder


def rounds(client: TestClient, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        r = client.put("/api/v1/admin/traffic/demo", json={"variants": {"1": 10}})
        assert r.status_code == 200, r.text
        assert client.delete("/api/v1/admin/traffic/demo").status_code == 200
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = model_folder(root)
        settings = tabserve.Settings(home=root, model_path=folder, access_log=False, log_level="warning",
                                     poll_interval_s=0, admin_routes="on")
        with TestClient(tabserve.create_app(settings)) as client:
            while client.get("/readyz").status_code != 200:
                time.sleep(0.05)
            manager = client.app.state.manager
            rounds(client, args.warmup)
            gc.collect()
            before = rss_mb()
            seconds = rounds(client, args.rounds)
            manager.loader.submit(lambda: None).result()  # releases queued on the loader thread are done
            gc.collect()
            after = rss_mb()
            print(f"RSS after {args.warmup} warm-up rounds: {before:.1f} MB; after {args.rounds} more: {after:.1f} MB "
                  f"({after - before:+.1f} MB)")
            print(f"slots held: {list(manager.slots)}; {seconds / args.rounds * 1000:.2f} ms per PUT+DELETE round")


if __name__ == "__main__":
    main()
