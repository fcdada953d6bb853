"""Runs a Markdown page's shell and Python blocks in order, as one scenario, the way a reader would.

Conventions (the page's author relies on them; tests/docs/test_doc_blocks.py runs every page with them):

- **Skips.** A block is skipped when the line before its fence is ``<!-- no-test: REASON -->``, or when the
  page says ``<!-- no-test python: REASON -->`` (or ``bash``) for all its blocks of that language.
- **One scratch folder and environment per page.** Blocks run in order in one folder holding the sample data
  (``iris.csv``, ``diabetes.csv`` + a LightGBM ``diabetes.txt``, ``houses*.csv``, ``june.parquet``,
  ``credit*.csv``, ``churn-original.parquet``, ``customers.csv``, ``big.parquet``, the demo bundle as
  ``./bundle``: tests/docs/test_doc_blocks.py writes them), with a fresh ``HOME`` whose
  ``~/.tabserve/models/demo/1`` is the demo bundle, and no
  ``TABSERVE_*``/``MLFLOW_*`` variable: the registry is the embedded SQLite store under that ``HOME``. What a
  block writes (bundles, registered versions, files) is there for the next block.
- **Servers.** A shell line that starts a server in the foreground (``tabserve serve``, ``uvicorn``,
  ``gunicorn``, ``mlflow server``, ``mlflow models serve``, ``mlflow ui``) runs in the background;
  the runner waits until it answers (``/readyz``; ``/ping`` or ``/health`` for MLflow's) and runs the next
  lines and blocks against it. A block holding such a line runs line by line (a ``\\``-continued command
  is one line). A server replaces the one the runner started before on the same port; all stop at the
  page's end.
  A page that talks to ``localhost:8000`` before starting its own server gets the demo model served there.
- **Ports.** The documented ports (8000 and protocol-v2.md's 8765, 8001 for gRPC, 8080, 5000, 5001) are
  replaced by free ones, ``--host 0.0.0.0`` by 127.0.0.1, and ``TABSERVE_PORT`` is 8000's stand-in, so a
  server started without ``--port`` is found where the page then looks for it.
- **Folders.** ``/var/lib/tabserve/`` and ``/data/`` (a server's volume in production) are folders of the
  scratch folder.
- **HTTP errors.** ``curl`` fails on an HTTP error (``~/.curlrc``: ``fail-with-body``), so a block whose
  request is refused fails, unless the page shows the answer (an error example) right after it.
- **Expected output.** A ``json`` block right after a shell block, or a ``text`` block right after a Python
  block, is what that block prints (timings are not compared, other numbers to 1e-6); for a shell block of
  several commands, the last JSON value it prints. ``<!-- not-compared: REASON -->`` between the two blocks
  says the output shown cannot be reproduced here (days of traffic).
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[2]
LANGS = {"bash": "bash", "sh": "bash", "shell": "bash", "console": "bash", "python": "python"}
BLOCK_TIMEOUT_S = 180  # watchdog only: a block that trains and registers a few models takes ~30 s
READY_TIMEOUT_S = 120
READY_IN_A_ROW = 5  # several workers: one ready answer may come from a worker whose siblings still load
TIMING_KEYS = {"latency_ms", "total_time_ms", "explain_ms"}
DOC_PORTS = (8000, 8001, 8080, 5000, 5001)
PORT_ALIASES = {8765: 8000}  # protocol-v2.md's examples talk to the same server as 8000
CURL_HTTP_ERROR = 22

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_MARK = re.compile(r"<!--\s*no-test:\s*(.*?)\s*-->\s*\Z", re.DOTALL)
_PAGE_MARK = re.compile(r"<!--\s*no-test (bash|python):\s*(.*?)\s*-->")
_ENV_PREFIX = r"(?:[A-Za-z_][A-Za-z0-9_]*=(?:'[^']*'|\"[^\"]*\"|\S*)\s+)*"
_SERVER = re.compile(rf"^{_ENV_PREFIX}(?:\S*/)?(tabserve serve|uvicorn|gunicorn|mlflow server"
                     r"|mlflow models serve|mlflow ui)\b")
_HOSTS = r"(?:localhost|127\.0\.0\.1|0\.0\.0\.0)"


def server_kind(command: str) -> str | None:
    """``tabserve serve``, ``uvicorn``, ... when ``command`` starts a server in the foreground, else None."""
    found = _SERVER.match(re.sub(r"\\\n\s*", " ", command.strip()))
    return found.group(1) if found else None


class BlockFailed(AssertionError):
    pass


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

    @property
    def first_line(self) -> str:
        lines = (line.strip() for line in self.code.splitlines())
        return next((line for line in lines if line and not line.startswith("#")), "")


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
                    and len(between.strip()) < 200 and "<!-- not-compared" not in between:
                expected, expected_lang = nxt.group(2), "json"
            elif lang == "python" and nxt.group(1) == "text" and not between.strip():
                expected, expected_lang = nxt.group(2), "text"
        found.append(Block(page, text[:m.start()].count("\n") + 1, lang, m.group(2), skip, expected,
                           expected_lang))
    return found


def commands_of(code: str) -> list[str]:
    """The block's commands, one per logical line: continuations joined, quotes whole, comments dropped."""
    commands, current = [], ""
    for raw in code.splitlines():
        current = f"{current}\n{raw}" if current else raw
        if current.rstrip().endswith("\\") or not _complete(current):
            continue
        if current.strip() and not current.strip().startswith("#"):
            commands.append(current)
        current = ""
    if current.strip():
        commands.append(current)
    return commands


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def _complete(command: str) -> bool:
    try:
        shlex.split(command, comments=True)  # an apostrophe in a comment is no quote
    except ValueError:  # a quote still open: the command goes on on the next line
        return False
    return True


