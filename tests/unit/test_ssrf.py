"""The outgoing address classifier (infrastructure/ssrf.py), on whole families of addresses:
each refused range sampled at its edges and inside (IPv4, and the IPv6 forms that carry an
IPv4 address), every spelling a resolver accepts for a host, and the public addresses that
must pass."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infrastructure.ssrf import (
    AddressRefused,
    OutboundPolicy,
    check_literal,
    checked_addresses,
    literal_address,
    refusal,
)

STRICT = OutboundPolicy()
OPEN = OutboundPolicy(allow_private=True, allow_http=True)

REFUSED_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
]
REFUSED_V6 = [
    "::1/128",
    "::/128",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
    "2001:db8::/32",
    "100::/64",
]
PUBLIC_V4 = ["93.184.215.14", "8.8.8.8", "1.1.1.1", "151.101.1.69", "100.63.255.255", "172.32.0.1"]
PUBLIC_V6 = ["2606:4700:4700::1111", "2a00:1450:4001:80b::200e"]


def samples(network: str, count: int = 20) -> list[str]:
    """Its first and last addresses and ``count`` in between."""
    net = ipaddress.ip_network(network)
    rng = random.Random(network)
    inside = [net.network_address + rng.randrange(net.num_addresses) for _ in range(count)]
    return [str(a) for a in (net.network_address, net.broadcast_address, *inside)]


def v4_spellings(address: str) -> list[str]:
    """The spellings of an IPv4 address inet_aton and URL parsers accept."""
    a, b, c, d = (int(p) for p in address.split("."))
    value = int(ipaddress.IPv4Address(address))
    return [
        address,
        address + ".",
        str(value),
        hex(value),
        f"{oct(a).replace('0o', '0')}.{oct(b).replace('0o', '0')}.{c}.{d}",
        f"{hex(a)}.{b}.{c}.{d}",
        f"{a}.{(b << 16) | (c << 8) | d}",
        f"{hex(a)}.{hex((b << 16) | (c << 8) | d)}",
        f"{a}.{b}.{(c << 8) | d}",
        f"[::ffff:{address}]",
        f"[::ffff:{(a << 8) | b:x}:{(c << 8) | d:x}]",
        f"[64:ff9b::{address}]",
        f"[2002:{(a << 8) | b:x}:{(c << 8) | d:x}::1]",
    ]


@pytest.mark.parametrize("network", REFUSED_V4)
def test_every_refused_ipv4_range_is_refused_in_every_spelling(network: str) -> None:
    for address in samples(network):
        for spelling in v4_spellings(address):
            parsed = literal_address(spelling)
            assert parsed is not None, spelling
            assert refusal(parsed, STRICT) is not None, spelling
            with pytest.raises(AddressRefused):
                check_literal(spelling, STRICT)
            with pytest.raises(AddressRefused):
                checked_addresses(spelling, 443, STRICT)


@pytest.mark.parametrize("network", REFUSED_V6)
def test_every_refused_ipv6_range_is_refused(network: str) -> None:
    for address in samples(network):
        with pytest.raises(AddressRefused):
            check_literal(f"[{address}]", STRICT)


@pytest.mark.parametrize("address", PUBLIC_V4)
def test_public_ipv4_addresses_pass_in_every_plain_spelling(address: str) -> None:
    for spelling in v4_spellings(address)[:11]:  # the 6to4 and NAT64 forms: see below
        parsed = literal_address(spelling)
        assert parsed is not None and refusal(parsed, STRICT) is None, spelling
        assert checked_addresses(spelling, 443, STRICT) == [ipaddress.ip_address(address)]


@pytest.mark.parametrize("address", PUBLIC_V6)
def test_public_ipv6_addresses_pass(address: str) -> None:
    check_literal(f"[{address}]", STRICT)


def test_the_named_examples() -> None:
    for host in ("0x7f.1", "2130706433", "[::ffff:127.0.0.1]", "0177.0.0.1", "127.1", "0"):
        assert literal_address(host) in (
            ipaddress.ip_address("127.0.0.1"),
            ipaddress.ip_address("::ffff:127.0.0.1"),
            ipaddress.ip_address("0.0.0.0"),
        ), host
        with pytest.raises(AddressRefused):
            check_literal(host, STRICT)
    for metadata in ("169.254.169.254", "[fd00:ec2::254]", "100.100.100.200"):
        with pytest.raises(AddressRefused):
            check_literal(metadata, STRICT)


def test_localhost_names_are_refused_and_resolved_names_are_checked() -> None:
    for name in ("localhost", "LOCALHOST.", "api.localhost"):
        with pytest.raises(AddressRefused):
            check_literal(name, STRICT)
    # A name is resolved, and every address it resolves to checked.
    with pytest.raises(AddressRefused):
        checked_addresses("localhost", 443, OutboundPolicy(allow_private=False))


@pytest.mark.parametrize(
    "host", ["1.2.3.4.5", "256.1.1.1", "1.2.3.0x1g", "0x100000000", "1.16777216.0", "[::1%eth0]"]
)
def test_what_looks_like_an_address_but_is_none_is_refused(host: str) -> None:
    with pytest.raises(AddressRefused):
        literal_address(host)


def test_names_are_not_addresses() -> None:
    for name in ("example.com", "hooks.example.org.", "1.example", "0x.example", "a1"):
        assert literal_address(name) is None, name


def test_the_operator_setting_allows_private_unicast_but_never_multicast() -> None:
    for address in ("127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "fd00::1"):
        assert refusal(ipaddress.ip_address(address), OPEN) is None
    for address in ("224.0.0.1", "ff02::1", "0.0.0.0", "::"):
        assert refusal(ipaddress.ip_address(address), OPEN) is not None


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_any_ipv4_address_is_classified_alike_in_every_spelling(value: int) -> None:
    address = str(ipaddress.IPv4Address(value))
    verdict = refusal(ipaddress.IPv4Address(value), STRICT) is None
    for spelling in v4_spellings(address)[:10]:
        parsed = literal_address(spelling)
        assert parsed is not None, spelling
        assert (refusal(parsed, STRICT) is None) == verdict, spelling
