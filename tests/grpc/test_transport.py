"""The gRPC port's HTTP/2 (tabserve/grpc/http2.py) as clients meet it: compressed requests, answers larger than
the client's flow-control window, many calls on one connection, calls it does not serve, clients that speak
something else or read nothing. Raw frames where grpcio's client would not misbehave on purpose."""

from __future__ import annotations

import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import hpack
import httpx
import numpy as np
import pytest

from tabserve.grpc import inference_pb2 as pb
from tabserve.grpc.inference_pb2_grpc import GRPCInferenceServiceStub
from tests.grpc.conftest import fp64, grpc_server, infer_request

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
METHOD = "/inference.GRPCInferenceService/ModelInfer"
ROW = [0.1, 0.2, 0.3, 0.4, 0.5]


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream) + payload


def rest_predictions(base: str, rows: list[list[float]]) -> list[float]:
    answer = httpx.post(f"{base}/v2/models/demo/infer", timeout=60, json={
        "inputs": [{"name": "X", "datatype": "FP64", "shape": [len(rows), 5], "data": rows}]}).json()
    return answer["outputs"][0]["data"]


class RawClient:
    """HTTP/2 by hand: the frames a test wants sent, the frames the server sends back."""

    def __init__(self, address: str, settings: bytes = b"") -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.encoder = hpack.Encoder()
        self.buffer = b""
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings))

    def request(self, stream: int, body: bytes, content_type: str = "application/grpc") -> bytes:
        headers = [(":method", "POST"), (":scheme", "http"), (":path", METHOD), (":authority", "x"),
                   ("content-type", content_type), ("te", "trailers")]
        message = b"\0" + struct.pack(">I", len(body)) + body
        chunks = [message[i:i + 16384] for i in range(0, len(message), 16384)]  # the largest frame allowed
        return frame(HEADERS, 0x4, stream, self.encoder.encode(headers)) + b"".join(
            frame(DATA, 0x1 if i == len(chunks) - 1 else 0, stream, chunk) for i, chunk in enumerate(chunks))

    def read_frame(self) -> tuple[int, int, int, bytes] | None:
        """The next frame, or None once the server has closed the connection."""
        while True:
            if len(self.buffer) >= 9:
                length = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) >= 9 + length:
                    head, self.buffer = self.buffer[:9 + length], self.buffer[9 + length:]
                    return head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, head[9:]
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def test_gzip_compressed_request_answers_as_the_plain_one(server):
    request = infer_request("demo", X=("FP64", [2, 5], ROW * 2))
    with grpc.insecure_channel(server[1]) as plain, \
            grpc.insecure_channel(server[1], compression=grpc.Compression.Gzip) as gzipped:
        expected = GRPCInferenceServiceStub(plain).ModelInfer(request, timeout=30)
        answer = GRPCInferenceServiceStub(gzipped).ModelInfer(request, timeout=30)
    assert list(answer.outputs[0].contents.fp64_contents) == list(expected.outputs[0].contents.fp64_contents)


def test_an_answer_larger_than_the_client_window_waits_for_its_window_updates(server):
    rows = (np.arange(10_000 * 5, dtype="<f8").reshape(10_000, 5) % 7) / 7  # the most rows a call may have
    message = pb.ModelInferRequest(model_name="demo")
    message.inputs.add(name="X", datatype="FP64", shape=[10_000, 5])
    message.raw_input_contents.append(rows.tobytes())
    client = RawClient(server[1], settings=struct.pack(">HI", 0x4, 1000))  # a 1,000-byte window per stream
    try:
        client.sock.sendall(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30))  # the connection's is wide
                            + client.request(1, message.SerializeToString()))
        received, trailers = bytearray(), None
        window_opened = False
        while trailers is None:
            got = client.read_frame()
            assert got is not None, "the server closed the connection"
            kind, flags, stream, payload = got
            if kind == DATA and stream == 1:
                received += payload
                assert window_opened or len(received) <= 1000, "sent past the client's window"
                if len(received) == 1000 and not window_opened:  # then the client reads the rest
                    client.sock.sendall(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1 << 30)))
                    window_opened = True
            elif kind == HEADERS and stream == 1 and flags & 0x1:
                trailers = dict(hpack.Decoder().decode(payload))
    finally:
        client.close()
    assert window_opened and trailers["grpc-status"] == "0"
    answer = pb.ModelInferResponse.FromString(bytes(received[5:]))
    values = np.frombuffer(answer.raw_output_contents[0], dtype="<f8")
    assert len(values) == 10_000
    assert values[:50].tolist() == rest_predictions(server[0], rows[:50].tolist())


