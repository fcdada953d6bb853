"""gRPC over HTTP/2 as an asyncio protocol on tabserve's own event loop: the unary and server-streaming calls of
grpcio's method handlers, without grpc.aio's per-call machinery.

Why: a bare ``grpc.aio`` server answering a constant costs ~250-300 µs of CPU per call (its C core's threads read
the socket and hand each completion to a poller thread that wakes the loop: three threads and their context
switches per call), more than a whole REST request. This protocol reads and writes the socket in the loop's own
callbacks, so a call costs what its frames cost to parse and build (benchmarks/grpc_stacks.py measures both).

What it speaks (RFC 9113 as a server, and the gRPC-over-HTTP/2 spec): SETTINGS, PING, WINDOW_UPDATE with flow
control both ways, RST_STREAM, GOAWAY, HEADERS with CONTINUATION and padding; header blocks decoded by the
``hpack`` package (a connection's repeated block is decoded once while its dynamic table is unchanged); our
header blocks use no dynamic table. Requests: ``application/grpc`` content type, one length-prefixed message
(``identity``, ``gzip`` or ``deflate``), ``grpc-timeout`` as a deadline, metadata (``-bin`` keys base64). No TLS
(as ``add_insecure_port``), no server push, no responses compressed.

Limits that keep one client from costing others: frames of 16 KiB, a header block of 64 KiB, ``MAX_STREAMS``
concurrent calls a connection (more are refused with REFUSED_STREAM, which clients retry), a message over
``max_receive`` bytes answered RESOURCE_EXHAUSTED as soon as its length prefix arrives, and a connection whose
answers its client does not read stops being read.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import struct
import time
import zlib
from collections.abc import Iterable
from typing import Any, NamedTuple

import grpc
import hpack

from tabserve.errors import Overloaded
from tabserve.observability.logging import get_logger

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x8, 0x9
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

MAX_FRAME = 16384  # the frames we accept (the protocol's default; we do not advertise more)
MAX_HEADER_BLOCK = 64 * 1024
MAX_STREAMS = 1000  # concurrent calls a connection may have
STREAM_WINDOW = 1 << 24  # what a client may send on a call before we credit it again
CONNECTION_WINDOW = 1 << 30
CREDIT_AT = 1 << 20  # bytes received on the connection before a WINDOW_UPDATE gives them back
MAX_WINDOW = (1 << 31) - 1
TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
RESERVED = frozenset({b"content-type", b"te", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding"})


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream) + payload


def _hpack_int(value: int, prefix: int, first: int) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A header field as a literal without indexing, new name, no Huffman: our blocks touch no dynamic table,
    so they can be built once and sent on any connection."""
    return b"\x00" + _hpack_int(len(name), 7, 0) + name + _hpack_int(len(value), 7, 0) + value


RESPONSE_HEADERS = b"\x88" + _literal(b"content-type", b"application/grpc")  # 0x88: static entry ":status: 200"
STATUS_OK = _literal(b"grpc-status", b"0")


def _percent(details: str) -> bytes:
    """grpc-message: UTF-8 with every byte outside printable ASCII, and '%', percent-encoded."""
    raw = details.encode("utf-8", "replace")
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw
    return b"".join(bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in raw)


_NAMES: dict[str, bytes] = {}  # a metadata key's name part of its literal: a server sends a few keys


def _metadata_block(metadata: Iterable[tuple[str, Any]]) -> bytes:
    block = b""
    for key, value in metadata:
        head = _NAMES.get(key)
        if head is None:
            name = key.lower().encode("ascii")
            head = b"\x00" + _hpack_int(len(name), 7, 0) + name
            if len(_NAMES) < 256:
                _NAMES[key] = head
        if key.endswith("-bin"):
            data = value if isinstance(value, bytes) else str(value).encode()
            encoded = base64.b64encode(data).rstrip(b"=")
        else:
            encoded = value.encode("ascii") if isinstance(value, str) else bytes(value)
        block += head + _hpack_int(len(encoded), 7, 0) + encoded
    return block


