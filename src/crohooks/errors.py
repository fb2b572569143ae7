"""The one error hierarchy of crohooks.

Library errors (aiohttp, SQLAlchemy, PyJWT) are translated into these once, at the
adapter that calls the library; HTTP status codes are chosen in one place, the API's
exception handler, from ``ApiError.status``.

    CrohooksError
    ├── ApiError                    -> rendered as CRO's {"detail", "explanation", "field"}
    │   ├── BadRequest              400
    │   ├── Unauthenticated         401
    │   ├── Forbidden               403
    │   ├── NotFound                404
    │   ├── MethodNotAllowed        405
    │   ├── NotAcceptable           406
    │   ├── RequestTimeout          408
    │   ├── Conflict                409
    │   ├── PayloadTooLarge         413
    │   ├── RateLimited             429
    │   ├── ServiceUnavailable      503
    │   └── InternalError           500
    ├── OutboundError               -> a delivery attempt that got no HTTP response
    │   ├── DestinationBlocked      the SSRF policy refused every address
    │   ├── InvalidURL              the hook URL can't be requested at all
    │   ├── DNSError                the name did not resolve
    │   ├── ConnectTimeout          no connection within the connect timeout
    │   ├── ConnectionRefused       the peer refused the connection
    │   ├── ReadTimeout             connected, but no full response in time
    │   ├── TLSError                the TLS handshake or certificate failed
    │   └── ConnectionFailed        any other transport failure
    ├── DuplicateKey                the store refused a second row with a unique key
    ├── DatabaseUnavailable         the database refused, dropped or did not answer in time
    ├── DatabaseError               the database refused a statement (a missing table, a bug)
    └── ConfigurationError          settings that can't work; raised at start-up
"""

from __future__ import annotations

from typing import ClassVar


class CrohooksError(Exception):
    """Something went wrong in crohooks."""

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail if detail is not None else (type(self).__doc__ or "").strip()
        super().__init__(self.detail)


class ApiError(CrohooksError):
    """The request could not be served."""

    status: ClassVar[int] = 500
    explanation: ClassVar[str] = "The server could not serve the request."

    def __init__(
        self,
        detail: str | None = None,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.field = field
        self.headers = headers or {}


class BadRequest(ApiError):
    """The request is malformed."""

    status = 400
    explanation = "The request is malformed or breaks a rule; fix it before sending it again."


class Unauthenticated(ApiError):
    """A valid bearer token is required."""

    status = 401
    explanation = "The request lacks a valid bearer token; sign in again and retry."


class Forbidden(ApiError):
    """The token does not allow this operation."""

    status = 403
    explanation = "The token is valid but does not allow this operation on this tenant."


class NotFound(ApiError):
    """The resource does not exist."""

    status = 404
    explanation = "Nothing exists at this address for this tenant."


class MethodNotAllowed(ApiError):
    """The method is not allowed on this path."""

    status = 405
    explanation = "This path does not support the method; the Allow header lists those it does."


class NotAcceptable(ApiError):
    """The client does not accept application/json."""

    status = 406
    explanation = "The API only answers application/json, which the Accept header excludes."


class Conflict(ApiError):
    """The request conflicts with the resource's current state."""

    status = 409
    explanation = "The request conflicts with the current state of the resource."


class RequestTimeout(ApiError):
    """The request body did not arrive in time."""

    status = 408
    explanation = "The client sent the request body too slowly; send it again, faster."


class PayloadTooLarge(ApiError):
    """The request body is too large."""

    status = 413
    explanation = "The request body is larger than this endpoint accepts."


class RateLimited(ApiError):
    """Too many requests."""

    status = 429
    explanation = "Too many requests; wait for the number of seconds in Retry-After."


class ServiceUnavailable(ApiError):
    """The service can't serve requests right now."""

    status = 503
    explanation = "A service crohooks depends on is unavailable; retry shortly."


class InternalError(ApiError):
    """An unexpected error occurred."""

    status = 500
    explanation = "The server failed unexpectedly; the error was logged with the request id."


class OutboundError(CrohooksError):
    """The request to the hook URL got no HTTP response."""

    @property
    def kind(self) -> str:
        return type(self).__name__

    @property
    def message(self) -> str:
        """The text users see as the ping ``message`` and in the delivery log."""
        return f"{self.kind}: {self.detail}"


class DestinationBlocked(OutboundError):
    """The destination is not a public address."""


class InvalidURL(OutboundError):
    """The hook URL can't be requested."""


class DNSError(OutboundError):
    """The host name did not resolve."""


class ConnectTimeout(OutboundError):
    """No connection within the connect timeout."""


class ConnectionRefused(OutboundError):
    """The destination refused the connection."""


class ReadTimeout(OutboundError):
    """No complete response within the timeout."""


class TLSError(OutboundError):
    """The TLS handshake failed."""


class ConnectionFailed(OutboundError):
    """The connection failed."""


class ConfigurationError(CrohooksError):
    """The configuration can't work."""


class DuplicateKey(CrohooksError):
    """A row with the same unique key already exists."""


class DatabaseUnavailable(CrohooksError):
    """The database is unavailable."""


class DatabaseError(CrohooksError):
    """The database refused the statement."""