def test_calls_multiplexed_on_one_connection_each_get_their_own_answer(server):
    rows = [[i / 10, 0.2, 0.3, 0.4, i / 100] for i in range(200)]
    expected = rest_predictions(server[0], rows)
    with grpc.insecure_channel(server[1]) as channel:  # one channel: one HTTP/2 connection
        stub = GRPCInferenceServiceStub(channel)
        futures = [stub.ModelInfer.future(infer_request("demo", X=("FP64", [1, 5], row)), timeout=60)
                   for row in rows]
        answers = [f.result().outputs[0].contents.fp64_contents[0] for f in futures]
    assert answers == expected


def test_a_method_it_does_not_serve_is_unimplemented(server):
    with grpc.insecure_channel(server[1]) as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary("/inference.GRPCInferenceService/Nope")(b"", timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "/inference.GRPCInferenceService/Nope" in caught.value.details()


def test_http1_on_the_grpc_port_is_closed_with_goaway(server):
    host, port = server[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v2/models/demo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        data = b""
        while chunk := sock.recv(65536):  # the server closes: recv returns b"" (a hang fails by timeout)
            data += chunk
    kinds, pos = [], 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        kinds.append((data[pos + 3], data[pos + 9:pos + 9 + length]))
        pos += 9 + length
    goaways = [payload for kind, payload in kinds if kind == GOAWAY]
    assert len(goaways) == 1 and goaways[0][4:8] == struct.pack(">I", 0x1)  # PROTOCOL_ERROR


def test_a_request_that_is_not_grpc_gets_415(server):
    client = RawClient(server[1])
    try:
        client.sock.sendall(client.request(1, b"{}", content_type="application/json"))
        while True:
            got = client.read_frame()
            assert got is not None
            kind, flags, stream, payload = got
            if kind == HEADERS and stream == 1:
                break
    finally:
        client.close()
    assert dict(hpack.Decoder().decode(payload))[":status"] == "415"
    assert flags & 0x1  # END_STREAM: nothing else follows


def test_a_client_that_reads_no_answers_does_not_stall_others(server):
    """2,000 calls sent and none of their answers read: that connection stops being read, the others are
    served (the loop never waits on it)."""
    body = infer_request("demo", X=("FP64", [1, 5], ROW)).SerializeToString()
    greedy = RawClient(server[1])
    greedy.sock.settimeout(0.5)
    sent = threading.Event()

    def flood() -> None:
        payload = b"".join(greedy.request(1 + 2 * i, body) for i in range(2000))
        try:
            greedy.sock.sendall(payload)
        except OSError:  # its buffers full (the server stopped reading it): the point
            pass
        sent.set()

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)
        with grpc.insecure_channel(server[1]) as channel:
            stub = GRPCInferenceServiceStub(channel)
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda _: stub.ModelInfer(
                    infer_request("demo", X=("FP64", [1, 5], ROW)), timeout=30), range(20)))
        assert all(a.outputs for a in answers)
    finally:
        greedy.close()
        thread.join(timeout=30)
    with grpc.insecure_channel(server[1]) as channel:  # and the server is still whole
        assert GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest(), timeout=30).live