def _status_block(code: grpc.StatusCode, details: str | None, metadata: Iterable[tuple[str, Any]]) -> bytes:
    if code is grpc.StatusCode.OK and not details:
        block = STATUS_OK
    else:
        block = _literal(b"grpc-status", str(code.value[0]).encode())
        if details:
            block += _literal(b"grpc-message", _percent(details))
    return block + _metadata_block(metadata)


class Abort(Exception):
    """Raised by ``context.abort``: the call ends with this status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details


class CallDetails(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, Any], ...]


class Parsed:
    """A call's headers as the server reads them; a connection's repeated block reuses its Parsed."""

    __slots__ = ("_metadata", "encoding", "error", "handler", "http_status", "path", "raw", "timeout")

    def __init__(self, raw: tuple[tuple[bytes, bytes], ...], encoding: bytes) -> None:
        self.raw = raw
        self.encoding = encoding
        self.path = ""
        self.handler: Any = None
        self.timeout: float | None = None
        self.error: tuple[grpc.StatusCode, str] | None = None
        self.http_status: bytes | None = None
        self._metadata: tuple[tuple[str, Any], ...] | None = None

    def metadata(self) -> tuple[tuple[str, Any], ...]:
        """As grpcio hands it to a servicer: text values as str, ``-bin`` values base64-decoded to bytes."""
        if self._metadata is None:
            out: list[tuple[str, Any]] = []
            for name, value in self.raw:
                if name.endswith(b"-bin"):
                    try:
                        decoded: Any = base64.b64decode(value + b"=" * (-len(value) % 4), validate=True)
                    except ValueError:
                        raise ValueError(f"metadata {name.decode('latin-1')!r} is not base64") from None
                    out.append((name.decode("latin-1"), decoded))
                else:
                    out.append((name.decode("latin-1"), value.decode("latin-1")))
            self._metadata = tuple(out)
        return self._metadata


class Context:
    """What a grpcio servicer reads of ``grpc.aio.ServicerContext``: metadata, peer, trailing metadata, status,
    ``abort`` and (server streaming) ``write``."""

    __slots__ = ("_call", "_code", "_details", "_parsed", "_trailing")

    def __init__(self, call: Call, parsed: Parsed) -> None:
        self._call = call
        self._parsed = parsed
        self._trailing: tuple[tuple[str, Any], ...] = ()
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._parsed.metadata()

    def raw_metadata(self) -> tuple[tuple[bytes, bytes], ...]:
        """The metadata as it arrived: names and values as bytes (``-bin`` values still base64)."""
        return self._parsed.raw

    def peer(self) -> str:
        return self._call.connection.peer()

    def set_trailing_metadata(self, metadata: Iterable[tuple[str, Any]]) -> None:
        self._trailing = tuple(metadata)

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._trailing

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str | None:
        return self._details

    def time_remaining(self) -> float | None:
        deadline = self._call.deadline
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def cancelled(self) -> bool:
        return self._call.reset

    def done(self) -> bool:
        return self._call.ended

    async def abort(self, code: grpc.StatusCode, details: str = "",
                    trailing_metadata: Iterable[tuple[str, Any]] = ()) -> None:
        if trailing_metadata:
            self._trailing = tuple(trailing_metadata)
        raise Abort(code, details)

    async def write(self, message: Any) -> None:
        serialize = self._call.handler.response_serializer
        await self._call.send_message(serialize(message) if serialize else message)


class Call:
    """One stream: the request as it arrives, then the answer as flow control lets it go."""

    __slots__ = ("_drained", "_pending", "_trailers", "body", "connection", "deadline", "ended", "handler",
                 "headers", "headers_sent", "lease", "received_ended", "reset", "send_window", "stream", "task", "unacked")

    def __init__(self, connection: Connection, stream: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.connection = connection
        self.stream = stream
        self.headers = headers
        self.body = bytearray()
        self.lease: Any = None  # the body budget's lease while a large message arrives
        self.unacked = 0
        self.send_window = connection.peer_window
        self.received_ended = False
        self.headers_sent = False
        self.ended = False  # our END_STREAM is written (or queued behind flow control)
        self.reset = False
        self.deadline: float | None = None
        self.handler: Any = None
        self.task: asyncio.Task[None] | None = None
        self._pending = bytearray()  # DATA payload waiting for window
        self._trailers: bytes | None = None  # the trailers block, sent once _pending is out
        self._drained: asyncio.Future[None] | None = None

    def answer(self, message: bytes | None, status: bytes) -> None:
        """The whole answer of a unary call: headers, the message, trailers (or trailers only)."""
        if self.reset or self.ended:
            return
        self.ended = True
        conn = self.connection
        if message is None and not self.headers_sent:  # trailers-only: one HEADERS with END_STREAM
            conn.write_headers(self.stream, RESPONSE_HEADERS + status, END_STREAM)
            self.finish()
            return
        prefix = b"\0" + struct.pack(">I", len(message)) if message is not None else b""
        size = len(prefix) + (len(message) if message is not None else 0)
        if (not self._pending and size <= self.send_window and size <= conn.send_window
                and size <= conn.peer_max_frame and len(status) <= conn.peer_max_frame):
            out = b"" if self.headers_sent else _frame(HEADERS, END_HEADERS, self.stream, RESPONSE_HEADERS)
            self.headers_sent = True
            if size:
                out += _frame(DATA, 0, self.stream, prefix + message)  # type: ignore[operator]
            self.send_window -= size
            conn.send_window -= size
            conn.write(out + _frame(HEADERS, END_HEADERS | END_STREAM, self.stream, status))
            self.finish()
            return
        if not self.headers_sent:
            conn.write_headers(self.stream, RESPONSE_HEADERS, 0)
            self.headers_sent = True
        if message is not None:
            self._pending += prefix
            self._pending += message
        self._trailers = status
        self.flush()

    async def send_message(self, message: bytes) -> None:
        """One message of a streaming answer; waits while the client's window is closed."""
        if self.reset or self.ended:
            raise asyncio.CancelledError
        if not self.headers_sent:
            self.connection.write_headers(self.stream, RESPONSE_HEADERS, 0)
            self.headers_sent = True
        self._pending += b"\0" + struct.pack(">I", len(message)) + message
        self.flush()
        while self._pending and not self.reset:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    def flush(self) -> None:
        conn = self.connection
        while self._pending and self.send_window > 0 and conn.send_window > 0:
            size = min(len(self._pending), self.send_window, conn.send_window, conn.peer_max_frame)
            chunk = bytes(self._pending[:size])
            del self._pending[:size]
            self.send_window -= size
            conn.send_window -= size
            conn.write(_frame(DATA, 0, self.stream, chunk))
        if self._pending:
            conn.blocked.add(self)
            return
        conn.blocked.discard(self)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self._trailers is not None:
            conn.write_headers(self.stream, self._trailers, END_STREAM)
            self._trailers = None
            self.finish()

    def finish(self) -> None:
        """Our side is done; a client still sending is told to stop (RFC 9113 §8.1: RST_STREAM NO_ERROR)."""
        conn = self.connection
        if not self.received_ended:
            conn.write(_frame(RST_STREAM, 0, self.stream, struct.pack(">I", NO_ERROR)))
        conn.close_stream(self)

    def release(self) -> None:
        """The message's bytes are no longer held here (answered, or handed to the data plane, which charges
        them itself)."""
        if self.lease is not None:
            self.lease.release()
            self.lease = None

    def cancel(self) -> None:
        """The client reset the stream or went away: no answer will be read."""
        self.release()
        self.reset = True
        self.connection.blocked.discard(self)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self.task is not None and not self.task.done():
            self.task.cancel()


