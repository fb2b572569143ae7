"""The one HTTP client that talks to hook URLs, for pings and deliveries alike.

Every request goes through the SSRF policy twice: when a name resolves (every address
it resolves to is checked, and the connector connects only to addresses it got from
that check, so there is no DNS-rebinding window), and again on the exact socket address
of each connection attempt, which also covers IP-literal hosts that aiohttp never
resolves. Redirects are not followed, proxies and cookies are never used, and at most
``response_body_limit`` bytes of a response are read.

aiohttp's exceptions become ``OutboundError``s in one place, ``_outbound_error``: a
response of any status is an ``HttpResponse``, anything else is an ``OutboundError``.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from crohooks.delivery.ssrf import DestinationPolicy, parse_host
from crohooks.errors import (
    ConnectionFailed,
    ConnectionRefused,
    ConnectTimeout,
    DestinationBlocked,
    DNSError,
    InvalidURL,
    OutboundError,
    ReadTimeout,
    TLSError,
)
from crohooks.settings import Settings

CHECKED_URL_CACHE = 4096
"""How many distinct hook URLs an OutboundClient remembers as checked."""

AddrInfo = tuple[int, int, int, str, tuple[str, int] | tuple[str, int, int, int]]
SocketOpener = Callable[[AddrInfo], socket.socket]


@dataclass(frozen=True)
class HttpResponse:
    """What a hook URL answered; any status, 1xx to 5xx, is a response."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    body_truncated: bool
    elapsed: float

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str) -> str | None:
        """The first value of a header, matched case-insensitively, or ``None``."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


class _BlockedConnect(OSError):
    """A connection attempt the policy refused; carried through aiohttp as an OSError."""

    def __init__(self, blocked: DestinationBlocked) -> None:
        super().__init__(errno.EACCES, blocked.detail)
        self.blocked = blocked


class _PolicyResolver(AbstractResolver):
    """aiohttp's threaded resolver, refusing names that resolve to a blocked address."""

    def __init__(self, policy: DestinationPolicy) -> None:
        self._policy = policy
        self._resolver = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        self._policy.check_resolved(host, [_ip_of(result["host"]) for result in results])
        return results

    async def close(self) -> None:
        await self._resolver.close()


def _ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(host.split("%", 1)[0])


def _open_plain_socket(addr_info: AddrInfo) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    return socket.socket(family=family, type=type_, proto=proto)