def test_a_frame_over_16_kib_ends_the_connection_with_frame_size_error(server):
    client = RawClient(server[1])
    try:
        client.sock.sendall(frame(PING, 0, 0, b"\0" * 20_000))
        codes = []
        while (got := client.read_frame()) is not None:
            if got[0] == GOAWAY:
                codes.append(int.from_bytes(got[3][4:8], "big"))
    finally:
        client.close()
    assert codes == [0x6]  # FRAME_SIZE_ERROR, then the connection closed


def test_fp64_answers_equal_rest_for_raw_and_typed_contents(server):
    """The transport carries the codec's bytes unchanged: raw in, raw out; typed in, typed out."""
    rows = [ROW, [0.5, 0.4, 0.3, 0.2, 0.1]]
    typed = infer_request("demo", X=("FP64", [2, 5], [v for row in rows for v in row]))
    raw = pb.ModelInferRequest(model_name="demo")
    raw.inputs.add(name="X", datatype="FP64", shape=[2, 5])
    raw.raw_input_contents.append(fp64(rows).tobytes())
    with grpc.insecure_channel(server[1]) as channel:
        stub = GRPCInferenceServiceStub(channel)
        typed_answer = list(stub.ModelInfer(typed, timeout=30).outputs[0].contents.fp64_contents)
        raw_answer = np.frombuffer(stub.ModelInfer(raw, timeout=30).raw_output_contents[0], dtype="<f8").tolist()
    assert typed_answer == raw_answer == rest_predictions(server[0], rows)


def read_status(client: RawClient, stream: int) -> dict[str, str]:
    """The trailers (or trailers-only answer) of ``stream``."""
    while True:
        got = client.read_frame()
        assert got is not None, "the server closed the connection"
        kind, flags, sid, payload = got
        if kind == HEADERS and sid == stream and flags & 0x1:
            return dict(hpack.Decoder().decode(payload))


def test_a_unary_call_with_two_messages_is_invalid_argument(server):
    body = infer_request("demo", X=("FP64", [1, 5], ROW)).SerializeToString()
    client = RawClient(server[1])
    try:
        two = client.request(1, body)
        message = b"\0" + struct.pack(">I", len(body)) + body
        client.sock.sendall(two[:-(9 + len(message))] + frame(DATA, 0, 1, message) + frame(DATA, 0x1, 1, message))
        status = read_status(client, 1)
    finally:
        client.close()
    assert status["grpc-status"] == str(grpc.StatusCode.INVALID_ARGUMENT.value[0])
    assert "one request message" in status["grpc-message"]


def test_large_messages_arriving_at_once_share_the_body_budget(demo_bundle):
    """Two 900 KB messages still arriving, with max_inflight_body_bytes at 1 MiB: the first is held, the second
    is refused UNAVAILABLE once its bytes would pass the budget (as REST answers 503), and nothing piles up."""
    env = {"TABSERVE_MAX_INFLIGHT_BODY_BYTES": str(1 << 20)}
    with grpc_server(str(demo_bundle), "--no-access-log", env=env) as (_, address):
        client = RawClient(address)
        try:
            encoder = client.encoder
            headers = [(":method", "POST"), (":scheme", "http"), (":path", METHOD), (":authority", "x"),
                       ("content-type", "application/grpc"), ("te", "trailers")]
            prefix = b"\0" + struct.pack(">I", 900_000)
            chunk = b"\0" * 16_000
            first = frame(HEADERS, 0x4, 1, encoder.encode(headers)) + frame(DATA, 0, 1, prefix) + b"".join(
                frame(DATA, 0, 1, chunk) for _ in range(40))  # 640 KB of stream 1, not finished
            second = frame(HEADERS, 0x4, 3, encoder.encode(headers)) + frame(DATA, 0, 3, prefix) + b"".join(
                frame(DATA, 0, 3, chunk) for _ in range(40))
            client.sock.sendall(first + second)
            status = read_status(client, 3)
        finally:
            client.close()
    assert status["grpc-status"] == str(grpc.StatusCode.UNAVAILABLE.value[0])
    assert "max_inflight_body_bytes" in status["grpc-message"]
