"""The payload log writes what was predicted as Parquet a reader opens with pyarrow, whole files only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

import tabserve
from tabserve.core.model import Prediction
from tabserve.loop.payload import ParquetPayloadLog
from tabserve.loop.store import LocalStore

from .conftest import record


def parts(root: Path) -> list[Path]:
    return sorted(root.glob("*/date=*/part-*.parquet"))


def test_rows_are_written_as_named_columns(tmp_path: Path, iris_model: tabserve.Model) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    log = ParquetPayloadLog(tmp_path)
    log.offer(*record(iris_model, rows, "req-1", variant="challenger", protocol="v2", when=1_780_000_000.5))
    log.offer(*record(iris_model, rows[:1], "req-2"))
    log.close()
    files = parts(tmp_path)
    assert len(files) == 1 and files[0].parent.name.startswith("date=")
    assert files[0].parent.parent.name == iris_model.name
    table = pq.read_table(files[0]).to_pandas()
    assert table["request_id"].tolist() == ["req-1"] * 3 + ["req-2"]
    assert table["row"].tolist() == [0, 1, 2, 0]
    assert table["variant"].tolist()[:3] == ["challenger"] * 3 and table["variant"].isna().tolist()[3]
    assert table["protocol"].tolist()[0] == "v2"
    assert table["timestamp"].iloc[0].timestamp() == 1_780_000_000.5
    assert table["version"].tolist() == [iris_model.version] * 4
    np.testing.assert_array_equal(table[iris_model.manifest.feature_names].to_numpy(), np.array(rows + rows[:1]))
    assert table["prediction"].tolist() == [str(v) for v in iris_model.predict(np.array(rows + rows[:1]))]
    np.testing.assert_array_equal(np.stack(table["probabilities"]), iris_model.predict_proba(np.array(rows +
                                                                                                      rows[:1])))


def test_slices_of_a_batch_are_logged_as_predicted(tmp_path: Path, iris_model: tabserve.Model) -> None:
    """What the micro-batcher hands over: row slices of one scored batch, strided views among them, and a
    record without probabilities; each row's values land in its own row, the missing probabilities as null."""
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [4.9, 3.1, 1.5, 0.1],
                     [6.3, 2.9, 5.6, 1.8], [5.5, 2.4, 3.8, 1.1]])
    x = iris_model.schema.rows(rows.tolist(), max_rows=6)
    pred = iris_model.run(x)
    strided_x, strided_p = np.asfortranarray(x), np.asfortranarray(pred.probabilities)
    log = ParquetPayloadLog(tmp_path)
    for rid, part, proba in (("a", slice(0, 2), pred.probabilities), ("b", slice(2, 3), strided_p),
                             ("c", slice(3, 5), None), ("d", slice(5, 6), strided_p)):
        inputs = strided_x[part] if rid != "a" else x[part]
        probabilities = None if proba is None else proba[part]
        log.offer(rid, iris_model, None, 1_780_000_000.0, inputs, Prediction(pred.values[part], probabilities, 0.0),
                  "v1")
    log.close()
    table = pq.read_table(parts(tmp_path)[0]).to_pandas()
    assert table["request_id"].tolist() == ["a", "a", "b", "c", "c", "d"]
    assert table["row"].tolist() == [0, 1, 0, 0, 1, 0]
    np.testing.assert_array_equal(table[iris_model.manifest.feature_names].to_numpy(), x)
    assert table["prediction"].tolist() == [str(v) for v in pred.values]
    probabilities = table["probabilities"].tolist()
    assert probabilities[3] is None and probabilities[4] is None
    np.testing.assert_array_equal(np.stack(probabilities[:3] + probabilities[5:]), pred.probabilities[[0, 1, 2, 5]])


def test_text_features_are_strings_and_missing_is_null(tmp_path: Path, colors_model: tabserve.Model) -> None:
    log = ParquetPayloadLog(tmp_path)
    log.offer(*record(colors_model, [[0.5, "red"], [1.5, None]], "r"))
    log.close()
    table = pq.read_table(parts(tmp_path)[0])
    assert table.schema.field("color").type == "string" and table.schema.field("size").type == "double"
    assert table.column("color").to_pylist() == ["red", None]
    assert table.column("prediction").to_pylist() == [str(v) for v in colors_model.predict(
        np.array([[0.5, "red"], [1.5, None]], dtype=object))]


def test_files_rotate_by_size_and_every_row_is_written_once(tmp_path: Path, demo_model: tabserve.Model) -> None:
    registry = CollectorRegistry()
    log = ParquetPayloadLog(tmp_path, rotate_bytes=4096, row_group_rows=50, registry=registry)
    rng = np.random.default_rng(0)
    for i in range(40):
        log.offer(*record(demo_model, rng.normal(size=(10, 5)).tolist(), f"r{i}"))
    log.close()
    files = parts(tmp_path)
    assert len(files) > 1
    table = pq.ParquetDataset(files).read()
    assert sorted(zip(table.column("request_id").to_pylist(), table.column("row").to_pylist(), strict=True)) == \
        sorted((f"r{i}", j) for i in range(40) for j in range(10))
    assert registry.get_sample_value("tabserve_payload_rows_written_total", {"model": demo_model.name}) == 400


