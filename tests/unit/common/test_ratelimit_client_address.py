"""The client address behind an RPC: gRPC peers, x-forwarded-for read from the right."""

from __future__ import annotations

import ipaddress

import pytest

from services.common.client_address import (
    MAX_HOPS,
    ClientAddress,
    TrustedProxies,
    forwarded_for_values,
    parse_ip,
    parse_peer,
    trusted_proxies_from_env,
)
from services.common.config import ConfigError

LOOPBACK_PEER = "ipv4:127.0.0.1:40123"
DIRECT_PEER = "ipv4:203.0.113.9:40123"


@pytest.fixture
def trusted() -> TrustedProxies:
    return trusted_proxies_from_env({"TRUSTED_PROXY_CIDRS": "127.0.0.0/8,::1/128,10.1.0.0/16"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.51.100.7", "198.51.100.7"),
        (" 198.51.100.7 ", "198.51.100.7"),
        ("198.51.100.7:8443", "198.51.100.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
    ],
)
def test_forwarded_entries_parse(text: str, expected: str) -> None:
    assert parse_ip(text) == ipaddress.ip_address(expected)


@pytest.mark.parametrize("text", ["", "unknown", "198.51.100", "[2001:db8::1", "_hidden", "a:b"])
def test_malformed_entries_are_none(text: str) -> None:
    assert parse_ip(text) is None


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("ipv4:127.0.0.1:5000", "127.0.0.1"),
        ("ipv6:[::1]:5000", "::1"),
        ("ipv6:%5B::1%5D:5000", "::1"),
        ("ipv6:%5B::ffff:127.0.0.1%5D:5000", "127.0.0.1"),
    ],
)
def test_grpc_peers_parse(peer: str, expected: str) -> None:
    assert parse_peer(peer) == ipaddress.ip_address(expected)


def test_unix_socket_peers_have_no_address() -> None:
    assert parse_peer("unix:/run/auth.sock") is None


def test_an_untrusted_peer_is_the_client_whatever_it_forwards(trusted: TrustedProxies) -> None:
    client = trusted.client(DIRECT_PEER, ["198.51.100.7"])
    assert client == ClientAddress(ipaddress.ip_address("203.0.113.9"), internal=False)


def test_the_gateways_entry_names_the_client(trusted: TrustedProxies) -> None:
    client = trusted.client(LOOPBACK_PEER, ["198.51.100.7"])
    assert client == ClientAddress(ipaddress.ip_address("198.51.100.7"), internal=False)


@pytest.mark.parametrize(
    "forged",
    ["1.2.3.4", "127.0.0.1", "10.1.2.3", "1.2.3.4, 5.6.7.8", "not an address", "::1"],
)
def test_entries_left_of_the_first_untrusted_one_are_ignored(
    trusted: TrustedProxies, forged: str
) -> None:
    # What the client sent is left of what the gateway appended: never read as the client.
    client = trusted.client(LOOPBACK_PEER, [f"{forged}, 198.51.100.7"])
    assert client.ip == ipaddress.ip_address("198.51.100.7")
    assert not client.internal


def test_trusted_hops_are_skipped_from_the_right(trusted: TrustedProxies) -> None:
    # client -> load balancer (10.1.0.5) -> gateway (127.0.0.1) -> service
    client = trusted.client(LOOPBACK_PEER, ["6.6.6.6, 198.51.100.7, 10.1.0.5"])
    assert client.ip == ipaddress.ip_address("198.51.100.7")


def test_several_header_values_are_one_list_in_order(trusted: TrustedProxies) -> None:
    client = trusted.client(LOOPBACK_PEER, ["6.6.6.6", "198.51.100.7", "10.1.0.5"])
    assert client.ip == ipaddress.ip_address("198.51.100.7")


def test_a_chain_of_trusted_hops_only_is_internal(trusted: TrustedProxies) -> None:
    assert trusted.client(LOOPBACK_PEER, []).internal
    client = trusted.client(LOOPBACK_PEER, ["10.1.0.5, 127.0.0.1"])
    assert client == ClientAddress(ipaddress.ip_address("10.1.0.5"), internal=True)


def test_garbage_from_a_trusted_hop_counts_as_that_hop_externally(trusted: TrustedProxies) -> None:
    client = trusted.client(LOOPBACK_PEER, ["198.51.100.7, garbage, 10.1.0.5"])
    assert client == ClientAddress(ipaddress.ip_address("10.1.0.5"), internal=False)


def test_very_long_chains_are_cut_short(trusted: TrustedProxies) -> None:
    chain = ", ".join(["198.51.100.7"] + ["10.1.0.5"] * (MAX_HOPS + 4))
    client = trusted.client(LOOPBACK_PEER, [chain])
    assert client.ip == ipaddress.ip_address("10.1.0.5")
    assert not client.internal


def test_ipv6_clients_are_counted_by_their_64(trusted: TrustedProxies) -> None:
    first = trusted.client(LOOPBACK_PEER, ["2001:db8:1:2::7"])
    second = trusted.client(LOOPBACK_PEER, ["2001:db8:1:2:ffff::9"])
    assert first.subject == second.subject == "2001:db8:1:2::/64"
    assert trusted.client(LOOPBACK_PEER, ["198.51.100.7"]).subject == "198.51.100.7"


def test_default_trust_is_loopback_only() -> None:
    trusted = trusted_proxies_from_env({})
    assert ipaddress.ip_address("127.0.0.1") in trusted
    assert ipaddress.ip_address("::1") in trusted
    assert ipaddress.ip_address("10.0.0.1") not in trusted
    assert trusted.client(LOOPBACK_PEER, ["10.0.0.1"]).ip == ipaddress.ip_address("10.0.0.1")


def test_none_trusts_nobody() -> None:
    trusted = trusted_proxies_from_env({"TRUSTED_PROXY_CIDRS": "none"})
    client = trusted.client(LOOPBACK_PEER, ["198.51.100.7"])
    assert client == ClientAddress(ipaddress.ip_address("127.0.0.1"), internal=False)


@pytest.mark.parametrize("value", ["10.0.0.1/8", "banana", "10.0.0.0/33"])
def test_bad_cidrs_fail_start_up_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match="TRUSTED_PROXY_CIDRS"):
        trusted_proxies_from_env({"TRUSTED_PROXY_CIDRS": value})


def test_forwarded_for_values_come_from_metadata() -> None:
    metadata = (
        ("x-forwarded-for", "1.2.3.4"),
        ("authorization", "Bearer x"),
        ("x-forwarded-for", "5.6.7.8"),
        ("x-forwarded-for-bin", b"\x00"),
    )
    assert forwarded_for_values(metadata) == ["1.2.3.4", "5.6.7.8"]
    assert forwarded_for_values(None) == []
