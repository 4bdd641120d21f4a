"""SSRF guard: which IP addresses a webhook may reach, and name resolution that checks them.

Used when an endpoint is registered and again by the delivery worker at connect time, after
DNS, so a name that later resolves somewhere internal is still refused (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Protocol

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

DNS_TIMEOUT_S = 5.0


def _table(*rows: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), reason) for net, reason in rows)


# Named for the refusal message; anything else that is not globally reachable is refused too.
_REFUSED = _table(
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignment"),
    ("2001:db8::/32", "documentation"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
_NAT64 = IPv6Network("64:ff9b::/96")


class DestinationError(Exception):
    """A webhook destination cannot be used; the message is safe to show the tenant."""


class UnsafeDestination(DestinationError):
    """The destination resolves to an address webhooks must not reach."""


class HostNotResolved(DestinationError):
    """The destination's host name does not resolve."""


class Resolver(Protocol):
    """Name resolution (the system resolver in production, fixed answers in tests)."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """The host's addresses as text; HostNotResolved when there are none."""


class SystemResolver:
    """Resolver on the event loop's getaddrinfo, with a timeout."""

    def __init__(self, timeout_s: float = DNS_TIMEOUT_S) -> None:
        self._timeout_s = timeout_s

    async def resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), self._timeout_s
            )
        except (OSError, ValueError, TimeoutError) as exc:
            raise HostNotResolved("host does not resolve") from exc
        addresses = [str(sockaddr[0]) for *_, sockaddr in infos]
        if not addresses:
            raise HostNotResolved("host does not resolve")
        return addresses


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4 address leads to."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def refusal_reason(address: IPAddress) -> str | None:
    """Why webhooks must not reach `address`; None when it is a public unicast address."""
    if isinstance(address, IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            # The packet ends up at the embedded IPv4 address, so that is what is judged.
            reason = refusal_reason(inner)
            return None if reason is None else f"{reason} (embedded in {address})"
    for network, reason in _REFUSED:
        if address in network:
            return reason
    if address.is_multicast:
        return "multicast"
    if address.is_reserved or address.is_unspecified or not address.is_global:
        return "reserved"
    return None


def is_allowed(address: IPAddress, allowed: Iterable[IPNetwork]) -> bool:
    """True when the operator's allow list covers `address` (or the IPv4 address it embeds)."""
    candidates: list[IPAddress] = [address]
    if isinstance(address, IPv6Address) and (inner := embedded_ipv4(address)) is not None:
        candidates.append(inner)
    return any(candidate in network for candidate in candidates for network in allowed)


def check_address(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> None:
    """UnsafeDestination unless `address` is public or in the allow list."""
    if is_allowed(address, allowed):
        return
    reason = refusal_reason(address)
    if reason is not None:
        raise UnsafeDestination(f"destination {address} is not allowed: {reason} address")


def parse_address(text: str) -> IPAddress | None:
    """An IP literal (brackets and IPv6 zone dropped), or None for a host name."""
    text = text.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


async def resolve_destination(
    host: str, port: int, resolver: Resolver, allowed: Sequence[IPNetwork] = ()
) -> list[IPAddress]:
    """Every address `host` resolves to, each checked; a client may connect to any of them."""
    literal = parse_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        resolved = [parse_address(text) for text in await resolver.resolve(host, port)]
        addresses = [address for address in resolved if address is not None]
        if not addresses:
            raise HostNotResolved("host does not resolve")
    for address in addresses:
        check_address(address, allowed)
    return addresses
