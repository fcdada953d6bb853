"""Score a whole file in this process: read a chunk, score it, append it to the output, report progress."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tabserve.batch import DEFAULT_BATCH_ROWS
from tabserve.batch.files import TableSource, feature_types, open_sink, open_source
from tabserve.batch.scorer import ChunkScorer
from tabserve.core.model import Model
from tabserve.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class ScoreReport:
    rows: int
    seconds: float
    output: Path

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


class Progress(Protocol):
    total: int | float | None

    def update(self, n: int) -> Any: ...


def score_file(model: Model, src: Path, dest: Path, *, batch_rows: int = DEFAULT_BATCH_ROWS,
               keep: Sequence[str] | None = None, progress: bool = True) -> ScoreReport:
    """Write ``dest`` (CSV or parquet): the kept columns of ``src`` and the model's predictions, row by row."""
    t0 = time.perf_counter()
    scorer = ChunkScorer(model, keep)
    source = open_source(src, feature_types(model))
    try:
        scorer.check_columns(source.names, str(src))
        source.select([*model.schema.names, *(keep if keep is not None else source.names)])
        rows = 0
        with open_sink(dest) as sink, progress_bar(source.path.name, source.total, progress) as bar:
            for batch in source.batches(batch_rows):
                try:
                    sink.write(scorer.score(batch, first_row=rows))
                except InvalidInput as exc:
                    raise _with_line(exc, source) from exc
                rows += batch.num_rows
                bar.update(batch.num_rows)
            bar.total = rows  # a CSV file's row count was an estimate
    finally:
        source.close()
    return ScoreReport(rows, time.perf_counter() - t0, dest)


def _with_line(exc: InvalidInput, source: TableSource) -> InvalidInput:
    """CSV users count lines: name the line too (row 0 is line 2, after the header)."""
    row = exc.context.get("row")
    if source.format != "csv" or row is None or "(line " in exc.message:
        return exc
    prefix = f"row {row}"
    if not exc.message.startswith(prefix):
        return exc
    message = f"{prefix} (line {row + 2} of {source.path.name}){exc.message[len(prefix):]}"
    return InvalidInput(message, **exc.context)


class _Silent:
    total: int | float | None = None

    def update(self, n: int) -> None:
        pass


@contextmanager
def progress_bar(name: str, total: int | None, enabled: bool) -> Iterator[Progress]:
    """Rows scored, as a tqdm bar on stderr; nothing when disabled or tqdm is not installed."""
    if not enabled:
        yield _Silent()
        return
    try:
        from tqdm import tqdm
    except ImportError:
        print("tabserve: install tqdm for a progress bar (pip install 'tabserve[batch]')", file=sys.stderr)
        yield _Silent()
        return
    with tqdm(total=total or None, unit=" rows", unit_scale=True, desc=name, file=sys.stderr, dynamic_ncols=True,
              mininterval=0.2) as bar:
        yield bar
