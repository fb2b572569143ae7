"""A real webhook receiver on loopback, and a guard that keeps tests on loopback.

``Receiver`` is an aiohttp web server on ``127.0.0.1`` (a free port) that records every
request it gets and answers what the test tells it to::

    async with Receiver() as receiver:
        receiver.respond(500)                      # every request from now on
        receiver.enqueue(503, Reply(302, headers={"Location": "/x"}))  # the next two first
        receiver.respond_with(lambda request: Reply(200 if request.body else 400))
        receiver.respond(200, delay=30)            # stall: answer after 30 s (or at close)
        receiver.enqueue(Reply(reset=True))        # reset the connection instead of answering
        ...                                        # POST to receiver.url
        [request] = await receiver.wait_for_requests(1)
        assert receiver.connections_accepted == 1

``loopback_only_connections()`` makes any socket connect to a non-loopback address fail
(and logs every attempt), so a test that goes wrong can't send a packet off the machine.
``unused_port()`` gives a loopback port where connections are refused.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict


@dataclass(frozen=True)
class Reply:
    """What the receiver answers to one request."""

    status: int = 200
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = field(default_factory=dict)
    """A mapping, or ``(name, value)`` pairs to send a name more than once."""
    body: bytes = b""
    delay: float = 0.0
    """Seconds to stall before answering; a closing receiver stops stalling."""
    reset: bool = False
    """Answer nothing: after any delay, reset the connection (a TCP RST, not a FIN)."""


@dataclass(frozen=True)
class ReceivedRequest:
    """One request exactly as it arrived."""

    method: str
    path: str
    """Path and query string, as sent."""
    headers: tuple[tuple[str, str], ...]
    """Every header line in arrival order, names in the case they were sent."""
    body: bytes
    received_at: float
    """``time.monotonic()`` when the request line and headers had arrived."""
    connection: int
    """Which TCP connection the request came on: 1 for the first one accepted, and so on."""

    def header(self, name: str) -> str | None:
        """The first value of a header, matched case-insensitively, or ``None``."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


ReplyRule = Callable[[ReceivedRequest], Reply]


class Receiver:
    """A real HTTP server on ``127.0.0.1`` that records requests and answers on demand.

    Replies are chosen per request: first from the queue filled by ``enqueue`` (one reply
    per request, in order), then from the standing rule set by ``respond`` or
    ``respond_with`` (200 with an empty body until told otherwise). Both can be changed
    while requests are in flight.
    """

    def __init__(self, reply: Reply | None = None, *, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[ReceivedRequest] = []
        self.connections_accepted = 0
        self._standing: ReplyRule = _always(reply or Reply())
        self._queued: deque[Reply] = deque()
        self._arrived = asyncio.Event()
        self._closing = asyncio.Event()
        self._connection_numbers: dict[RequestHandler, int] = {}
        self._web_server: web.Server | None = None
        self._tcp_server: asyncio.Server | None = None
        self._port: int | None = None
        self._tls = tls

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the receiver is not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/`` (``https`` when serving TLS)."""
        return self.url_for("/")

    def url_for(self, path: str) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def respond(
        self,
        status: int = 200,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        delay: float = 0.0,
    ) -> None:
        """Answer every later request this way (after any queued replies)."""
        self._standing = _always(Reply(status, dict(headers or {}), body, delay))

    def respond_with(self, rule: ReplyRule) -> None:
        """Answer every later request with ``rule(request)`` (after any queued replies)."""
        self._standing = rule

    def enqueue(self, *replies: Reply | int) -> None:
        """Answer the next requests with these replies, one each, in order."""
        self._queued.extend(Reply(r) if isinstance(r, int) else r for r in replies)

    async def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Wait until at least ``count`` requests have arrived; all requests so far."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return list(self.requests)

    async def start(self) -> None:
        self._web_server = web.Server(self._handle, access_log=None)
        loop = asyncio.get_running_loop()
        self._tcp_server = await loop.create_server(self._accept, "127.0.0.1", 0, ssl=self._tls)
        self._port = self._tcp_server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening, end stalled replies and close every connection."""
        self._closing.set()
        if self._tcp_server is not None:
            self._tcp_server.close()
        if self._web_server is not None:
            # As aiohttp's own runner does: let accepted requests start, close idle
            # keep-alive connections, then give busy ones a moment.
            await asyncio.sleep(0)
            self._web_server.pre_shutdown()
            await self._web_server.shutdown(timeout=2.0)
        if self._tcp_server is not None:
            await self._tcp_server.wait_closed()
            self._tcp_server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _accept(self) -> RequestHandler:
        """The protocol factory: asyncio calls it once per accepted TCP connection."""
        assert self._web_server is not None
        self.connections_accepted += 1
        handler = self._web_server()
        self._connection_numbers[handler] = self.connections_accepted
        return handler

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        received_at = time.monotonic()
        body = await request.read()
        received = ReceivedRequest(
            method=request.method,
            path=request.raw_path,
            headers=tuple(
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in request.raw_headers
            ),
            body=body,
            received_at=received_at,
            connection=self._connection_numbers.get(request.protocol, 0),
        )
        self.requests.append(received)
        self._arrived.set()
        reply = self._queued.popleft() if self._queued else self._standing(received)
        if reply.delay > 0:
            try:
                async with asyncio.timeout(reply.delay):
                    await self._closing.wait()
            except TimeoutError:
                pass
        if reply.reset:
            _reset(request)
        pairs = reply.headers.items() if isinstance(reply.headers, Mapping) else reply.headers
        return web.Response(status=reply.status, headers=CIMultiDict(pairs), body=reply.body)


def _reset(request: web.BaseRequest) -> None:
    """Drop the request's connection with a RST: linger off, then close without a FIN.

    The response the handler still returns is never written (aiohttp ignores a write to a
    closed connection).
    """
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _always(reply: Reply) -> ReplyRule:
    return lambda _request: reply


def unused_port() -> int:
    """A loopback TCP port that nothing listens on, so connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def is_loopback(address: object) -> bool:
    """Whether a socket address stays on this machine (loopback, or an AF_UNIX path)."""
    if not isinstance(address, tuple):
        return True
    try:
        ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
    except ValueError:
        return False  # a name: connect() would resolve it, so it could go anywhere
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@dataclass
class ConnectLog:
    """Every socket connect attempted while ``loopback_only_connections`` was active."""

    attempts: list[object] = field(default_factory=list)
    refused: list[object] = field(default_factory=list)
    """The attempts to leave loopback, which were refused before any packet was sent."""


@contextmanager
def loopback_only_connections() -> Iterator[ConnectLog]:
    """Refuse every socket connect outside loopback while active, and log all attempts.

    It patches ``socket.socket.connect``/``connect_ex``, which every Python-level TCP
    connection goes through (asyncio's ``sock_connect`` included), so it holds even when
    the code under test bypasses its own safeguards.
    """
    log = ConnectLog()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guarded_connect(sock: socket.socket, address: Any) -> None:
        log.attempts.append(address)
        if not is_loopback(address):
            log.refused.append(address)
            raise PermissionError(errno.EACCES, f"test guard: no connect to {address!r}")
        real_connect(sock, address)

    def guarded_connect_ex(sock: socket.socket, address: Any) -> int:
        log.attempts.append(address)
        if not is_loopback(address):
            log.refused.append(address)
            return errno.EACCES
        return real_connect_ex(sock, address)

    socket.socket.connect = guarded_connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign,assignment]
    try:
        yield log
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = real_connect_ex  # type: ignore[method-assign]
