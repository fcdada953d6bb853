"""The server's process tree, read from /proc: who it started, what they use, and stopping all of them.

A server may fork (uvicorn workers, onnxruntime never does, Ray does a lot); the harness measures and stops
the whole tree, found by parent pid, and remembers each process's start time so a reused pid is never hit."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time) of every live process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] not in ("Z", "X"):
            table[int(entry)] = (int(fields[1]), int(fields[19]))
    return table


def tree(root: int) -> dict[int, int]:
    """The live processes under root (root included), as pid -> start time (a pid may be reused)."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found[pid] = table[pid][1]
            todo.extend(children.get(pid, []))
    return found


def still_alive(pids: dict[int, int]) -> list[int]:
    table = _processes()
    return [pid for pid, start in pids.items() if pid in table and table[pid][1] == start]


def status_field(pids: dict[int, int], field: str) -> list[str]:
    values = []
    for pid in still_alive(pids):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    values.append(line.split()[1])
        except OSError:
            pass
    return values


def cpu_seconds(pids: dict[int, int]) -> float:
    """User + system CPU time the live processes have used so far."""
    ticks = 0
    for pid in still_alive(pids):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen, pids: dict[int, int], grace_s: float = 8.0) -> list[int]:
    """SIGTERM to the server's process group, then to every process it started, then SIGKILL; returns
    what survived all of it (reported, never silently left running)."""
    pids.update(tree(proc.pid))
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for sig, wait_s in ((None, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if sig is not None:
            for pid in still_alive(pids):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and (proc.poll() is None or still_alive(pids)):
            time.sleep(0.05)
        if not still_alive(pids):
            break
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    return still_alive(pids)
