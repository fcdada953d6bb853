"""``tabserve predict --ray``: Ray Data reads the file, a pool of actors (one model each) scores its blocks."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import ray
import ray.data

import tabserve
from tabserve import errors
from tabserve.batch.files import feature_types, file_format, open_sink, open_source
from tabserve.batch.run import ScoreReport
from tabserve.batch.scorer import ChunkScorer
from tabserve.errors import TabserveError
from tabserve.ray.session import ray_session
from tabserve.ray.shipping import ShippedBundle

# Blocks Ray Data cuts a file into: small enough that one file feeds every actor, large enough that the
# per-block overhead (a task, an object in the store) stays small next to the scoring.
BLOCK_BYTES = 8 << 20
# Logical CPUs each scoring actor reserves. A whole CPU per actor with one actor per CPU would leave none for
# the read tasks, and the job would wait forever; half lets both run (Ray does not pin processes to cores).
ACTOR_CPUS = 0.5


class ScoringActor:
    """One per Ray worker: loads the model once, then scores the batches it is given."""

    def __init__(self, bundle: ShippedBundle, keep: Sequence[str] | None, threads: int) -> None:
        root = bundle.unpack()
        try:
            model = tabserve.load(root, intra_op_threads=threads)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        self.scorer = ChunkScorer(model, keep)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.scorer.score(batch, first_row=None)


def score_file_ray(bundle_dir: Path, src: Path, dest: Path, *, batch_rows: int, keep: Sequence[str] | None = None,
                   workers: int | None = None, address: str | None = None, progress: bool = True) -> ScoreReport:
    """Like ``tabserve.batch.run.score_file``, spread over Ray actors. ``dest`` is one CSV or parquet file (rows in
    input order), or a folder (no suffix) that Ray's workers fill with parquet files themselves."""
    t0 = time.perf_counter()
    bundle = ShippedBundle.read(bundle_dir)
    model = tabserve.load(bundle_dir)
    scorer = ChunkScorer(model, keep)
    types = feature_types(model)
    source = open_source(src, types)  # the header only: refuse a missing column before starting Ray
    source.close()
    scorer.check_columns(source.names, str(src))
    columns = [c for c in source.names if c in {*model.schema.names, *(keep if keep is not None else source.names)}]
    single_file = dest.suffix != ""
    if single_file:
        file_format(dest, "output")
    with ray_session(address):
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        ctx.target_max_block_size = BLOCK_BYTES
        ctx.execution_options.preserve_order = single_file
        if source.format == "csv":
            ds = ray.data.read_csv(str(src), convert_options=pa_csv.ConvertOptions(
                column_types={n: t for n, t in types.items() if n in columns}, include_columns=columns))
        else:
            ds = ray.data.read_parquet(str(src), columns=columns)
        size = workers or max(int(ray.available_resources().get("CPU", 1)), 1)
        ds = ds.map_batches(ScoringActor, fn_constructor_kwargs={"bundle": bundle, "keep": keep, "threads": 1},
                            batch_format="pyarrow", batch_size=batch_rows, num_cpus=ACTOR_CPUS,
                            compute=ray.data.ActorPoolStrategy(size=size),
                            zero_copy_batch=True)
        rows = 0
        with _user_errors():
            if not single_file:
                ds.write_parquet(str(dest))
                rows = sum(pq.ParquetFile(f).metadata.num_rows for f in dest.glob("*.parquet"))
            else:
                with open_sink(dest) as sink:
                    for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                        sink.write(table)
                        rows += table.num_rows
    return ScoreReport(rows, time.perf_counter() - t0, dest)


@contextmanager
def _user_errors() -> Iterator[None]:
    """A tabserve error raised in an actor reaches the driver as Ray's exception, which keeps only the text of
    the original traceback: find the tabserve error's last line there and raise it again, short and clear."""
    try:
        yield
    except TabserveError:
        raise
    except Exception as exc:
        found = _TABSERVE_ERROR.findall(str(exc))
        if found:
            kind, message = found[-1]
            error_type = getattr(errors, kind, None)
            if isinstance(error_type, type) and issubclass(error_type, TabserveError):
                raise error_type(message.strip()) from None
        raise


_TABSERVE_ERROR = re.compile(r"tabserve\.errors\.(\w+): (.+)")
