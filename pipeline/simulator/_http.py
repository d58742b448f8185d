"""A small, fast HTTP/1.1 server on a raw :class:`asyncio.Protocol` (keep-alive, no pipelining).

Why not aiohttp.web or uvicorn: the simulator must never be the bottleneck of a benchmark, and
parsing a request line, a few headers and a Content-Length (or chunked) body by hand costs a
few microseconds. One connection serves one request at a time: bytes of a next request that
arrive early wait in the buffer until the current response has been written.

The application is one callable, ``handle(request, connection)``; it answers through the
connection: :meth:`Connection.respond` (optionally after a delay), :meth:`Connection.hang`
(never answer) or :meth:`Connection.reset` (send part of a response, then a TCP reset).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["Connection", "HTTPRequest", "HTTPServer"]

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 256 * 1024 * 1024

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 411: "Length Required", 413: "Payload Too Large",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable"}


class HTTPRequest:
    """One parsed request: method, path (no query), query string, lower-cased headers, body."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query")

    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes,
                 keep_alive: bool) -> None:
        self.method = method
        self.path, _, self.query = target.partition("?")
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive

    def __repr__(self) -> str:
        return f"HTTPRequest({self.method} {self.path}, {len(self.body)} bytes)"


Handler = Callable[[HTTPRequest, "Connection"], None]


def _parse_chunked(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at ``start``: (body, end offset), or None if incomplete."""
    body = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip() or b"0", 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n\r\n", pos - 2)  # skip trailers, if any
            return (bytes(body), end + 4) if end >= 0 else None
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos:pos + size]
        pos += size + 2


class Connection(asyncio.Protocol):
    """One client connection; see the module docstring for how the application answers."""

    def __init__(self, server: HTTPServer) -> None:
        self._server = server
        self._loop = server.loop
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False
        self._keep_alive = True
        self._timer: asyncio.TimerHandle | None = None
        self._continued = False  # "100 Continue" already sent for the request being read
        self.on_close: Callable[[], None] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self._server.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._next_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.on_close is not None:
            callback, self.on_close = self.on_close, None
            callback()

    # -- parsing ----------------------------------------------------------------------------
    def _next_request(self) -> None:
        buf = self._buffer
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0:
            if len(buf) > MAX_HEADER_BYTES:
                self._fail(413, "request headers too large")
            return
        try:
            lines = bytes(buf[:head_end]).decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        except ValueError:
            self._fail(400, "malformed request line or header")
            return
        body_start = head_end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            try:
                parsed = _parse_chunked(buf, body_start)
            except ValueError:
                self._fail(400, "malformed chunked body")
                return
            if parsed is None:
                self._expect_continue(headers)
                return
            body, end = parsed
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self._fail(400, "bad Content-Length")
                return
            if length < 0 or length > MAX_BODY_BYTES:
                self._fail(413, "body too large")
                return
            end = body_start + length
            if len(buf) < end:
                self._expect_continue(headers)
                return
            body = bytes(buf[body_start:end])
        del buf[:end]
        connection = headers.get("connection", "").lower()
        keep_alive = (connection != "close" if version == "HTTP/1.1"
                      else connection == "keep-alive")
        self._keep_alive = keep_alive
        self._continued = False
        self._busy = True
        self._server.handler(HTTPRequest(method, target, headers, body, keep_alive), self)

    def _expect_continue(self, headers: dict[str, str]) -> None:
        """Tell a client waiting for permission (curl does, for large bodies) to send the body."""
        if (not self._continued and headers.get("expect", "").lower() == "100-continue"
                and self._transport is not None):
            self._continued = True
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _fail(self, status: int, message: str) -> None:
        body = msgspec.json.encode({"error": {"message": message, "type": "invalid_request_error",
                                              "param": None, "code": None}})
        self._buffer.clear()
        self._keep_alive = False
        self._busy = True
        self.respond(status, body)

    # -- answering --------------------------------------------------------------------------
    @staticmethod
    def encode(status: int, body: bytes, headers: list[tuple[str, str]] | None = None,
               keep_alive: bool = True,
               content_type: str = "application/json") -> bytes:
        """The bytes of a complete response."""
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
                f"content-type: {content_type}", f"content-length: {len(body)}"]
        if headers:
            head.extend(f"{k}: {v}" for k, v in headers)
        if not keep_alive:
            head.append("connection: close")
        head.append("\r\n")
        return "\r\n".join(head).encode("latin-1") + body

    def respond(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None,
                delay: float = 0.0, content_type: str = "application/json") -> None:
        """Send a response now, or after ``delay`` seconds."""
        data = self.encode(status, body, headers, self._keep_alive, content_type)
        if delay > 0:
            self._timer = self._loop.call_later(delay, self._write, data)
        else:
            self._write(data)

    def respond_raw(self, data: bytes, delay: float = 0.0) -> None:
        """Send pre-encoded response bytes (see :meth:`encode`)."""
        if delay > 0:
            self._timer = self._loop.call_later(delay, self._write, data)
        else:
            self._write(data)

    def hang(self) -> None:
        """Never answer: the connection stays open until the client or the server closes it."""

    def reset(self, partial: bytes, delay: float = 0.0) -> None:
        """Send ``partial`` (part of a response), then reset the connection (TCP RST)."""
        if delay > 0:
            self._timer = self._loop.call_later(delay, self._reset_now, partial)
        else:
            self._reset_now(partial)

    def _reset_now(self, partial: bytes) -> None:
        self._timer = None
        transport = self._transport
        if transport is None:
            return
        transport.write(partial)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:  # linger 0: close() sends RST instead of FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        transport.abort()

    def _write(self, data: bytes) -> None:
        self._timer = None
        transport = self._transport
        if transport is None:
            return
        transport.write(data)
        if self.on_close is not None:
            callback, self.on_close = self.on_close, None
            callback()
        if not self._keep_alive:
            transport.close()
            return
        self._busy = False
        if self._buffer:
            self._next_request()

    def close(self) -> None:
        """Drop the connection at once (server shutdown)."""
        if self._transport is not None:
            self._transport.abort()


class HTTPServer:
    """Serve ``handler`` on ``host:port`` (port 0: a free one) inside the running loop.

    >>> async def main():
    ...     server = HTTPServer(lambda req, conn: conn.respond(200, b"{}"))
    ...     port = await server.start("127.0.0.1", 0)
    ...     await server.stop()
    ...     return port > 0
    >>> asyncio.run(main())
    True
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]

    async def start(self, host: str, port: int) -> int:
        """Listen and return the bound port."""
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            lambda: Connection(self), host, port, reuse_address=True, backlog=1024)
        sockname: Any = self._server.sockets[0].getsockname()
        return int(sockname[1])

    async def stop(self) -> None:
        """Stop listening and drop every connection (hanging ones included)."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)  # let connection_lost callbacks run