class Connection(asyncio.Protocol):
    def __init__(self, server: Http2Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.preface = False
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = MAX_HEADER_BLOCK
        self._table_changes = 0
        add = self.decoder.header_table.add

        def counted_add(name: bytes, value: bytes) -> Any:
            self._table_changes += 1
            return add(name, value)

        self.decoder.header_table.add = counted_add  # type: ignore[method-assign]
        self._last_block: bytes | None = None
        self._last_headers: list[tuple[bytes, bytes]] = []
        self._last_changes = -1
        self.parsed_from: list[tuple[bytes, bytes]] | None = None
        self.parsed: Parsed | None = None
        self.calls: dict[int, Call] = {}
        self.blocked: set[Call] = set()
        self.last_stream = 0
        self.continuing: tuple[int, int, bytearray] | None = None  # (stream, flags, block so far)
        self.peer_window = 65535
        self.peer_max_frame = 16384
        self.send_window = 65535
        self.unacked = 0
        self.going_away = False
        self.closed = False
        self._peer: str | None = None

    # -- asyncio -------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        settings = struct.pack(">HIHIHIHI", S_ENABLE_PUSH, 0, S_MAX_CONCURRENT_STREAMS, MAX_STREAMS,
                               S_INITIAL_WINDOW_SIZE, STREAM_WINDOW, S_MAX_HEADER_LIST_SIZE, MAX_HEADER_BLOCK)
        self.write(_frame(SETTINGS, 0, 0, settings)
                   + _frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", CONNECTION_WINDOW - 65535)))
        if self.server.stopping:
            self.go_away(NO_ERROR)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for call in list(self.calls.values()):
            call.cancel()
        self.calls.clear()

    def pause_writing(self) -> None:  # the client does not read its answers: stop reading its calls
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        pos = 0
        if not self.preface:
            if len(buf) < 24:
                if not PREFACE.startswith(buf):
                    self.abort_connection(PROTOCOL_ERROR)
                else:
                    self.buffer = buf
                return
            if buf[:24] != PREFACE:
                self.abort_connection(PROTOCOL_ERROR)
                return
            self.preface, pos = True, 24
        end = len(buf)
        try:
            while end - pos >= 9 and not self.closed:
                length = int.from_bytes(buf[pos:pos + 3], "big")
                if length > MAX_FRAME:
                    self.abort_connection(FRAME_SIZE_ERROR)
                    return
                stop = pos + 9 + length
                if stop > end:
                    break
                kind, flags = buf[pos + 3], buf[pos + 4]
                stream = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
                self.on_frame(kind, flags, stream, buf[pos + 9:stop])
                pos = stop
        except Http2Error as exc:
            self.abort_connection(exc.code)
            return
        self.buffer = buf[pos:] if pos < end else b""

    # -- frames --------------------------------------------------------------------------------------------

    def on_frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if self.continuing is not None and (kind != CONTINUATION or stream != self.continuing[0]):
            raise Http2Error(PROTOCOL_ERROR)
        if kind == DATA:
            self.on_data(flags, stream, payload)
        elif kind == HEADERS:
            if stream == 0 or stream % 2 == 0:
                raise Http2Error(PROTOCOL_ERROR)
            if flags & PADDED:
                if not payload or payload[0] >= len(payload):
                    raise Http2Error(PROTOCOL_ERROR)
                payload = payload[1:len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            if flags & END_HEADERS:
                self.on_headers(stream, flags, payload)
            else:
                self.continuing = (stream, flags, bytearray(payload))
        elif kind == CONTINUATION:
            if self.continuing is None:
                raise Http2Error(PROTOCOL_ERROR)
            block = self.continuing[2]
            block += payload
            if len(block) > MAX_HEADER_BLOCK:
                raise Http2Error(PROTOCOL_ERROR)
            if flags & END_HEADERS:
                stream, first_flags, _ = self.continuing
                self.continuing = None
                self.on_headers(stream, first_flags, bytes(block))
        elif kind == SETTINGS:
            self.on_settings(flags, stream, payload)
        elif kind == WINDOW_UPDATE:
            self.on_window_update(stream, payload)
        elif kind == PING:
            if stream != 0 or len(payload) != 8:
                raise Http2Error(PROTOCOL_ERROR if stream else FRAME_SIZE_ERROR)
            if not flags & ACK:
                self.write(_frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            if stream == 0 or len(payload) != 4:
                raise Http2Error(PROTOCOL_ERROR)
            call = self.calls.pop(stream, None)
            if call is not None:
                call.cancel()
        elif kind == GOAWAY:
            self.going_away = True
            if not self.calls:
                self.close()
        elif kind == PUSH_PROMISE:
            raise Http2Error(PROTOCOL_ERROR)
        # PRIORITY and unknown frame types are ignored (RFC 9113 §5.5)

    def on_settings(self, flags: int, stream: int, payload: bytes) -> None:
        if stream != 0:
            raise Http2Error(PROTOCOL_ERROR)
        if flags & ACK:
            return
        if len(payload) % 6:
            raise Http2Error(FRAME_SIZE_ERROR)
        for i in range(0, len(payload), 6):
            key, value = struct.unpack(">HI", payload[i:i + 6])
            if key == S_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise Http2Error(FLOW_CONTROL_ERROR)
                delta, self.peer_window = value - self.peer_window, value
                for call in self.calls.values():
                    call.send_window += delta
            elif key == S_MAX_FRAME_SIZE:
                if not 16384 <= value < 1 << 24:
                    raise Http2Error(PROTOCOL_ERROR)
                self.peer_max_frame = value
        self.write(_frame(SETTINGS, ACK, 0))
        self.flush_blocked()

    def on_window_update(self, stream: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise Http2Error(FRAME_SIZE_ERROR)
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream == 0:
            if increment == 0 or self.send_window + increment > MAX_WINDOW:
                raise Http2Error(PROTOCOL_ERROR if increment == 0 else FLOW_CONTROL_ERROR)
            self.send_window += increment
            self.flush_blocked()
            return
        call = self.calls.get(stream)
        if call is not None and increment:
            call.send_window += increment
            if call in self.blocked:
                call.flush()

    def flush_blocked(self) -> None:
        for call in list(self.blocked):
            if self.send_window <= 0:
                return
            call.flush()

    def on_headers(self, stream: int, flags: int, block: bytes) -> None:
        if block == self._last_block and self._table_changes == self._last_changes:
            headers = self._last_headers  # the same block on an unchanged table decodes the same
        else:
            changes, size = self._table_changes, self.decoder.header_table.maxsize
            try:
                headers = self.decoder.decode(block, raw=True)
            except hpack.HPACKError:
                raise Http2Error(COMPRESSION_ERROR) from None
            if self.decoder.header_table.maxsize != size:
                self._table_changes += 1
            if self._table_changes == changes:
                self._last_block, self._last_headers, self._last_changes = block, headers, changes
        call = self.calls.get(stream)
        if call is not None:  # the request's trailers
            if not flags & END_STREAM:
                self.reset_stream(stream, PROTOCOL_ERROR)
                return
            self.end_request(call)
            return
        if stream <= self.last_stream:
            return  # a stream we answered already; ignored
        self.last_stream = stream
        if self.going_away or len(self.calls) >= MAX_STREAMS:
            self.reset_stream(stream, REFUSED_STREAM)  # never processed: clients retry it elsewhere
            return
        call = Call(self, stream, headers)
        self.calls[stream] = call
        if flags & END_STREAM:
            self.end_request(call)

    def on_data(self, flags: int, stream: int, payload: bytes) -> None:
        if stream == 0:
            raise Http2Error(PROTOCOL_ERROR)
        length = len(payload)
        self.unacked += length
        if self.unacked >= CREDIT_AT:
            self.write(_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.unacked)))
            self.unacked = 0
        if flags & PADDED:
            if not payload or payload[0] >= length:
                raise Http2Error(PROTOCOL_ERROR)
            payload = payload[1:length - payload[0]]
        call = self.calls.get(stream)
        if call is None:
            if stream > self.last_stream:
                raise Http2Error(PROTOCOL_ERROR)  # DATA on a stream never opened
            return  # on a stream closed or answered already: counted for the window, dropped
        if call.received_ended:
            self.reset_stream(stream, STREAM_CLOSED)
            return
        body = call.body
        body += payload
        server = self.server
        if len(body) >= 5:
            declared = int.from_bytes(body[1:5], "big")
            refusal = None
            if declared > server.max_receive:
                refusal = (grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"Received message larger than max ({declared} vs. {server.max_receive})")
            elif len(body) > declared + 5:
                refusal = (grpc.StatusCode.INVALID_ARGUMENT, "a unary call takes one request message")
            if refusal is None and server.budget is not None and (call.lease is not None
                                                                  or declared > server.budget.free_bytes):
                # a large message is held against the process's body budget while it arrives (api/body.py)
                if call.lease is None:
                    call.lease = server.budget.lease()
                    size = len(body)
                else:
                    size = len(payload)
                try:
                    call.lease.charge(size)
                except Overloaded as exc:
                    refusal = (grpc.StatusCode.UNAVAILABLE, exc.message)
            if refusal is not None:
                call.received_ended = bool(flags & END_STREAM)  # if not, finish() tells the client to stop
                body.clear()
                server.refuse(call, *refusal)
                return
        if flags & END_STREAM:
            self.end_request(call)
            return
        call.unacked += length
        if call.unacked >= STREAM_WINDOW // 2:
            self.write(_frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", call.unacked)))
            call.unacked = 0

    def end_request(self, call: Call) -> None:
        call.received_ended = True
        if call.handler is None and not call.ended:
            self.server.dispatch(call)

    # -- writing -------------------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def write_headers(self, stream: int, block: bytes, flags: int) -> None:
        size = self.peer_max_frame
        if len(block) <= size:
            self.write(_frame(HEADERS, flags | END_HEADERS, stream, block))
            return
        out = [_frame(HEADERS, flags, stream, block[:size])]
        for i in range(size, len(block), size):
            last = i + size >= len(block)
            out.append(_frame(CONTINUATION, END_HEADERS if last else 0, stream, block[i:i + size]))
        self.write(b"".join(out))

    def reset_stream(self, stream: int, code: int) -> None:
        self.write(_frame(RST_STREAM, 0, stream, struct.pack(">I", code)))
        call = self.calls.pop(stream, None)
        if call is not None:
            call.cancel()

    def close_stream(self, call: Call) -> None:
        call.release()
        if self.calls.get(call.stream) is call:
            del self.calls[call.stream]
        if self.going_away and not self.calls:
            self.close()

    def go_away(self, code: int) -> None:
        """No new calls on this connection; the ones it has (up to ``last_stream``) are answered."""
        if not self.going_away or code != NO_ERROR:
            self.write(_frame(GOAWAY, 0, 0, struct.pack(">II", self.last_stream, code)))
        self.going_away = True
        if not self.calls:
            self.close()

    def abort_connection(self, code: int) -> None:
        self.write(_frame(GOAWAY, 0, 0, struct.pack(">II", self.last_stream, code)))
        self.close()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()  # what is buffered is still written

    def peer(self) -> str:
        if self._peer is None:
            name = self.transport.get_extra_info("peername") if self.transport is not None else None
            if not name:
                self._peer = "unknown"
            elif ":" in name[0]:
                self._peer = f"ipv6:[{name[0]}]:{name[1]}"
            else:
                self._peer = f"ipv4:{name[0]}:{name[1]}"
        return self._peer


class Http2Error(Exception):
    """A connection error (RFC 9113 §5.4.1): GOAWAY with this code, then the connection closes."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Http2Server:
    """The server: grpcio's generic handlers in, ``listen``, ``stop(grace)`` (as ``grpc.aio.Server``)."""

    def __init__(self, *, max_receive: int, max_concurrent: int | None = None, budget: Any = None) -> None:
        self.max_receive = max_receive
        self.budget = budget  # api/body.py's BodyBudget: request bytes held by the process, all protocols
        self.max_concurrent = max_concurrent
        self.generic: list[Any] = []
        self.methods: dict[str, Any] = {}
        self.connections: set[Connection] = set()
        self.active: set[asyncio.Task[None]] = set()
        self.stopping = False
        self._listener: asyncio.Server | None = None
        self._stopped: asyncio.Event | None = None
        self.log = get_logger("tabserve.grpc")

    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        """grpcio's registered-method fast path; the generic handlers given with it serve the same methods."""

    async def listen(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        # SO_REUSEPORT as grpcio sets it: several uvicorn workers bind one port, the kernel spreads connections
        self._listener = await loop.create_server(lambda: Connection(self), host or None, port, reuse_port=True,
                                                  backlog=1024)
        return self._listener.sockets[0].getsockname()[1]

    def handler(self, path: str, metadata: tuple[tuple[str, Any], ...]) -> Any:
        found = self.methods.get(path)
        if found is None:
            for generic in self.generic:
                found = generic.service(CallDetails(path, metadata))
                if found is not None:
                    self.methods[path] = found  # the generic handlers here are fixed tables
                    break
        return found

    def refuse(self, call: Call, code: grpc.StatusCode, details: str) -> None:
        call.answer(None, _status_block(code, details, ()))

    def parse(self, headers: list[tuple[bytes, bytes]]) -> Parsed:
        """What a call's headers ask for: the method's handler and the call's metadata, or why not."""
        method = path = timeout = None
        content_type = b""
        encoding = b"identity"
        raw: list[tuple[bytes, bytes]] = []
        for name, value in headers:
            if name[:1] == b":":
                if name == b":path":
                    path = value
                elif name == b":method":
                    method = value
            elif name in RESERVED:
                if name == b"content-type":
                    content_type = value
                elif name == b"grpc-timeout":
                    timeout = value
                elif name == b"grpc-encoding":
                    encoding = value
            else:
                raw.append((name, value))
        parsed = Parsed(tuple(raw), encoding)
        if method != b"POST" or path is None or not content_type.startswith(b"application/grpc"):
            # not a gRPC call (RFC 9113 8.3): an HTTP answer, as grpc's own servers give
            parsed.http_status = b"\x00\x07:status" + (b"\x03415" if method == b"POST" else b"\x03405")
            return parsed
        try:
            parsed.metadata()
        except ValueError as exc:
            parsed.error = (grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return parsed
        try:
            parsed.path = path.decode("ascii")
        except UnicodeDecodeError:
            parsed.error = (grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            return parsed
        handler = self.handler(parsed.path, parsed.metadata())
        if handler is None or handler.request_streaming:
            parsed.error = (grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {parsed.path}")
            return parsed
        parsed.handler = handler
        if timeout is not None:
            try:
                parsed.timeout = int(timeout[:-1]) * TIMEOUT_UNITS[timeout[-1:]]
            except (KeyError, ValueError):
                parsed.error = (grpc.StatusCode.INVALID_ARGUMENT, f"grpc-timeout {timeout!r} is malformed")
        return parsed

    def dispatch(self, call: Call) -> None:
        conn = call.connection
        headers = call.headers
        if headers is conn.parsed_from:  # the connection's repeated header block: parsed once
            parsed = conn.parsed
        else:
            parsed = self.parse(headers)
            if headers is conn._last_headers:
                conn.parsed_from, conn.parsed = headers, parsed
        if parsed.http_status is not None:
            conn.write_headers(call.stream, parsed.http_status, END_STREAM)
            call.ended = True
            call.finish()
            return
        if parsed.error is not None:
            self.refuse(call, *parsed.error)
            return
        if self.stopping:
            self.refuse(call, grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            return
        if self.max_concurrent is not None and len(self.active) >= self.max_concurrent:
            self.refuse(call, grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!")
            return
        if parsed.timeout is not None:
            call.deadline = time.monotonic() + parsed.timeout
        handler = call.handler = parsed.handler
        task = asyncio.get_running_loop().create_task(self.run(call, handler, parsed))
        call.task = task
        self.active.add(task)
        task.add_done_callback(self.active.discard)

    async def run(self, call: Call, handler: Any, parsed: Parsed) -> None:
        context = Context(call, parsed)
        try:
            request = self.request(call, handler, parsed.encoding)
            if call.deadline is None:
                result = await self.invoke(handler, request, context, call)
            else:
                async with asyncio.timeout_at(asyncio.get_running_loop().time()
                                              + (call.deadline - time.monotonic())):
                    result = await self.invoke(handler, request, context, call)
            code = context._code or grpc.StatusCode.OK
            status = _status_block(code, context._details, context._trailing)
            if handler.unary_unary is not None and code is grpc.StatusCode.OK:
                serialize = handler.response_serializer
                call.answer(serialize(result) if serialize else result, status)
            else:
                call.answer(None, status)
        except Abort as abort:
            call.answer(None, _status_block(abort.code, abort.details, context._trailing))
        except TimeoutError:
            call.answer(None, _status_block(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", ()))
        except asyncio.CancelledError:
            if not call.reset:  # cut by the shutdown's grace, not by the client
                call.answer(None, _status_block(grpc.StatusCode.UNAVAILABLE, "the server is shutting down", ()))
        except Exception as exc:  # a handler's bug: UNKNOWN, as grpcio answers it
            self.log.error("grpc_handler_failed", stream=call.stream, error=repr(exc), exc_info=exc)
            call.answer(None, _status_block(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}", ()))

    def request(self, call: Call, handler: Any, encoding: bytes) -> Any:
        body = call.body
        if len(body) < 5 or int.from_bytes(body[1:5], "big") != len(body) - 5:
            raise Abort(grpc.StatusCode.INTERNAL if body else grpc.StatusCode.UNIMPLEMENTED,
                        "the request is not one length-prefixed message" if body else
                        "a unary call needs exactly one request message")
        message = bytes(body[5:]) if len(body) > 5 else b""
        call.body = bytearray()
        call.release()
        if body[0]:
            if encoding == b"gzip":
                message = _inflate(message, 16 + zlib.MAX_WBITS, self.max_receive)
            elif encoding == b"deflate":
                message = _inflate(message, zlib.MAX_WBITS, self.max_receive)
            else:
                raise Abort(grpc.StatusCode.UNIMPLEMENTED, f"grpc-encoding {encoding.decode('latin-1')!r} is "
                            "not supported: send identity, gzip or deflate")
        deserialize = handler.request_deserializer
        if deserialize is None:
            return message
        try:
            return deserialize(message)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError and kin
            raise Abort(grpc.StatusCode.INTERNAL, "Exception deserializing request!") from None

    async def invoke(self, handler: Any, request: Any, context: Context, call: Call) -> Any:
        if handler.unary_unary is not None:
            return await handler.unary_unary(request, context)
        result = handler.unary_stream(request, context)
        if inspect.isasyncgen(result):
            serialize = handler.response_serializer
            async for message in result:
                await call.send_message(serialize(message) if serialize else message)
            return None
        if inspect.isawaitable(result):
            await result
        return None

    async def stop(self, grace: float | None) -> None:
        """New calls refused (GOAWAY: clients retry them elsewhere), calls in flight get ``grace`` seconds,
        then are answered UNAVAILABLE; the connections close."""
        self.stopping = True
        if self._listener is not None:
            self._listener.close()
        for conn in list(self.connections):
            conn.go_away(NO_ERROR)
        pending = set(self.active)
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5)
        for conn in list(self.connections):
            conn.close()
        await asyncio.sleep(0)  # the transports' close callbacks


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise Abort(grpc.StatusCode.INTERNAL, f"the compressed message is corrupt: {exc}") from None
    if len(out) > limit:
        raise Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"Received message larger than max (over {limit} bytes "
                    "once decompressed)")
    return out


__all__ = ["Abort", "Context", "Http2Server"]