def test_files_rotate_by_age(tmp_path: Path, demo_model: tabserve.Model) -> None:
    log = ParquetPayloadLog(tmp_path, rotate_seconds=0.2, poll_seconds=0.05)
    log.offer(*record(demo_model, [[0.0] * 5], "early"))
    deadline = time.monotonic() + 30  # watchdog only: published within a poll after 0.2 s
    while not parts(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(parts(tmp_path)) == 1  # readable without a close
    log.close()


def test_sample_zero_writes_nothing(tmp_path: Path, demo_model: tabserve.Model) -> None:
    log = ParquetPayloadLog(tmp_path, sample=0.0)
    for i in range(20):
        log.offer(*record(demo_model, [[0.0] * 5], f"r{i}"))
    log.close()
    assert parts(tmp_path) == []


@pytest.mark.parametrize("sample", [0.05, 0.5, 0.9])
def test_a_sample_logs_that_fraction_of_requests(tmp_path: Path, demo_model: tabserve.Model, sample: float) -> None:
    """Each request is logged with probability ``sample``: over 20,000 requests the count is within 6 standard
    deviations of the binomial's mean (a false alarm once in ~10^9 runs), and a logged request is whole."""
    n = 20_000
    _, *fields = record(demo_model, [[0.0] * 5, [1.0] * 5], "r")
    log = ParquetPayloadLog(tmp_path, sample=sample)
    for i in range(n):
        log.offer(f"r{i}", *fields)
    log.close()
    table = pq.ParquetDataset(parts(tmp_path)).read()
    logged = table.column("request_id").to_pylist()
    assert abs(len(logged) / 2 - n * sample) <= 6 * (n * sample * (1 - sample)) ** 0.5
    assert logged[::2] == logged[1::2] and table.column("row").to_pylist() == [0, 1] * (len(logged) // 2)


class StuckStore(LocalStore):
    """A disk that stops answering: the writer thread waits inside the store until released."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.release = threading.Event()

    def open_partial(self, relative: str):  # type: ignore[no-untyped-def]
        self.release.wait(60)
        return super().open_partial(relative)


def test_full_queue_drops_and_counts_without_blocking(tmp_path: Path, demo_model: tabserve.Model) -> None:
    store = StuckStore(tmp_path)
    registry = CollectorRegistry()
    log = ParquetPayloadLog(store, max_queue_rows=100, registry=registry, poll_seconds=0.01)
    records = [record(demo_model, [[0.1] * 5] * 10, f"r{i}") for i in range(200)]
    log.offer(*records[0])
    log.flush(timeout=0.2)  # the writer takes the first record and gets stuck in the store
    started = time.monotonic()
    for r in records[1:]:
        log.offer(*r)
    offered_s = time.monotonic() - started
    dropped = registry.get_sample_value("tabserve_payload_dropped_total", {"model": demo_model.name})
    assert dropped == (199 - 10) * 10  # 10 records (100 rows) fit the queue, the rest is dropped and counted
    assert offered_s < 5  # watchdog: a stuck disk never holds up offer (measured: well under 10 ms)
    store.release.set()
    log.close()
    written = pq.ParquetDataset(parts(tmp_path)).read().num_rows
    assert written == 110 == registry.get_sample_value("tabserve_payload_rows_written_total",
                                                       {"model": demo_model.name})


WRITER = textwrap.dedent("""
    import sys, time
    import tabserve
    from tabserve.loop.payload import ParquetPayloadLog
    from tests.loop.conftest import record
    model = tabserve.load(sys.argv[1])
    log = ParquetPayloadLog(sys.argv[2], rotate_bytes=20_000, row_group_rows=200, poll_seconds=0.01)
    rows = [[0.1 * i for i in range(5)]] * 50
    i = 0
    while True:
        log.offer(*record(model, rows, f"r{i}"))
        i += 1
        if i == 50:
            print("writing", flush=True)
        time.sleep(0.001)
""")


def test_sigkill_mid_write_leaves_only_whole_files(tmp_path: Path, demo_bundle: Path) -> None:
    root = tmp_path / "log"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(demo_bundle), str(root)], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).parents[2])
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
        deadline = time.monotonic() + 60
        while len(parts(root)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    published = parts(root)
    assert len(published) >= 3
    for path in published:  # every published file is a whole Parquet file with whole requests
        table = pq.read_table(path)
        rows = table.column("row").to_pylist()
        assert table.num_rows % 50 == 0 and rows == list(range(50)) * (table.num_rows // 50)
    # What the killed writer had open (almost always: it opens the next file at once) is a hidden temp file;
    # the next writer on this host removes it, its pid being dead.
    ParquetPayloadLog(LocalStore(root)).close()
    assert not list(root.glob("**/.part-*.tmp"))
    assert parts(root) == published


def test_offer_never_raises(tmp_path: Path, demo_model: tabserve.Model) -> None:
    (tmp_path / "blocked").write_text("a file where the log's folder should be")
    log = ParquetPayloadLog(tmp_path / "blocked" / "log")
    log.offer(*record(demo_model, [[0.0] * 5], "r"))
    log.close()  # the write failed in the writer thread: logged and counted, nothing raised here
    assert log.dropped.labels(demo_model.name)._value.get() == 1


@pytest.mark.parametrize("sample", [-0.1, 1.5])
def test_sample_outside_zero_one_is_refused(tmp_path: Path, sample: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        ParquetPayloadLog(tmp_path, sample=sample)


def test_a_dead_writers_temp_file_is_removed_on_this_host_only(tmp_path: Path) -> None:
    from tabserve.loop.store import HOST

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "demo" / "date=2026-12-07"
    folder.mkdir(parents=True)
    mine = folder / f".part-1-{HOST}-{dead.pid}-0.parquet.tmp"
    other_host = folder / f".part-1-elsewhere.example-{dead.pid}-0.parquet.tmp"
    alive = folder / f".part-1-{HOST}-{os.getpid()}-0.parquet.tmp"
    for path in (mine, other_host, alive):
        path.write_bytes(b"PAR1 half a file")
    ParquetPayloadLog(tmp_path).close()
    assert not mine.exists() and other_host.exists() and alive.exists()
    assert parts(tmp_path) == []  # never read as data
