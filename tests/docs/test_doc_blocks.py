"""Every shell and Python block of README.md and docs/*.md runs as written, against a real `tabserve serve` of
the demo model, or is marked in the Markdown with the reason it cannot run here.

A block is skipped when the line before its fence is ``<!-- no-test: REASON -->``, or when the page says
``<!-- no-test python: REASON -->`` (or ``bash``) for all its blocks of that language. Everything else runs in
a temporary folder holding ``iris.csv``, ``diabetes.csv`` and a LightGBM ``diabetes.txt``, with a HOME whose
``~/.tabserve/models/demo/1`` is the demo bundle; ``localhost:8000`` (and protocol-v2.md's ``localhost:8765``) point at the server, ``localhost:8001`` at its
gRPC port. When a ``json`` block follows a shell block, or a ``text`` block directly follows a Python block,
that is what the block must print (timings are not compared, other numbers to 1e-6).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGS = {"bash": "bash", "sh": "bash", "shell": "bash", "console": "bash", "python": "python"}
BLOCK_TIMEOUT_S = 60
TIMING_KEYS = {"latency_ms", "total_time_ms", "explain_ms"}

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_MARK = re.compile(r"<!--\s*no-test:\s*(.*?)\s*-->\s*\Z", re.DOTALL)
_PAGE_MARK = re.compile(r"<!--\s*no-test (bash|python):\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    code: str
    skip: str | None
    expected: str | None  # what it prints: a json block after a shell block, a text block right after python
    expected_lang: str | None

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    page_marks = {lang: reason for lang, reason in _PAGE_MARK.findall(text)}
    fences = list(_FENCE.finditer(text))
    found = []
    for i, m in enumerate(fences):
        lang = LANGS.get(m.group(1))
        if lang is None:
            continue
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = _MARK.search(before)
        skip = mark.group(1) if mark else page_marks.get(lang)
        expected = expected_lang = None
        if i + 1 < len(fences):
            nxt = fences[i + 1]
            between = text[m.end():nxt.start()]
            if lang == "bash" and nxt.group(1) == "json" and "#" not in between and "```" not in between \
                    and len(between.strip()) < 200:
                expected, expected_lang = nxt.group(2), "json"
            elif lang == "python" and nxt.group(1) == "text" and not between.strip():
                expected, expected_lang = nxt.group(2), "text"
        found.append(Block(page, text[:m.start()].count("\n") + 1, lang, m.group(2), skip, expected,
                           expected_lang))
    return found


BLOCKS = [b for page in PAGES for b in blocks_of(page)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sandbox:
    home: Path
    work: Path
    port: int
    grpc_port: int
    env: dict[str, str]

    def localize(self, code: str) -> str:
        for host in ("localhost", "127.0.0.1"):
            code = code.replace(f"{host}:8000", f"{host}:{self.port}").replace(f"{host}:8765", f"{host}:{self.port}")
            code = code.replace(f"{host}:8001", f"{host}:{self.grpc_port}")
        return code


def _write_diabetes(work: Path) -> None:
    """The README's import example: a LightGBM text model and its data as CSV."""
    import lightgbm
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    frame.to_csv(work / "diabetes.csv", index=False)
    data = lightgbm.Dataset(frame.drop(columns="target"), frame["target"])
    booster = lightgbm.train({"objective": "regression", "verbose": -1, "num_threads": 1}, data, num_boost_round=20)
    booster.save_model(str(work / "diabetes.txt"))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, bundles_dir: Path, demo_bundle: Path,
            iris_bundle: Path) -> Iterator[Sandbox]:
    home = tmp_path_factory.mktemp("doc-home")
    work = tmp_path_factory.mktemp("doc-work")
    shutil.copytree(demo_bundle, home / ".tabserve" / "models" / "demo" / "1")
    shutil.copy(bundles_dir / "iris.csv", work / "iris.csv")  # written by conftest's iris_bundle
    _write_diabetes(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TABSERVE_", "MLFLOW_"))}
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               PYTHONUNBUFFERED="1")
    port, grpc_port = _free_port(), _free_port()
    log = (work.parent / "doc-server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "tabserve", "serve", str(home / ".tabserve" / "models" / "demo"), "--port", str(port),
         "--grpc-port", str(grpc_port), "--no-access-log", "--no-pretrain"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"tabserve serve exited: {(work.parent / 'doc-server.log').read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the demo server was not ready within 120 s"
            time.sleep(0.2)
        yield Sandbox(home, work, port, grpc_port, env)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _same(shown: object, actual: object, path: str = "") -> None:
    if isinstance(shown, dict) and isinstance(actual, dict):
        assert set(shown) == set(actual), f"{path or 'the answer'} keys: doc {sorted(shown)}, got {sorted(actual)}"
        for key in shown:
            if key not in TIMING_KEYS:
                _same(shown[key], actual[key], f"{path}.{key}")
    elif isinstance(shown, list) and isinstance(actual, list):
        assert len(shown) == len(actual), f"{path}: doc has {len(shown)} items, got {len(actual)}"
        for i, (s, a) in enumerate(zip(shown, actual, strict=True)):
            _same(s, a, f"{path}[{i}]")
    elif isinstance(shown, float | int) and isinstance(actual, float | int) and not isinstance(shown, bool):
        assert math.isclose(shown, actual, rel_tol=1e-6, abs_tol=1e-9), f"{path}: doc {shown}, got {actual}"
    else:
        assert shown == actual, f"{path}: doc {shown!r}, got {actual!r}"


def _check_output(block: Block, out: str) -> None:
    if block.expected is None:
        return
    if block.expected_lang == "json":
        _same(json.loads(block.expected), json.loads(out))
    else:
        shown = [line.rstrip() for line in block.expected.strip().splitlines()]
        got = [line.rstrip() for line in out.strip().splitlines()]
        assert got == shown, "printed:\n" + "\n".join(got) + "\nbut the doc shows:\n" + "\n".join(shown)


def test_every_page_is_collected_and_markers_give_reasons() -> None:
    assert {p.name for p in PAGES} >= {"README.md", "reference.md", "guide-fr.md", "integration.md"}
    for block in BLOCKS:
        assert block.skip is None or block.skip.strip(), f"{block.id}: a no-test mark needs a reason"
    assert any(b.skip is None for b in BLOCKS), "no block runs at all"


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_doc_block_runs(block: Block, request: pytest.FixtureRequest) -> None:
    if block.skip is not None:
        pytest.skip(f"marked no-test: {block.skip}")
    box: Sandbox = request.getfixturevalue("sandbox")
    code = box.localize(block.code)
    command = ["bash", "-euo", "pipefail", "-c", code] if block.lang == "bash" else [sys.executable, "-c", code]
    try:
        done = subprocess.run(command, check=False, cwd=box.work, env=box.env, capture_output=True, text=True,
                              timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id} ran past {BLOCK_TIMEOUT_S} s (mark it no-test with the reason if it must)")
    assert done.returncode == 0, (f"{block.id} exited {done.returncode}\n--- block\n{block.code}\n--- stdout\n"
                                  f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
    _check_output(block, done.stdout)


def test_readme_links_every_docs_page_and_stays_short() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    unlinked = [p.name for p in PAGES[1:] if f"](docs/{p.name})" not in readme]
    assert not unlinked, f"README.md links to no: {unlinked}"
    assert len(readme.split()) <= 1500, "README.md is over 1,500 words: move details to docs/reference.md"
