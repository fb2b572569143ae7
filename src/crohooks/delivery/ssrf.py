"""Which addresses a hook URL may reach (spec 3.3).

A hook URL is untrusted input, so by default only globally routable unicast addresses
are reachable; an operator may allow more networks explicitly (local development allows
``127.0.0.0/8``). The policy judges *addresses*, never names: the outbound client
resolves a name, checks every address it got, and connects to a checked address.

Decisions:

- A name that resolves to several addresses is refused if **any** of them is blocked.
  Filtering the bad ones out instead would make the outcome depend on record order and
  would hide a DNS entry that points inside the network, which is what an attacker sets
  up.
- IPv4 literals in anything but canonical dotted-quad form (``2130706433``,
  ``0x7f000001``, ``0177.0.0.1``, ``127.1``) are refused outright, allowed networks or
  not: resolvers, proxies and URL parsers disagree about what they mean.
- An IPv6 address that carries an IPv4 address the network stack will actually reach
  (IPv4-mapped, NAT64 ``64:ff9b::/96``, 6to4) is judged by that IPv4 address.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence

from crohooks.errors import DestinationBlocked, InvalidURL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# IPv4 ranges that are not globally routable unicast (IANA special-purpose registry,
# plus multicast and the reserved class E). Kept explicit rather than relying on
# ``IPv4Address.is_global`` alone, whose answers have changed between Python releases;
# ``is_global`` is still consulted as a second opinion.
_NON_PUBLIC_IPV4 = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "10.0.0.0/8",  # private (RFC 1918)
        "100.64.0.0/10",  # carrier-grade NAT (RFC 6598)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, home of cloud metadata endpoints
        "172.16.0.0/12",  # private (RFC 1918)
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",  # private (RFC 1918)
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, including the broadcast 255.255.255.255
    )
)

# IANA allocates global unicast IPv6 only from 2000::/3. Everything outside it is refused:
# unspecified, loopback, IPv4-compatible, discard-only 100::/64, local-use NAT64
# 64:ff9b:1::/48 (its embedded IPv4 sits at a site-chosen offset, so it can't be
# judged), SRv6 5f00::/16, ULA fc00::/7, link-local fe80::/10, site-local fec0::/10,
# multicast ff00::/8 and whatever is still unassigned.
_GLOBAL_UNICAST_IPV6 = ipaddress.IPv6Network("2000::/3")
_NON_PUBLIC_IPV6 = tuple(
    ipaddress.IPv6Network(network)
    for network in (
        "2001::/23",  # IETF protocol assignments: Teredo 2001::/32, benchmarking, ORCHID
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
    )
)
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")

# WHATWG URL parsing treats a host whose last label is a number as an IPv4 address.
_NUMERIC_LABEL = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that a connection to this IPv6 address really reaches, if any."""
    if address.ipv4_mapped is not None:
        # ::ffff:0:0/96 - a dual-stack socket connects straight to the IPv4 address.
        return address.ipv4_mapped
    if address in _NAT64_WELL_KNOWN:
        # 64:ff9b::/96 - a NAT64 gateway forwards to the IPv4 address in the last 32 bits.
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    # 2002::/16 - 6to4 relays forward to the IPv4 address in bits 16-47.
    return address.sixtofour


def is_public(address: IPAddress) -> bool:
    """Whether the address is globally routable unicast, ignoring any allowed networks."""
    address = _without_scope(address)
    if isinstance(address, ipaddress.IPv4Address):
        return address.is_global and not any(address in net for net in _NON_PUBLIC_IPV4)
    embedded = embedded_ipv4(address)
    if embedded is not None:
        return is_public(embedded)
    return (
        address in _GLOBAL_UNICAST_IPV6
        and address.is_global
        and not any(address in net for net in _NON_PUBLIC_IPV6)
    )


def parse_host(host: str) -> IPAddress | None:
    """The IP address a URL host denotes, or ``None`` if the host is a name.

    ``host`` is the host part of a URL, brackets optional for IPv6 (``url.raw_host``).

    Raises DestinationBlocked for IPv4 literals written in a non-canonical form (see the
    module docstring), and InvalidURL for a host with a colon that is no IPv6 address.
    """
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in text:
        # A zone id (fe80::1%eth0, percent-encoded as %25 in URLs) names an interface,
        # not a destination; the address alone is what the policy judges.
        try:
            return ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            raise InvalidURL(f"{host} is not a valid host") from None
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        pass
    if _looks_like_ipv4(text):
        raise DestinationBlocked(f"{host} is not a canonical IP address")
    return None


def _looks_like_ipv4(text: str) -> bool:
    """Whether some parser would read this host as an IPv4 address."""
    labels = text.removesuffix(".").split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        return True
    try:
        socket.inet_aton(text)
    except OSError:
        return False
    return True


def _without_scope(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return ipaddress.IPv6Address(address.packed)
    return address


class DestinationPolicy:
    """Decides whether an address may be connected to.

    An address passes if it lies in an allowed network, if the IPv4 address it embeds
    lies in one (allowing ``127.0.0.0/8`` allows ``::ffff:127.0.0.1`` too), or if it is
    public.
    """

    def __init__(self, allowed_networks: Iterable[IPNetwork] = ()) -> None:
        self.allowed_networks: tuple[IPNetwork, ...] = tuple(allowed_networks)

    def refusal(self, address: IPAddress) -> str | None:
        """Why the address is refused, or ``None`` if it may be reached."""
        address = _without_scope(address)
        blocked = self._blocked_part(address)
        if blocked is None:
            return None
        if blocked == address:
            return f"{address} is not a public address"
        return f"{address} embeds {blocked}, which is not a public address"

    def literal_refusal(self, host: str) -> str | None:
        """Why a URL host that is an IP literal can never be reached, or ``None``.

        Names pass: they are judged when a delivery resolves them, since DNS changes.
        """
        try:
            address = parse_host(host)
        except (DestinationBlocked, InvalidURL) as refused:
            return refused.detail
        return None if address is None else self.refusal(address)

    def check_ip(self, address: IPAddress) -> None:
        """Raise DestinationBlocked unless the address may be reached."""
        reason = self.refusal(address)
        if reason is not None:
            raise DestinationBlocked(reason)

    def check_resolved(self, name: str, addresses: Sequence[IPAddress]) -> None:
        """Raise DestinationBlocked if any address the name resolved to is refused."""
        for address in map(_without_scope, addresses):
            blocked = self._blocked_part(address)
            if blocked is None:
                continue
            if blocked == address:
                raise DestinationBlocked(
                    f"{name} resolves to {address}, which is not a public address"
                )
            raise DestinationBlocked(
                f"{name} resolves to {address}, which embeds {blocked}, not a public address"
            )

    def _blocked_part(self, address: IPAddress) -> IPAddress | None:
        """The address that makes this one refused (itself or what it embeds), if any."""
        if self._is_allowed(address):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            embedded = embedded_ipv4(address)
            if embedded is not None:
                if self._is_allowed(embedded) or is_public(embedded):
                    return None
                return embedded
        return None if is_public(address) else address

    def _is_allowed(self, address: IPAddress) -> bool:
        return any(
            address.version == network.version and address in network
            for network in self.allowed_networks
        )
