"""Cost of the correctly rounded CSV parser that ``tabserve train``/``import``/``retrain``/``report`` read with.

    .venv/bin/python benchmarks/table_reader.py [--rows 100000] [--repeat 3]

Writes a CSV of --rows rows (10 normal float columns, one with 2% empty cells, an integer and a text column)
twice: with every double's 17 significant digits and rounded to 4 decimals. Prints the best of --repeat
parse times of pandas' default float parser (not correctly rounded), ``tabserve.training.tables.read_table``
(pandas' round_trip parser) and pyarrow's CSV reader, and how many values each parser reads differently from
Python's float() of the text.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.csv as pa_csv

from tabserve.training.tables import read_table


def _best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=args.rows) for i in range(10)})
    frame.loc[::50, "x1"] = np.nan
    frame["k"] = rng.integers(0, 100, args.rows)
    frame["city"] = rng.choice(["Brest", "Lyon", "Nice"], args.rows)
    floats = [f"x{i}" for i in range(10)]
    with tempfile.TemporaryDirectory() as tmp:
        for label, data in (("17 digits", frame), ("4 decimals", frame.round(4))):
            path = Path(tmp) / "table.csv"
            data.to_csv(path, index=False)
            raw = path.read_bytes()
            text = pd.read_csv(path, dtype=str, keep_default_na=False)[floats].to_numpy().ravel()
            exact = np.array([float(v) if v else np.nan for v in text])
            readers: dict[str, Callable[[], pd.DataFrame]] = {
                "pandas default": lambda: pd.read_csv(io.BytesIO(raw)),  # noqa: B023
                "read_table (round_trip)": lambda: read_table(path).frame,  # noqa: B023
                "pyarrow.csv": lambda: pa_csv.read_csv(io.BytesIO(raw)).to_pandas(),  # noqa: B023
            }
            print(f"{label}: {args.rows:,} rows x {frame.shape[1]} columns, {len(raw) / 1e6:.1f} MB")
            for name, read in readers.items():
                got = read()[floats].to_numpy().ravel()
                wrong = int(np.sum((got != exact) & ~(np.isnan(got) & np.isnan(exact))))
                print(f"  {name:<24} {_best(read, args.repeat):6.3f} s   values unlike float(): {wrong:,}")


if __name__ == "__main__":
    main()
