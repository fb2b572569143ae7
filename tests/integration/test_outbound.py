"""OutboundClient against real servers on loopback.

No test here may send a packet off the machine, even if the code under test is broken:
every test runs inside ``loopback_only_connections`` (refuses any non-loopback connect at
the socket level), and the client's sockets come from ``ConnectRecorder``, which records
each attempt the policy let through and opens loopback sockets only.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from crohooks.delivery.outbound import AddrInfo, OutboundClient
from crohooks.delivery.signing import sign_delivery
from crohooks.errors import (
    ConnectionFailed,
    ConnectionRefused,
    ConnectTimeout,
    DestinationBlocked,
    InvalidURL,
    ReadTimeout,
    TLSError,
)
from crohooks.rendering import render_json
from crohooks.settings import Settings
from tests.support.receiver import (
    ConnectLog,
    Receiver,
    Reply,
    is_loopback,
    loopback_only_connections,
    unused_port,
)

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
BODY_LIMIT = 16 * 1024


class ConnectRecorder:
    """OutboundClient's ``open_socket`` seam: records every attempt, opens loopback only."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int]] = []

    def __call__(self, addr_info: AddrInfo) -> socket.socket:
        family, type_, proto, _, address = addr_info
        self.attempts.append((address[0], address[1]))
        if not is_loopback(address):
            raise PermissionError(f"test seam: no connection to {address!r}")
        return socket.socket(family=family, type=type_, proto=proto)


@pytest.fixture(autouse=True)
def connect_log() -> Iterator[ConnectLog]:
    with loopback_only_connections() as log:
        yield log
    assert log.refused == [], "the code tried to leave loopback"


@pytest.fixture
def recorder() -> ConnectRecorder:
    return ConnectRecorder()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as running:
        yield running


@pytest.fixture
async def client(recorder: ConnectRecorder) -> AsyncIterator[OutboundClient]:
    """A client allowed to reach 127.0.0.0/8, as in local development."""
    settings = Settings(allowed_networks=LOOPBACK, response_body_limit=BODY_LIMIT)
    async with OutboundClient(settings, open_socket=recorder) as running:
        yield running


@pytest.fixture
async def strict_client(recorder: ConnectRecorder) -> AsyncIterator[OutboundClient]:
    """A client with the production default: no allowed networks."""
    async with OutboundClient(Settings(allowed_networks=()), open_socket=recorder) as running:
        yield running


def signed_delivery(url: str) -> tuple[bytes, dict[str, str]]:
    body = render_json(
        {
            "data": {"hook_id": 7, "url": url, "name": "Zoë's Café"},
            "delivery_id": "5f0c6a6e-2d3b-4a8c-9a5e-0f6a8f3c2b11",
            "event": "Ping",
            "event_id": "9d7c4f2e-1b3a-4c5d-8e6f-7a8b9c0d1e2f",
            "hook_id": 7,
            "tenant_id": 34,
            "timestamp": "2024-05-01T12:00:00.000000",
        }
    )
    headers = sign_delivery(
        body,
        secret="VGhlIGxhenkgYnJvd24gZG9n",
        delivery_id="5f0c6a6e-2d3b-4a8c-9a5e-0f6a8f3c2b11",
        event="Ping",
        hook_id=7,
        timestamp=int(time.time()),
    )
    return body, headers


async def test_a_2xx_answer_is_a_response(client: OutboundClient, receiver: Receiver) -> None:
    receiver.respond(200, headers={"X-Receiver": "yes"}, body=b'{"ok": true}')

    response = await client.post(receiver.url, b"{}", {}, timeout=5)

    assert response.status == 200
    assert response.is_success
    assert response.body == b'{"ok": true}'
    assert not response.body_truncated
    assert response.header("x-receiver") == "yes"
    assert 0 < response.elapsed < 5


async def test_body_and_headers_arrive_byte_exact(
    client: OutboundClient, receiver: Receiver
) -> None:
    body, headers = signed_delivery(receiver.url)

    await client.post(receiver.url, body, headers, timeout=5)

    [request] = receiver.requests
    assert request.method == "POST"
    assert request.path == "/"
    assert request.body == body
    for name, value in headers.items():
        assert (name, value) in request.headers
    assert request.header("Content-Length") == str(len(body))
    assert request.header("Cookie") is None
    assert request.header("Accept-Encoding") is None


async def test_the_request_goes_to_the_url_path_and_query(
    client: OutboundClient, receiver: Receiver
) -> None:
    await client.post(receiver.url_for("/hooks/in?source=crohooks"), b"{}", {}, timeout=5)

    assert receiver.requests[0].path == "/hooks/in?source=crohooks"


async def test_the_response_body_is_capped(client: OutboundClient, receiver: Receiver) -> None:
    large = bytes(range(256)) * 400  # 100 KiB
    receiver.respond(200, body=large)

    response = await client.post(receiver.url, b"{}", {}, timeout=5)

    assert response.body == large[:BODY_LIMIT]
    assert response.body_truncated