def _which(command: str | None) -> str:
    return f"`{' '.join(command.split())}` " if command else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same(shown: object, actual: object, path: str = "") -> None:
    if isinstance(shown, dict) and isinstance(actual, dict):
        where = path or "the answer"
        assert set(shown) == set(actual), f"{where} keys: doc {sorted(shown)}, got {sorted(actual)}"
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


def _last_json(out: str) -> object:
    """The last JSON value the block printed (curl's answers follow each other without a newline; a line
    that is no JSON, such as a grepped header, is passed over)."""
    decoder, at, last, end = json.JSONDecoder(), 0, None, len(out.rstrip())
    while at < end:
        try:
            last, at = decoder.raw_decode(out, at)
        except json.JSONDecodeError:
            newline = out.find("\n", at)
            if newline < 0:
                raise
            at = newline
        while at < end and out[at].isspace():
            at += 1
    return last


def check_output(block: Block, out: str) -> None:
    if block.expected is None:
        return
    if block.expected_lang == "json":
        _same(json.loads(block.expected), _last_json(out))
    else:
        shown = [line.rstrip() for line in block.expected.strip().splitlines()]
        got = [line.rstrip() for line in out.strip().splitlines()]
        assert got == shown, "printed:\n" + "\n".join(got) + "\nbut the doc shows:\n" + "\n".join(shown)


