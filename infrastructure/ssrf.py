"""Where an outgoing request (a webhook) may go: public unicast addresses only, unless the
operator allows more.

A URL a user gives can point inside: at the loopback, the private network, the cloud's
metadata service. Every address is classified here, the literal ones written in a URL in any
spelling a resolver accepts (``2130706433``, ``0x7f.1``, ``0177.0.0.1``,
``[::ffff:127.0.0.1]``) and every address a name resolves to. The sender
(infrastructure/webhook_delivery.py) resolves once, checks every address, and connects to
the checked address itself, so a name that resolves elsewhere a moment later (DNS
rebinding) changes nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(ValueError):
    """The host is, or resolves to, an address outgoing requests may not reach."""


class HostUnresolved(ValueError):
    """The host name does not resolve (now)."""


@dataclass(frozen=True)
class OutboundPolicy:
    """``allow_private``: any unicast address (loopback, private, link-local...);
    ``allow_http``: plain http besides https. Both off by default."""

    allow_private: bool = False
    allow_http: bool = False


# Refused although ``ipaddress`` does not flag them all as private or reserved.
_V4_REFUSED = [
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT (and Alibaba's metadata at 100.100.100.200)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, the cloud metadata services (169.254.169.254)
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
    )
]
_V6_REFUSED = [
    ipaddress.IPv6Network(n)
    for n in (
        "::/128",
        "::1/128",
        "::/96",  # IPv4-compatible (deprecated)
        "::ffff:0:0/96",  # IPv4-mapped: classified by the IPv4 address they carry, below
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments (Teredo's 2001::/32 among them)
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4: carries an IPv4 address, classified below
        "fc00::/7",  # unique local (AWS's metadata at fd00:ec2::254)
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
]
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def refusal(address: IPAddress, policy: OutboundPolicy = OutboundPolicy()) -> str | None:
    """Why ``address`` may not be reached, or None when it may."""
    if address.is_multicast or address.is_unspecified:
        return f"{address} is not a unicast address"
    if policy.allow_private:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_v4(address)
        if embedded is not None:
            inner = refusal(embedded, policy)
            if inner is not None:
                return f"{address} carries {embedded}: {inner}"
            if address.ipv4_mapped is not None:
                return None
        if any(address in n for n in _V6_REFUSED) and address.ipv4_mapped is None:
            return f"{address} is in a range outgoing requests may not reach"
    elif any(address in n for n in _V4_REFUSED):
        return f"{address} is in a range outgoing requests may not reach"
    if not address.is_global or address.is_reserved or address.is_private:
        return f"{address} is not a public address"
    return None


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64, Teredo's server)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.teredo is not None:
        return address.teredo[1]
    return None


def _number(text: str) -> int | None:
    """One part of an IPv4 address as inet_aton (and the WHATWG URL parser) read it:
    decimal, ``0x`` hexadecimal or ``0``-prefixed octal."""
    try:
        if text[:2].lower() == "0x":
            return int(text[2:] or "0", 16)
        if len(text) > 1 and text.startswith("0"):
            return int(text[1:], 8)
        if text.isdigit():
            return int(text)
    except ValueError:
        return None
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells, if it is one, however spelled; None for a name.

    Raises AddressRefused for a host that looks like a number but is none (``1.2.3.4.5``,
    ``0x1g``): resolvers differ on those, so they are refused rather than guessed."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        if "%" in host:
            raise AddressRefused("IPv6 zone identifiers are not allowed")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressRefused(f"{host!r} is not a valid IPv6 address") from None
    # One trailing dot is the root of the DNS: "127.0.0.1." is 127.0.0.1.
    parts = host.removesuffix(".").split(".")
    last = parts[-1]
    if not last or not (last.isdigit() or last[:2].lower() == "0x"):
        return None  # a name (its last label is not a number)
    numbers = [_number(p) for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise AddressRefused(f"{host!r} looks like an address but is not one")
    values = [n for n in numbers if n is not None]
    *leading, tail = values
    if any(v > 255 for v in leading) or tail >= 256 ** (5 - len(values)):
        raise AddressRefused(f"{host!r} is out of range for an IPv4 address")
    value = 0
    for v in leading:
        value = value * 256 + v
    value = (value << (8 * (5 - len(values)))) | tail
    return ipaddress.IPv4Address(value)


def check_literal(host: str, policy: OutboundPolicy) -> None:
    """Refuses a host that is a refused address (a name passes: see ``checked_addresses``)."""
    name = host.lower().rstrip(".")
    if not policy.allow_private and (name == "localhost" or name.endswith(".localhost")):
        raise AddressRefused("localhost is not a public host")
    address = literal_address(host)
    if address is not None:
        reason = refusal(address, policy)
        if reason is not None:
            raise AddressRefused(reason)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to now (IPv4 and IPv6)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise HostUnresolved(f"{host!r} does not resolve: {exc}") from None
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in found:
            found.append(address)
    return found


def checked_addresses(host: str, port: int, policy: OutboundPolicy) -> list[IPAddress]:
    """The addresses to connect to for ``host``: all of them allowed, or AddressRefused
    (one refused address refuses the host: a resolver may hand out either)."""
    check_literal(host, policy)
    literal = literal_address(host)
    addresses = [literal] if literal is not None else resolve(host, port)
    if not addresses:
        raise HostUnresolved(f"{host!r} has no address")
    for address in addresses:
        reason = refusal(address, policy)
        if reason is not None:
            raise AddressRefused(f"{host} resolves to {reason}")
    # An IPv4-mapped address is connected to as the IPv4 address it is.
    return [
        a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped else a
        for a in addresses
    ]
