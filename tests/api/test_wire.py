"""The wire lane (api/wire.py): prediction requests answered by the connection itself give the answers, ids,
metrics and errors of the ASGI path, in order on a pipelined connection; what it does not take (other routes,
chunked or large bodies, Expect: 100-continue) goes through uvicorn; no client can stall it or lose a request."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

import tabserve
from tabserve.api import transport
from tabserve.api.wire import Wire
from tests.servers import free_port

ROW = [0.1, 0.2, 0.3, 0.4, 0.5]


def request(path: str, body: Any, *headers: str, version: str = "1.1") -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = [f"POST {path} HTTP/{version}", "Host: tabserve", "Content-Type: application/json",
            f"Content-Length: {len(data)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def get(path: str, *headers: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: tabserve", *headers]) + "\r\n\r\n").encode()


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests the wire lane answered."""
    seen: list[str] = []
    run = Wire.run

    def counting(self: Wire, protocol: Any, cycle: Any) -> None:
        seen.append(cycle.scope["path"])
        run(self, protocol, cycle)

    monkeypatch.setattr(Wire, "run", counting)
    return seen


@contextmanager
def wire_server(model: tabserve.Model, **settings: Any) -> Iterator[int]:
    """uvicorn in a thread with tabserve's protocol, as ``tabserve serve`` runs it (same process: the test sees
    which requests the wire took)."""
    app = tabserve.create_app(tabserve.Settings(access_log=False, **settings), model=model)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=transport.protocol_class(),
                                           lifespan="on", log_level="warning", ws="none", proxy_headers=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        with socket.create_connection(("127.0.0.1", port)) as sock:  # the first request decides the app's path
            sock.sendall(get("/readyz"))
            assert read_response(sock)[0] == 200
        yield port
    finally:
        server.should_exit = True
        thread.join(15)


