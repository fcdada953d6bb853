"""What MLflow's ``python_function`` wrapper of a registered bundle costs next to ``tabserve.load``.

    .venv/bin/python benchmarks/pyfunc_latency.py [--repeats 20]

Trains the demo model into a temporary TABSERVE_HOME, registers it in the embedded MLflow store (the first use
of a fresh SQLite store runs MLflow's migrations: included in the time printed), then prints the time of
``mlflow.pyfunc.load_model("models:/houses@champion")`` and the median time of ``predict`` on 1 and 10 000 rows
through the pyfunc wrapper and through ``tabserve.load(bundle)``, and whether both answered the same values.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tabserve-pyfunc-"))
    os.environ["TABSERVE_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        run(home, args.repeats)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(home: Path, repeats: int) -> None:
    from tabserve.registry.mlflow import tracking_uri
    from tabserve.training import train_demo
    from tabserve.training.publish import register_bundle

    bundle = train_demo(dest=home / "demo")
    t = time.perf_counter()
    register_bundle(bundle, "houses", alias="champion", home=home)
    print(f"register_bundle (fresh store): {time.perf_counter() - t:.2f} s")
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri(home)

    import mlflow.pyfunc
    import numpy as np
    import pandas as pd

    import tabserve

    t = time.perf_counter()
    wrapped = mlflow.pyfunc.load_model("models:/houses@champion")
    print(f"mlflow.pyfunc.load_model: {time.perf_counter() - t:.2f} s")
    model = tabserve.load(bundle)
    names = model.manifest.feature_names
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(10_000, len(names))), columns=names)
    for n in (1, 10_000):
        rows = frame.iloc[:n]
        for label, call in (("pyfunc", lambda r=rows: wrapped.predict(r)), ("tabserve", lambda r=rows: model.predict(r))):
            call()
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                call()
                times.append(time.perf_counter() - t)
            print(f"{label:8s} predict {n:>6} rows: median {np.median(times) * 1000:.2f} ms")
    same = np.array_equal(np.asarray(wrapped.predict(frame)), model.predict(frame))
    print(f"same values on {len(frame)} rows: {same}")


if __name__ == "__main__":
    main()