class OutboundClient:
    """POSTs to hook URLs over one long-lived, keep-alive connection pool.

    Create it once per process, ``await start()`` (or let the first ``post`` do it) and
    ``await aclose()`` at shutdown; ``async with`` does both.

    ``open_socket`` is a seam for tests: it creates the socket of every connection
    attempt, after the policy has allowed its address, so a test can record attempts
    and refuse anything but loopback.
    """

    def __init__(self, settings: Settings, *, open_socket: SocketOpener | None = None) -> None:
        self._policy = DestinationPolicy(settings.allowed_networks)
        self._connect_timeout = settings.connect_timeout
        self._body_limit = settings.response_body_limit
        self._open_socket = open_socket or _open_plain_socket
        self._session: aiohttp.ClientSession | None = None
        self._resolver: _PolicyResolver | None = None
        self._closed = False
        self._checked_urls: dict[str, URL] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    async def start(self) -> None:
        self._ensure_session()

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        if self._resolver is not None:
            resolver, self._resolver = self._resolver, None
            await resolver.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        timeout: float,  # noqa: ASYNC109 - aiohttp needs it to tell connect from read timeouts
    ) -> HttpResponse:
        """POST ``body`` to ``url``; raise an OutboundError when no response arrives.

        ``timeout`` bounds the whole attempt: resolving, connecting, sending and reading
        the (capped) response body.
        """
        target = self._checked_url(url)
        session = self._ensure_session()
        started = time.monotonic()
        try:
            # aiohttp's total timeout covers the whole exchange, the body read included.
            async with session.post(
                target,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=self._client_timeout(timeout),
            ) as response:
                content, truncated = await self._read_capped(response)
                return HttpResponse(
                    status=response.status,
                    headers=tuple((str(k), v) for k, v in response.headers.items()),
                    body=content,
                    body_truncated=truncated,
                    elapsed=time.monotonic() - started,
                )
        except OutboundError:
            raise
        except UnicodeError as exc:
            # IDNA encoding of the host (empty or over-long labels) fails inside the lookup.
            raise InvalidURL(f"{target.raw_host} is not a valid host name") from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _outbound_error(
                exc, target, timeout=timeout, connect_timeout=self._connect_timeout
            ) from exc

    def _checked_url(self, url: str) -> URL:
        """The parsed URL, once its scheme, host and (for an IP literal) address passed.

        A worker posts to the same few hook URLs over and over, so what passed is kept
        (the policy never changes for a client); a refusal is raised and never kept. The
        socket-level check in ``_open_checked_socket`` still runs on every connection.
        """
        target = self._checked_urls.get(url)
        if target is None:
            target = _parse_url(url)
            address = parse_host(target.raw_host or "")
            if address is not None:
                self._policy.check_ip(address)
            if len(self._checked_urls) >= CHECKED_URL_CACHE:
                self._checked_urls.clear()
            self._checked_urls[url] = target
        return target

    def _client_timeout(self, total: float) -> aiohttp.ClientTimeout:
        found = self._timeouts.get(total)
        if found is None:
            found = self._timeouts[total] = aiohttp.ClientTimeout(
                total=total, sock_connect=self._connect_timeout
            )
        return found

    async def _read_capped(self, response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        """At most ``response_body_limit`` bytes of the body, and whether more was left.

        The rest is never read: leaving it makes aiohttp close that connection instead
        of returning it to the pool.
        """
        body = bytearray()
        while len(body) < self._body_limit:
            chunk = await response.content.read(self._body_limit - len(body))
            body += chunk
            if not chunk or response.content.at_eof():
                break
        return bytes(body), not response.content.at_eof()

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the OutboundClient is closed")
        if self._session is None:
            self._resolver = _PolicyResolver(self._policy)
            connector = aiohttp.TCPConnector(
                resolver=self._resolver,
                socket_factory=self._open_checked_socket,
                limit=0,
                limit_per_host=0,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                # The delivery log keeps the bytes as they arrived; never inflating them
                # keeps a compressed response from growing past the body limit.
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding",),
            )
        return self._session

    def _open_checked_socket(self, addr_info: AddrInfo) -> socket.socket:
        # Invariant: no socket is ever created for an address the policy refuses, however
        # the address was obtained (resolver, DNS cache or IP literal).
        reason = self._policy.refusal(_ip_of(addr_info[4][0]))
        if reason is not None:
            raise _BlockedConnect(DestinationBlocked(reason))
        return self._open_socket(addr_info)


def _parse_url(url: str) -> URL:
    try:
        target = URL(url)
    except ValueError as exc:
        raise InvalidURL(f"the URL is malformed: {exc}") from None
    if target.scheme not in ("http", "https"):
        raise InvalidURL(f"the URL's scheme is {target.scheme or 'missing'}, not http or https")
    if not target.raw_host:
        raise InvalidURL("the URL has no host")
    if target.raw_user is not None or target.raw_password is not None:
        # Never echo it: the user info may hold a password.
        raise InvalidURL("the URL carries user info (user:password@), which hook URLs must not")
    return target


def _authority(url: URL) -> str:
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{url.port}"


def _os_reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _tls_reason(error: OSError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return f"certificate verify failed: {error.verify_message}"
    return _os_reason(error)


def _outbound_error(
    exc: BaseException, url: URL, *, timeout: float, connect_timeout: float
) -> OutboundError:
    """The one translation of aiohttp's exceptions into ours."""
    target = _authority(url)
    match exc:
        case aiohttp.ClientSSLError():
            return TLSError(f"TLS with {target} failed: {_tls_reason(exc.os_error)}")
        case aiohttp.ClientConnectorDNSError():
            return DNSError(f"{url.raw_host} did not resolve: {_os_reason(exc.os_error)}")
        case aiohttp.ClientConnectorError(os_error=_BlockedConnect() as refused):
            return refused.blocked
        case aiohttp.ClientConnectorError() if (
            isinstance(exc.os_error, ConnectionRefusedError)
            or exc.os_error.errno == errno.ECONNREFUSED
        ):
            return ConnectionRefused(f"{target} refused the connection")
        case aiohttp.ClientConnectorError():
            return ConnectionFailed(f"no connection to {target}: {_os_reason(exc.os_error)}")
        case aiohttp.ConnectionTimeoutError():
            return ConnectTimeout(f"no connection to {target} within {float(connect_timeout)} s")
        case TimeoutError():
            return ReadTimeout(f"no response from {target} within {float(timeout)} s")
        case aiohttp.ServerDisconnectedError():
            return ConnectionFailed(f"{target} closed the connection without a response")
        case aiohttp.ClientPayloadError():
            return ConnectionFailed(f"the response from {target} was cut short: {exc}")
        case aiohttp.ClientResponseError():
            return ConnectionFailed(f"{target} sent an invalid HTTP response: {exc.message}")
        case aiohttp.InvalidURL() | aiohttp.NonHttpUrlClientError():
            return InvalidURL(f"{url} can't be requested: {exc}")
        case _:
            return ConnectionFailed(f"{target}: {_os_reason(exc)}")
