"""The address of the client behind an RPC: the gRPC peer, or what trusted proxies say it was.

The gateway (Envoy, `use_remote_address: true`, `xff_num_trusted_hops: 0`) appends the address
it saw to `x-forwarded-for`. Anything to the left of that entry came from the client and can be
forged, so the list is read from the right: each entry is the peer of the hop to its right, and
the client is the first entry, from the right, that is not itself a trusted proxy. A peer that
is not a trusted proxy is the client, whatever headers it sends.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import unquote

from services.common.config import ConfigError, env_list

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

TRUSTED_PROXY_CIDRS_VARIABLE = "TRUSTED_PROXY_CIDRS"
DEFAULT_TRUSTED_PROXY_CIDRS = ("127.0.0.0/8", "::1/128")
FORWARDED_FOR = "x-forwarded-for"
# Real chains are a few hops; a longer one is cut short rather than walked to the end.
MAX_HOPS = 16
# IPv6 clients usually get a whole /64, so per-address limits count the /64.
IPV6_SUBJECT_PREFIX = 64


@dataclass(frozen=True, slots=True)
class ClientAddress:
    """Who sent the request; `internal` when every hop, the origin included, is a trusted proxy."""

    ip: IPAddress | None
    internal: bool

    @property
    def subject(self) -> str:
        """The string per-address limits count under: the IPv4 address, or the IPv6 /64."""
        if self.ip is None:
            return "unknown"
        if isinstance(self.ip, IPv6Address):
            return str(ipaddress.ip_network(f"{self.ip}/{IPV6_SUBJECT_PREFIX}", strict=False))
        return str(self.ip)


def parse_ip(text: str) -> IPAddress | None:
    """An address from an `x-forwarded-for` entry (`1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]:80`).

    IPv4-mapped IPv6 addresses become IPv4, so one client has one form; None when malformed.
    """
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_peer(peer: str) -> IPAddress | None:
    """The address in a gRPC peer string (`ipv4:1.2.3.4:5`, `ipv6:%5B::1%5D:5`); None for others
    (e.g. `unix:` sockets)."""
    scheme, _, rest = unquote(peer).partition(":")
    if scheme not in ("ipv4", "ipv6"):
        return None
    return parse_ip(rest)


class TrustedProxies:
    """The networks whose `x-forwarded-for` entries are believed (TRUSTED_PROXY_CIDRS)."""

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self.networks = tuple(networks)

    def __contains__(self, address: IPAddress | None) -> bool:
        # No address means a local transport (a Unix socket): only a local process can use it.
        if address is None:
            return True
        return any(address in network for network in self.networks)

    def client(self, peer: str, forwarded_for: Sequence[str] = ()) -> ClientAddress:
        """The client of a request from `peer` carrying these `x-forwarded-for` values."""
        current = parse_peer(peer)
        if current not in self:
            return ClientAddress(current, internal=False)
        entries = [entry for value in forwarded_for for entry in value.split(",")]
        for hops, entry in enumerate(reversed(entries)):
            address = parse_ip(entry)
            if address is None or hops >= MAX_HOPS:
                # A trusted hop passed on something unreadable: the last readable address
                # stands for the client, counted as external so it is still limited.
                return ClientAddress(current, internal=False)
            current = address
            if current not in self:
                return ClientAddress(current, internal=False)
        return ClientAddress(current, internal=True)


def forwarded_for_values(metadata: Iterable[tuple[str, str | bytes]] | None) -> list[str]:
    """Every `x-forwarded-for` value in the call's metadata, in the order received."""
    return [
        value for key, value in metadata or () if key == FORWARDED_FOR and isinstance(value, str)
    ]


def parse_trusted_proxies(name: str, items: Sequence[str]) -> TrustedProxies:
    """TrustedProxies from CIDR strings; ConfigError naming the variable and the bad item."""
    networks: list[IPNetwork] = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            raise ConfigError(
                f"environment variable {name} has a bad CIDR {item!r}: {exc}"
            ) from None
    return TrustedProxies(networks)


def trusted_proxies_from_env(environ: Mapping[str, str] | None = None) -> TrustedProxies:
    """TRUSTED_PROXY_CIDRS (comma-separated), by default loopback only; `none` trusts nobody."""
    items = env_list(
        TRUSTED_PROXY_CIDRS_VARIABLE, list(DEFAULT_TRUSTED_PROXY_CIDRS), environ=environ
    )
    if [item.lower() for item in items] == ["none"]:
        return TrustedProxies(())
    return parse_trusted_proxies(TRUSTED_PROXY_CIDRS_VARIABLE, items)