async def test_a_body_of_exactly_the_limit_is_whole(
    client: OutboundClient, receiver: Receiver
) -> None:
    receiver.respond(200, body=b"x" * BODY_LIMIT)

    response = await client.post(receiver.url, b"{}", {}, timeout=5)

    assert response.body == b"x" * BODY_LIMIT


@pytest.mark.parametrize("status", [201, 204, 400, 404, 410, 429, 500, 503])
async def test_any_status_is_a_response(
    client: OutboundClient, receiver: Receiver, status: int
) -> None:
    receiver.respond(status, headers={"Retry-After": "120"})

    response = await client.post(receiver.url, b"{}", {}, timeout=5)

    assert response.status == status
    assert response.is_success is (status < 300)
    assert response.header("Retry-After") == "120"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_answers_never_followed(
    client: OutboundClient, receiver: Receiver, status: int
) -> None:
    async with Receiver() as elsewhere:
        receiver.respond(status, headers={"Location": elsewhere.url})

        response = await client.post(receiver.url, b"{}", {}, timeout=5)

        assert response.status == status
        assert response.header("Location") == elsewhere.url
        assert elsewhere.connections_accepted == 0


async def test_connections_are_kept_alive_and_reused(
    client: OutboundClient, receiver: Receiver
) -> None:
    for _ in range(3):
        await client.post(receiver.url, b"{}", {}, timeout=5)

    assert receiver.connections_accepted == 1
    assert [request.connection for request in receiver.requests] == [1, 1, 1]


async def test_each_request_on_a_kept_alive_connection_gets_its_own_answer(
    client: OutboundClient, receiver: Receiver
) -> None:
    receiver.enqueue(503, Reply(429, headers={"Retry-After": "7"}))
    receiver.respond_with(lambda request: Reply(200 if request.body == b"{}" else 400))

    answers = [await client.post(receiver.url, body, {}, timeout=5) for body in (b"{}",) * 3]
    answers.append(await client.post(receiver.url, b"[]", {}, timeout=5))

    assert [answer.status for answer in answers] == [503, 429, 200, 400]
    assert answers[1].header("Retry-After") == "7"
    assert len(await receiver.wait_for_requests(4, timeout=1)) == 4
    assert receiver.connections_accepted == 1


async def test_a_closed_port_refuses(client: OutboundClient) -> None:
    port = unused_port()

    with pytest.raises(ConnectionRefused) as refused:
        await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=5)

    assert refused.value.message == f"ConnectionRefused: 127.0.0.1:{port} refused the connection"


async def test_a_stalling_receiver_times_out_within_the_timeout(
    client: OutboundClient, receiver: Receiver
) -> None:
    receiver.respond(200, delay=30)
    started = time.monotonic()

    with pytest.raises(ReadTimeout) as timed_out:
        await client.post(receiver.url, b"{}", {}, timeout=1)

    assert 0.9 < time.monotonic() - started < 2.0
    assert timed_out.value.message == (
        f"ReadTimeout: no response from 127.0.0.1:{receiver.port} within 1.0 s"
    )
    assert len(receiver.requests) == 1


async def test_a_body_that_stalls_after_the_headers_times_out_within_the_timeout(
    client: OutboundClient,
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
    async with RawServer(head, hold=10) as port:
        started = time.monotonic()
        with pytest.raises(ReadTimeout) as timed_out:
            await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=1)

    assert 0.9 < time.monotonic() - started < 2.0
    assert timed_out.value.message == f"ReadTimeout: no response from 127.0.0.1:{port} within 1.0 s"


async def test_a_full_accept_queue_is_a_connect_timeout(recorder: ConnectRecorder) -> None:
    settings = Settings(allowed_networks=LOOPBACK, connect_timeout=0.5)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        queued = [socket.socket() for _ in range(4)]
        try:
            for sock in queued:
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
            await asyncio.sleep(0.1)
            started = time.monotonic()
            async with OutboundClient(settings, open_socket=recorder) as client:
                with pytest.raises(ConnectTimeout) as timed_out:
                    await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=5)
        finally:
            for sock in queued:
                sock.close()

    assert time.monotonic() - started < 2.0
    assert timed_out.value.message == (
        f"ConnectTimeout: no connection to 127.0.0.1:{port} within 0.5 s"
    )


async def test_a_certificate_that_is_not_trusted_is_a_tls_error(
    client: OutboundClient, tmp_path: Path
) -> None:
    async with Receiver(tls=self_signed_server_context(tmp_path)) as receiver:
        with pytest.raises(TLSError) as failed:
            await client.post(receiver.url, b"{}", {}, timeout=5)

        assert failed.value.message.startswith(f"TLSError: TLS with 127.0.0.1:{receiver.port}")
        assert "certificate" in failed.value.message
        assert receiver.requests == []


async def test_a_peer_that_hangs_up_is_a_connection_failure(client: OutboundClient) -> None:
    async with RawServer(b"") as port:
        with pytest.raises(ConnectionFailed) as failed:
            await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=5)

    assert failed.value.message == (
        f"ConnectionFailed: 127.0.0.1:{port} closed the connection without a response"
    )


