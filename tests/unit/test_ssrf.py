from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crohooks.delivery.ssrf import DestinationPolicy, IPAddress, is_public, parse_host
from crohooks.errors import DestinationBlocked, InvalidURL

ip = ipaddress.ip_address
net = ipaddress.ip_network
DEFAULT = DestinationPolicy()


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.7",
        "100.64.0.1",
        "100.127.255.254",
        "127.0.0.1",
        "127.255.255.254",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.1",
        "192.0.2.1",
        "192.88.99.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.1",
        "203.0.113.9",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::7f00:1",  # IPv4-compatible, deprecated
        "100::1",  # discard-only
        "2001::1",  # Teredo
        "2001:2::1",  # benchmarking
        "2001:db8::1",  # documentation
        "3fff::1",  # documentation
        "5f00::1",  # SRv6
        "64:ff9b:1::808:808",  # local-use NAT64
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "fec0::1",  # site-local
        "ff02::1",
        "ff0e::1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    with pytest.raises(DestinationBlocked) as refused:
        DEFAULT.check_ip(ip(address))

    assert refused.value.message == f"DestinationBlocked: {ip(address)} is not a public address"


@pytest.mark.parametrize(
    ("address", "embedded"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("64:ff9b::7f00:1", "127.0.0.1"),
        ("2002:7f00:1::", "127.0.0.1"),
        ("2002:c0a8:101::1", "192.168.1.1"),
    ],
)
def test_wrapped_non_public_ipv4_addresses_are_refused(address: str, embedded: str) -> None:
    with pytest.raises(DestinationBlocked) as refused:
        DEFAULT.check_ip(ip(address))

    assert refused.value.detail == f"{ip(address)} embeds {embedded}, which is not a public address"


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.215.14",
        "2606:4700:4700::1111",
        "2a00:1450:4001:80b::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ],
)
def test_public_addresses_pass(address: str) -> None:
    DEFAULT.check_ip(ip(address))


def test_a_link_local_address_with_a_zone_is_still_link_local() -> None:
    with pytest.raises(DestinationBlocked, match="fe80::1 is not a public address"):
        DEFAULT.check_ip(ip("fe80::1%eth0"))


def test_an_allowed_network_opens_plain_and_wrapped_addresses_alike() -> None:
    policy = DestinationPolicy([net("127.0.0.0/8")])

    for address in (
        "127.0.0.1",
        "127.9.9.9",
        "::ffff:127.0.0.1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
    ):
        policy.check_ip(ip(address))
    for address in ("::1", "10.0.0.1", "::ffff:10.0.0.1", "169.254.1.1"):
        with pytest.raises(DestinationBlocked):
            policy.check_ip(ip(address))


def test_an_allowed_ipv6_network_opens_its_addresses() -> None:
    policy = DestinationPolicy([net("fd00::/8"), net("::1/128")])

    policy.check_ip(ip("fd00::1"))
    policy.check_ip(ip("::1"))
    with pytest.raises(DestinationBlocked):
        policy.check_ip(ip("fc00::1"))


def test_a_name_is_refused_if_any_address_it_resolves_to_is_blocked() -> None:
    with pytest.raises(DestinationBlocked) as refused:
        DEFAULT.check_resolved("rebind.example", [ip("93.184.215.14"), ip("10.0.0.7")])

    assert refused.value.message == (
        "DestinationBlocked: rebind.example resolves to 10.0.0.7, which is not a public address"
    )


def test_a_name_resolving_to_a_wrapped_private_address_names_both() -> None:
    with pytest.raises(DestinationBlocked) as refused:
        DEFAULT.check_resolved("wrapped.example", [ip("::ffff:169.254.169.254")])

    assert refused.value.detail == (
        f"wrapped.example resolves to {ip('::ffff:169.254.169.254')}, "
        "which embeds 169.254.169.254, not a public address"
    )


def test_a_name_resolving_only_to_public_addresses_passes() -> None:
    DEFAULT.check_resolved("example.com", [ip("93.184.215.14"), ip("2606:2800:21f:cb07::1")])


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", ip("127.0.0.1")),
        ("8.8.8.8", ip("8.8.8.8")),
        ("::1", ip("::1")),
        ("[::1]", ip("::1")),
        ("::ffff:7f00:1", ip("::ffff:127.0.0.1")),
        ("fe80::1%25eth0", ip("fe80::1")),
        ("example.com", None),
        ("localhost", None),
        ("xn--bcher-kva.de", None),
        ("1.example.com", None),
        ("a0x1.example", None),
    ],
)
def test_parse_host_reads_canonical_literals_and_leaves_names(
    host: str, expected: IPAddress | None
) -> None:
    assert parse_host(host) == expected


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",
        "0x7f000001",
        "0X7F000001",
        "0177.0.0.1",
        "127.000.000.001",
        "127.1",
        "127.0.1",
        "0x7f.1",
        "10.1",
        "127.0.0.1.",
        "example.123",
        "example.0x1f",
    ],
)
def test_non_canonical_ipv4_literals_are_refused_even_when_allowed(host: str) -> None:
    with pytest.raises(DestinationBlocked) as refused:
        parse_host(host)

    assert refused.value.detail == f"{host} is not a canonical IP address"


def test_a_host_with_a_colon_that_is_no_ipv6_address_is_invalid() -> None:
    with pytest.raises(InvalidURL):
        parse_host("[::1::2]")


ipv4_addresses = st.ip_addresses(v=4)
any_addresses = st.ip_addresses()


@given(ipv4_addresses)
def test_no_address_that_ipaddress_calls_special_passes(address: ipaddress.IPv4Address) -> None:
    special = (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )
    if special:
        assert DEFAULT.refusal(address) is not None


@given(any_addresses)
def test_every_ipv6_address_that_passes_is_global_unicast_or_wraps_a_public_ipv4(
    address: IPAddress,
) -> None:
    if isinstance(address, ipaddress.IPv6Address) and DEFAULT.refusal(address) is None:
        assert (
            address in net("2000::/3")
            or address in net("64:ff9b::/96")
            or (address.ipv4_mapped is not None)
        )
        assert not address.is_multicast
        assert not address.is_link_local
        assert not address.is_site_local


@given(ipv4_addresses, st.integers(min_value=0, max_value=2**80 - 1))
def test_a_wrapped_ipv4_address_gets_the_verdict_of_the_address_it_wraps(
    address: ipaddress.IPv4Address, suffix: int
) -> None:
    verdict = is_public(address)
    mapped = ipaddress.IPv6Address(0xFFFF << 32 | int(address))
    nat64 = ipaddress.IPv6Address(int(ip("64:ff9b::")) | int(address))
    sixtofour = ipaddress.IPv6Address(0x2002 << 112 | int(address) << 80 | suffix)

    assert is_public(mapped) is verdict
    assert is_public(nat64) is verdict
    assert is_public(sixtofour) is verdict
    assert (DEFAULT.refusal(mapped) is None) is verdict


@given(any_addresses, st.integers(min_value=0, max_value=32))
def test_every_address_inside_an_allowed_network_passes(address: IPAddress, prefix: int) -> None:
    allowed = ipaddress.ip_network(f"{address}/{prefix}", strict=False)

    DestinationPolicy([allowed]).check_ip(address)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_decimal_and_hex_ipv4_forms_are_refused(number: int) -> None:
    for host in (str(number), hex(number)):
        with pytest.raises(DestinationBlocked):
            parse_host(host)


@given(ipv4_addresses)
def test_a_canonical_dotted_quad_parses_to_itself(address: ipaddress.IPv4Address) -> None:
    assert parse_host(str(address)) == address