@dataclass
class Server:
    command: str
    port: int
    proc: subprocess.Popen
    log: IO[str]

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the whole group: bash, the launcher, its workers
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@dataclass
class Scenario:
    """One page's run: the scratch folder, the environment, the port map and the servers started so far."""

    work: Path
    env: dict[str, str]
    ports: dict[int, int] = field(default_factory=dict)
    servers: dict[int, Server] = field(default_factory=dict)
    ran: int = 0

    def __post_init__(self) -> None:
        for port in DOC_PORTS:
            self.ports.setdefault(port, free_port())
        for alias, port in PORT_ALIASES.items():
            self.ports[alias] = self.ports[port]
        self.env["TABSERVE_PORT"] = str(self.ports[8000])
        # An HTTP error is a failed block (curl exits 22), unless the page shows that answer right after it
        Path(self.env["HOME"], ".curlrc").write_text("fail-with-body\n")

    def localize(self, code: str) -> str:
        def host_port(m: re.Match[str]) -> str:
            return f"{m.group(1)}:{self.ports[int(m.group(2))]}"

        def flag_port(m: re.Match[str]) -> str:
            return f"{m.group(1)}{self.ports[int(m.group(2))]}"

        known = "|".join(str(p) for p in self.ports)
        code = re.sub(rf"({_HOSTS}):({known})\b", host_port, code)
        code = re.sub(rf"(--(?:grpc-)?port[ =])({known})\b", flag_port, code)
        code = code.replace("/var/lib/tabserve/", f"{self.work}/var/lib/tabserve/")
        code = re.sub(r"(?<![\w.~/-])/data/", f"{self.work}/data/", code)
        return code.replace("--host 0.0.0.0", "--host 127.0.0.1")

    # -- blocks ---------------------------------------------------------------------------------------------

    def run(self, block: Block) -> None:
        code = self.localize(block.code)
        if block.lang == "bash" and any(server_kind(c) for c in commands_of(code)):
            for command in commands_of(code):
                if server_kind(command):
                    self.start_server(block, command)
                else:
                    self._run_process(block, ["bash", "-euo", "pipefail", "-c", command], command)
        else:
            shell = block.lang == "bash"
            argv = ["bash", "-euo", "pipefail", "-c", code] if shell else [sys.executable, "-c", code]
            out = self._run_process(block, argv)
            try:
                check_output(block, out)
            except (AssertionError, ValueError) as e:
                raise self._failure(block, f"printed what the doc does not show: {e}", out, "") from None
        self.ran += 1

    def _run_process(self, block: Block, argv: list[str], command: str | None = None) -> str:
        try:
            done = subprocess.run(argv, check=False, cwd=self.work, env=self.env, capture_output=True,
                                  text=True, timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            what = f"{_which(command)}ran past {BLOCK_TIMEOUT_S} s"
            raise self._failure(block, what, _text(e.stdout), _text(e.stderr)) from None
        if done.returncode == CURL_HTTP_ERROR and block.expected is not None:
            return done.stdout  # an error answer the page shows: check_output compares it
        if done.returncode != 0:
            what = " (curl: the server answered an HTTP error)" if done.returncode == CURL_HTTP_ERROR else ""
            what = f"{_which(command)}exited {done.returncode}{what}"
            raise self._failure(block, what, done.stdout, done.stderr)
        return done.stdout

    def _failure(self, block: Block, what: str, stdout: str, stderr: str) -> BlockFailed:
        servers = "".join(f"\n--- server on {s.port}: {s.command.strip()}\n{s.output()}"
                          for s in self.servers.values())
        return BlockFailed(f"{block.id} (`{block.first_line}`) {what}\n--- block\n{block.code}--- stdout\n"
                           f"{stdout[-3000:]}\n--- stderr\n{stderr[-3000:]}{servers}")

    # -- servers --------------------------------------------------------------------------------------------

    def start_server(self, block: Block | None, command: str) -> Server:
        port, path = self._where(command)
        if port in self.servers:
            self.servers.pop(port).stop()
        log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by Server.stop
        proc = subprocess.Popen(["bash", "-c", command.strip()], cwd=self.work, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        server = self.servers[port] = Server(command, port, proc, log)
        deadline, in_a_row = time.monotonic() + READY_TIMEOUT_S, 0
        while in_a_row < READY_IN_A_ROW:
            late = time.monotonic() > deadline
            failed = "exited" if proc.poll() is not None else "was not ready" if late else ""
            if failed:
                where = block or Block(ROOT, 0, "bash", command, None, None, None)
                raise self._failure(where, f"started a server that {failed} (port {port}{path})", "", "")
            try:
                ok = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200
            except httpx.TransportError:
                ok = False
            in_a_row = in_a_row + 1 if ok else 0
            if not ok:
                time.sleep(0.3)
        return server

    def _where(self, command: str) -> tuple[int, str]:
        words = shlex.split(command.replace("\\\n", " "), comments=True)
        port = self.ports[8000]
        for i, word in enumerate(words):
            if word in ("--port", "-p") and i + 1 < len(words):
                port = int(words[i + 1])
            elif word.startswith("--port="):
                port = int(word.split("=", 1)[1])
            elif word in ("-b", "--bind") and i + 1 < len(words):
                port = int(words[i + 1].rsplit(":", 1)[1])
        kind = server_kind(command)
        if kind == "mlflow models serve":
            return port, "/ping"
        if kind in ("mlflow server", "mlflow ui"):
            return port, "/health"
        return port, "/readyz"

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers.clear()
