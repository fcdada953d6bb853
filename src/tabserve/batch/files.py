"""CSV and parquet files read in chunks (never the whole file in memory) and written atomically."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from tabserve.batch.scorer import first_non_number
from tabserve.core.model import Model
from tabserve.errors import DataError, InvalidInput

Format = Literal["csv", "parquet"]
CSV_BLOCK_BYTES = 8 << 20  # what the CSV reader parses at once; its column types come from the first block
_SUFFIXES: dict[str, Format] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def file_format(path: Path, role: str) -> Format:
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{role} {path}: unknown file type {path.suffix or '(no suffix)'!r}; use a .csv or .parquet "
                        "file")
    return fmt


def feature_types(model: Model) -> dict[str, pa.DataType]:
    """How CSV columns of features are read: numbers as float64, categories as strings (never guessed).

    pyarrow parses a decimal to the nearest double, as training's reader (``training.tables``) and JSON do:
    a file scores as its rows sent over HTTP (tests/training/test_number_parser.py)."""
    return {f.name: pa.string() if f.kind == "categorical" else pa.float64() for f in model.manifest.features}


@dataclass
class TableSource:
    """An input file: its column names, then its chunks. ``total`` rows: exact for parquet, estimated for CSV
    from the length of its first lines (the CSV reader reads ahead, so bytes read would run ahead of scoring)."""

    path: Path
    format: Format
    names: list[str]
    total: int
    _file: IO[bytes] | None = None
    _reader: Any = None
    _columns: list[str] | None = None
    _types: dict[str, pa.DataType] = field(default_factory=dict)

    def select(self, columns: Sequence[str]) -> None:
        """Read only these columns (the features and the kept ones)."""
        self._columns = [c for c in self.names if c in set(columns)]

    def batches(self, max_rows: int) -> Iterator[pa.RecordBatch]:
        if self.format == "parquet":
            pf: pq.ParquetFile = self._reader
            yield from pf.iter_batches(batch_size=max_rows, columns=self._columns)
            return
        yield from self._csv_batches(max_rows)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def _csv_batches(self, max_rows: int) -> Iterator[pa.RecordBatch]:
        assert self._file is not None
        try:
            reader = self._open_csv(self._file, self._types, self._columns)
        except pa.ArrowInvalid as exc:  # a bad value in the first block
            raise self._explain(exc) from exc
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as exc:
                raise self._explain(exc) from exc
            for start in range(0, batch.num_rows, max_rows):
                yield batch.slice(start, max_rows)

    @staticmethod
    def _open_csv(f: IO[bytes], types: dict[str, pa.DataType], columns: list[str] | None,
                  block_size: int = CSV_BLOCK_BYTES) -> pa_csv.CSVStreamingReader:
        return pa_csv.open_csv(f, read_options=pa_csv.ReadOptions(block_size=block_size),
                               convert_options=pa_csv.ConvertOptions(column_types=types, include_columns=columns))

    def _explain(self, exc: pa.ArrowInvalid) -> Exception:
        """The CSV reader names the column but not the row of a bad value: read the file again as text to say
        which row, or explain the reader's message (a column's type is guessed from the first block)."""
        numeric = [n for n, t in self._types.items() if t == pa.float64() and n in self.names]
        with open(self.path, "rb") as f:
            reader = self._open_csv(f, dict.fromkeys(numeric, pa.string()), numeric)
            row = 0
            for batch in reader:
                for name in numeric:
                    bad = first_non_number(batch.column(name))
                    if bad is not None:
                        value = batch.column(name)[bad].as_py()
                        return InvalidInput(f"row {row + bad} (line {row + bad + 2} of {self.path.name}), column "
                                            f"{name!r}: {value!r} is not a number; this feature takes numbers",
                                            row=row + bad, feature=name)
                row += batch.num_rows
        return DataError(f"{self.path} cannot be read as CSV: {exc} (the type of a column that is not a feature is "
                         f"guessed from the first {CSV_BLOCK_BYTES >> 20} MB; copy only the columns you need with "
                         "--keep)")


def open_source(path: Path, types: dict[str, pa.DataType]) -> TableSource:
    fmt = file_format(path, "input")
    if not path.is_file():
        raise DataError(f"input {path} does not exist" if not path.exists() else f"input {path} is not a file")
    if fmt == "parquet":
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path} cannot be read as parquet: {exc}") from exc
        return TableSource(path, fmt, list(pf.schema_arrow.names), pf.metadata.num_rows, _reader=pf)
    f = open(path, "rb")  # noqa: SIM115 - TableSource.close() closes it
    try:
        header = TableSource._open_csv(f, {}, None, 1 << 20).schema.names  # the first MB, for the names
    except pa.ArrowInvalid as exc:
        f.close()
        if path.stat().st_size == 0:
            raise DataError(f"{path} is empty: a CSV file with a header line is expected") from None
        raise DataError(f"{path} cannot be read as CSV: {exc}") from exc
    f.seek(0)
    return TableSource(path, fmt, list(header), _estimated_rows(f, path.stat().st_size), _file=f, _types=types)


def _estimated_rows(f: IO[bytes], size: int) -> int:
    """Data lines in a CSV file, from the first MB (exact when the file is no larger)."""
    head = f.read(1 << 20)
    f.seek(0)
    end_of_header = head.find(b"\n")
    if end_of_header < 0:
        return 0
    body = head[end_of_header + 1:]
    lines = body.count(b"\n")
    if len(head) == size:
        return lines + (bool(body) and not body.endswith(b"\n"))
    return round((size - end_of_header - 1) * lines / max(len(body), 1))


class TableSink:
    """Chunks appended to ``path``'s temporary sibling, renamed to ``path`` only when all went well."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.format = file_format(path, "output")
        if not path.parent.is_dir():
            raise DataError(f"output folder {path.parent} does not exist")
        self.partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        self._writer: pq.ParquetWriter | pa_csv.CSVWriter | None = None
        self.schema: pa.Schema | None = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self.schema = table.schema
            self._writer = (pq.ParquetWriter(self.partial, table.schema) if self.format == "parquet"
                            else pa_csv.CSVWriter(self.partial, table.schema))
        elif table.schema != self.schema:
            table = table.cast(self.schema)
        self._writer.write_table(table)

    def commit(self) -> None:
        if self._writer is None:
            raise DataError("the input has no rows: nothing was written")
        self._writer.close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self.partial.unlink(missing_ok=True)


@contextlib.contextmanager
def open_sink(path: Path) -> Iterator[TableSink]:
    sink = TableSink(path)
    try:
        yield sink
    except BaseException:
        sink.abort()
        raise
    sink.commit()