class Answers:
    """The responses arriving on one connection, in order: pipelined answers may share a read."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""

    def next(self, within: float = 10) -> tuple[int, dict[str, str], bytes]:
        self.sock.settimeout(within)  # a watchdog: a server that never answers fails the test
        while b"\r\n\r\n" not in self.data:
            self._more()
        head, _, self.data = self.data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        while len(self.data) < length:
            self._more()
        body, self.data = self.data[:length], self.data[length:]
        return int(lines[0].split(" ")[1]), headers, body

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"the connection closed before a whole answer: {self.data[:200]!r}"
        self.data += chunk


def read_response(sock: socket.socket, within: float = 10) -> tuple[int, dict[str, str], bytes]:
    return Answers(sock).next(within)


def exchange(port: int, *requests: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Send every request at once on one connection (pipelined), then read the answers."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"".join(requests))
        answers = Answers(sock)
        return [answers.next() for _ in requests]


def comparable(body: bytes) -> dict:
    """An answer without what differs between two calls (timings, generated ids)."""
    out = json.loads(body)
    for key in ("latency_ms", "total_time_ms", "request_id"):
        out.pop(key, None)
    if "detail" in out and "request" in out["detail"]:
        out.pop("detail")
    return out


CASES = [
    ("/api/v1/predict", {"data": ROW}),
    ("/api/v1/predict", {"data": ROW[:2]}),  # too few features: 422 naming them
    ("/api/v1/predict", b'{"data": [0.1, '),  # not JSON: 422
    ("/api/v1/predict", {"data": [0.1, 0.2, 0.3, 0.4, 1e300]}),  # far out of range: a warning
    ("/api/v1/predict/batch", {"data": [ROW, [0.5, 0.4, 0.3, 0.2, 0.1]]}),
    ("/api/v1/models/demo/predict", {"data": ROW}),
    ("/api/v1/models/nope/predict", {"data": ROW}),  # 404
    ("/v2/models/demo/infer", {"inputs": [{"name": "X", "shape": [1, 5], "datatype": "FP64", "data": ROW}]}),
]


def test_the_wire_gives_the_asgi_paths_answers_ids_and_metrics(demo_model: tabserve.Model, taken: list[str]):
    with TestClient(tabserve.create_app(tabserve.Settings(access_log=False), model=demo_model)) as asgi:
        expected = [(r.status_code, comparable(r.content)) for r in
                    (asgi.post(path, content=body if isinstance(body, bytes) else json.dumps(body),
                               headers={"content-type": "application/json"}) for path, body in CASES)]
    with wire_server(demo_model) as port:
        answers = [exchange(port, request(path, body, f"X-Request-ID: case-{i}"))[0]
                   for i, (path, body) in enumerate(CASES)]
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(get("/metrics"))
            metrics = read_response(sock)[2].decode()
    assert [(status, comparable(body)) for status, _, body in answers] == expected
    assert [headers["x-request-id"] for _, headers, _ in answers] == [f"case-{i}" for i in range(len(CASES))]
    assert all(headers["content-type"] == "application/json" and "date" in headers for _, headers, _ in answers)
    assert taken == [path for path, _ in CASES]
    assert answers[0][0] == 200 and answers[1][0] == 422 and answers[6][0] == 404
    ok = [line for line in metrics.splitlines() if line.startswith("tabserve_requests_total{")
          and 'route="/api/v1/predict"' in line and 'status="200"' in line]
    assert len(ok) == 1 and ok[0].endswith(" 2.0"), ok  # the good row and the out-of-range one


def test_what_the_wire_does_not_take_goes_through_uvicorn(demo_model: tabserve.Model, taken: list[str]):
    body = json.dumps({"data": ROW}).encode()
    large = {"data": [ROW] * 400}  # over inline_max_bytes (8 KiB): decoded on a thread by the data plane
    chunked = (b"POST /api/v1/predict HTTP/1.1\r\nHost: tabserve\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    with wire_server(demo_model) as port:
        answers = exchange(port, chunked, request("/api/v1/predict/batch", large), get("/healthz"))
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(request("/api/v1/predict", {"data": ROW}, "Expect: 100-continue")[:-len(body)])
            replies = Answers(sock)
            status, _, _ = replies.next()
            assert status == 100
            sock.sendall(body)
            status, _, answer = replies.next()
            assert status == 200 and isinstance(json.loads(answer)["prediction"], float)
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert len(json.loads(answers[1][2])["predictions"]) == 400
    assert taken == []


def test_pipelined_requests_are_answered_in_the_order_they_were_sent(demo_model: tabserve.Model,
                                                                     taken: list[str]):
    """Wire requests (the second one queued behind the first for the next micro-batch), a probe that uvicorn
    answers, and a chunked prediction, all on one connection in one write."""
    one = json.dumps({"data": ROW}).encode()
    chunked = (b"POST /api/v1/predict HTTP/1.1\r\nHost: tabserve\r\nX-Request-ID: e\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(one), one))
    with wire_server(demo_model) as port:
        answers = exchange(port, request("/api/v1/predict", {"data": ROW}, "X-Request-ID: a"),
                           request("/api/v1/predict", {"data": ROW}, "X-Request-ID: b"),
                           get("/healthz", "X-Request-ID: c"),
                           request("/api/v1/predict/batch", {"data": [ROW] * 3}, "X-Request-ID: d"),
                           chunked,
                           request("/api/v1/predict", {"data": ROW}, "X-Request-ID: f"))
    assert [headers["x-request-id"] for _, headers, _ in answers] == list("abcdef")
    assert [status for status, _, _ in answers] == [200] * 6
    single = {json.loads(body)["prediction"] for _, _, body in (answers[0], answers[1], answers[4], answers[5])}
    assert single == {json.loads(answers[3][2])["predictions"][0]}  # the same row: the same value, each time
    assert len(taken) >= 2  # a and b at least; what was pipelined behind the probe may wait for uvicorn


@pytest.mark.parametrize("how", ["Connection: close", "HTTP/1.0"])
def test_a_client_that_asks_to_close_gets_its_answer_then_the_connection_closes(
        demo_model: tabserve.Model, taken: list[str], how: str):
    with wire_server(demo_model) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request("/api/v1/predict", {"data": ROW}, version="1.0") if how == "HTTP/1.0"
                     else request("/api/v1/predict", {"data": ROW}, how))
        status, headers, _ = read_response(sock)
        assert status == 200 and headers["connection"] == "close"
        sock.settimeout(10)
        assert sock.recv(100) == b""  # closed by the server
    assert taken == ["/api/v1/predict"]


@pytest.fixture
def body_timeout_1s() -> Iterator[None]:
    transport.configure(transport.ClientLimits(max_header_bytes=65536, header_timeout_s=10, body_timeout_s=1))
    try:
        yield
    finally:
        transport._configured.clear()
        transport.read_limits.cache_clear()


def test_a_body_in_pieces_is_answered_and_a_stalled_one_gets_408(demo_model: tabserve.Model, taken: list[str],
                                                                 body_timeout_1s: None):
    whole = request("/api/v1/predict", {"data": ROW})
    with wire_server(demo_model) as port:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for start in range(0, len(whole), 40):
                sock.sendall(whole[start:start + 40])
                time.sleep(0.2)
            status, _, body = read_response(sock)
            assert status == 200 and isinstance(json.loads(body)["prediction"], float)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(whole[:-5])  # and never the rest
            status, headers, body = read_response(sock)
            assert status == 408 and headers["connection"] == "close" and "body_timeout_s" in body.decode()
            assert exchange(port, whole)[0][0] == 200  # others are still served
    assert taken == ["/api/v1/predict", "/api/v1/predict"]


def test_a_client_that_never_reads_its_answers_stalls_nobody_and_loses_nothing(demo_model: tabserve.Model):
    """It pipelines predictions until the kernel takes no more; another client is served meanwhile; then it
    reads an answer for every request it sent."""
    one = request("/api/v1/predict", {"data": ROW})
    with wire_server(demo_model) as port, socket.create_connection(("127.0.0.1", port)) as hostile:
        hostile.setblocking(False)
        sent, pending, deadline = 0, b"", time.monotonic() + 20
        while time.monotonic() < deadline and sent < 200_000:
            pending = pending or one
            try:
                n = hostile.send(pending)
            except BlockingIOError:
                time.sleep(0.05)
                try:  # still full a moment later: the server has stopped reading from it
                    n = hostile.send(pending)
                except BlockingIOError:
                    break
            pending = pending[n:]
            sent += not pending
        assert sent > 1000  # enough to fill the socket buffers both ways
        for _ in range(20):
            assert exchange(port, one)[0][0] == 200
        hostile.settimeout(30)
        finisher = None
        if pending:  # the rest of a request cut by the full buffer: sent while the answers are read (the
            # server reads it only once its answers drain)
            finisher = threading.Thread(target=hostile.sendall, args=(pending,), daemon=True)
            finisher.start()
            sent += 1
        replies = Answers(hostile)
        statuses = [replies.next(within=30)[0] for _ in range(sent)]
        if finisher is not None:
            finisher.join(30)
    assert statuses == [200] * sent


def test_a_client_gone_before_its_answer_leaves_the_server_serving(demo_model: tabserve.Model):
    with wire_server(demo_model) as port:
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(request("/api/v1/predict", {"data": ROW}) * 3)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        assert [s for s, _, _ in exchange(port, *[request("/api/v1/predict", {"data": ROW})] * 5)] == [200] * 5


def test_the_wire_lane_can_be_turned_off(demo_model: tabserve.Model, taken: list[str]):
    with wire_server(demo_model, wire_lane=False) as port:
        assert exchange(port, request("/api/v1/predict", {"data": ROW}))[0][0] == 200
    assert taken == []


def test_a_guarded_server_answers_through_its_guard(demo_model: tabserve.Model, taken: list[str]):
    """With a rate limit, the guard stands in front of the routes: the wire steps aside."""
    with wire_server(demo_model, rate_limit="2/minute") as port:
        statuses = [s for s, _, _ in exchange(port, *[request("/api/v1/predict", {"data": ROW})] * 3)]
    assert statuses == [200, 200, 429]
    assert taken == []


def test_slow_heads_and_stalled_bodies_do_not_stall_the_wire(demo_model: tabserve.Model, taken: list[str]):
    """50 heads dripping in and 20 wire bodies stalled half-way while 100 predictions are made: all answered,
    and each stalled one too once its body ends."""
    whole = request("/api/v1/predict", {"data": ROW})
    with wire_server(demo_model) as port:
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        try:
            for s in slow:
                s.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: ")
            for s in stalled:
                s.sendall(whole[:-10])
            time.sleep(0.5)
            with socket.create_connection(("127.0.0.1", port)) as sock:
                answers = Answers(sock)
                statuses = []
                for _ in range(100):
                    sock.sendall(whole)
                    statuses.append(answers.next()[0])
            assert statuses == [200] * 100
            for s in stalled:
                s.sendall(whole[-10:])
                assert read_response(s)[0] == 200
        finally:
            for s in slow + stalled:
                s.close()
    assert len(taken) == 120