async def test_a_peer_that_speaks_no_http_is_a_connection_failure(
    client: OutboundClient,
) -> None:
    async with RawServer(b"SSH-2.0-OpenSSH_9.6\r\n\r\n") as port:
        with pytest.raises(ConnectionFailed) as failed:
            await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=5)

    assert failed.value.message.startswith(
        f"ConnectionFailed: 127.0.0.1:{port} sent an invalid HTTP response"
    )


async def test_proxies_from_the_environment_are_ignored(
    client: OutboundClient, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(variable, "http://10.255.255.1:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    response = await client.post(receiver.url, b"{}", {}, timeout=5)

    assert response.status == 200


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("ftp://127.0.0.1/", "the URL's scheme is ftp, not http or https"),
        ("127.0.0.1/hook", "the URL's scheme is missing, not http or https"),
        ("http:///hook", "the URL has no host"),
        (
            "http://admin:hunter2@127.0.0.1/",
            "the URL carries user info (user:password@), which hook URLs must not",
        ),
        ("http://[::1/", "the URL is malformed: Invalid IPv6 URL"),
    ],
)
async def test_urls_that_cant_be_requested_are_invalid(
    client: OutboundClient, recorder: ConnectRecorder, url: str, detail: str
) -> None:
    with pytest.raises(InvalidURL) as invalid:
        await client.post(url, b"{}", {}, timeout=5)

    assert invalid.value.detail == detail
    assert recorder.attempts == []


BLOCKED_URLS = [
    "http://127.0.0.1:{port}/",
    "http://127.0.0.2:{port}/",
    "http://0.0.0.0:{port}/",
    "http://[::1]:{port}/",
    "http://10.0.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",
    "http://0x7f000001:{port}/",
    "http://2130706433:{port}/",
    "http://127.1:{port}/",
    "http://0177.0.0.1:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:7f00:1::]/",
    "http://[fe80::1%25lo]:{port}/",
    "http://localhost:{port}/",
    "https://localhost:{port}/",
]


@pytest.mark.parametrize("url_template", BLOCKED_URLS)
async def test_non_public_destinations_are_blocked_before_any_connection(
    strict_client: OutboundClient,
    recorder: ConnectRecorder,
    receiver: Receiver,
    connect_log: ConnectLog,
    url_template: str,
) -> None:
    url = url_template.format(port=receiver.port)

    with pytest.raises(DestinationBlocked):
        await strict_client.post(url, b"{}", {}, timeout=5)

    assert recorder.attempts == []
    assert connect_log.attempts == []
    assert receiver.connections_accepted == 0


async def test_a_blocked_name_says_what_it_resolved_to(
    strict_client: OutboundClient, receiver: Receiver
) -> None:
    with pytest.raises(DestinationBlocked) as blocked:
        await strict_client.post(f"http://localhost:{receiver.port}/", b"{}", {}, timeout=5)

    assert blocked.value.message == (
        "DestinationBlocked: localhost resolves to 127.0.0.1, which is not a public address"
    )


async def test_a_blocked_literal_says_why(strict_client: OutboundClient) -> None:
    with pytest.raises(DestinationBlocked) as blocked:
        await strict_client.post("http://10.0.0.7/", b"{}", {}, timeout=5)

    assert blocked.value.message == "DestinationBlocked: 10.0.0.7 is not a public address"


async def test_an_allowed_name_connects_to_the_address_it_was_checked_at(
    client: OutboundClient, recorder: ConnectRecorder, receiver: Receiver
) -> None:
    response = await client.post(f"http://localhost:{receiver.port}/", b"{}", {}, timeout=5)

    assert response.status == 200
    assert recorder.attempts == [("127.0.0.1", receiver.port)]


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f000001"])
async def test_non_canonical_literals_stay_blocked_inside_allowed_networks(
    client: OutboundClient, receiver: Receiver, host: str
) -> None:
    with pytest.raises(DestinationBlocked) as blocked:
        await client.post(f"http://{host}:{receiver.port}/", b"{}", {}, timeout=5)

    assert blocked.value.detail == f"{host} is not a canonical IP address"
    assert receiver.connections_accepted == 0


async def test_a_closed_client_refuses_to_post(recorder: ConnectRecorder) -> None:
    client = OutboundClient(Settings(allowed_networks=LOOPBACK), open_socket=recorder)
    await client.aclose()

    with pytest.raises(RuntimeError):
        await client.post("http://127.0.0.1:9/", b"{}", {}, timeout=5)


class RawServer:
    """A TCP server on loopback that answers every connection with fixed bytes and hangs up
    (after ``hold`` seconds of silence, if given)."""

    def __init__(self, answer: bytes, *, hold: float = 0.0) -> None:
        self._answer = answer
        self._hold = hold
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(self._answer)
            await writer.drain()
            if self._hold:
                await asyncio.sleep(self._hold)
            writer.close()
            await writer.wait_closed()

        self._server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


def self_signed_server_context(directory: Path) -> ssl.SSLContext:
    """A TLS server context for 127.0.0.1 with a certificate nobody trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / "cert.pem"
    key_file = directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context
