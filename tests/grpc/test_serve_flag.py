"""``tabserve serve --grpc-port``: the setting, and a port in use refused at once."""

from __future__ import annotations

import socket
import subprocess

import tabserve
from tests.servers import tabserve_cmd


def test_grpc_port_is_off_by_default_and_read_from_the_environment(monkeypatch):
    assert tabserve.Settings().grpc_port is None
    monkeypatch.setenv("TABSERVE_GRPC_PORT", "8001")
    assert tabserve.Settings().grpc_port == 8001


def test_a_grpc_port_in_use_stops_serve_in_one_line(demo_bundle):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(tabserve_cmd("serve", str(demo_bundle), "--port", "0", "--grpc-port", str(port)),
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"tabserve serve: error: port {port} on 127.0.0.1 is in use by another process; "
                                   "stop it or choose another port (--grpc-port)")
