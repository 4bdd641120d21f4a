"""The SSRF classifier, the operator's allow list, and resolution that checks every answer."""

from __future__ import annotations

import ipaddress

import pytest

from services.webhook.ssrf import (
    HostNotResolved,
    IPNetwork,
    SystemResolver,
    UnsafeDestination,
    check_address,
    embedded_ipv4,
    refusal_reason,
    resolve_destination,
)

from .support import FixedResolver

PUBLIC = [
    "93.184.215.14",
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700::1111",
    "2001:4860:4860::8888",
    # Wrappers around public IPv4 addresses lead to public hosts.
    "::ffff:93.184.215.14",
    "64:ff9b::5db8:d70e",
    "2002:5db8:d70e::1",
]
REFUSED = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.255",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "192.0.2.1",
    "198.18.0.1",
    "::",
    "::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "ff02::1",
    "2001:db8::1",
    "2001::1",
    "::7f00:1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::7f00:1",
    "64:ff9b::a00:1",
    "64:ff9b:1::1",
    "2002:7f00:1::",
    "2002:a9fe:a9fe::1",
]


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_are_allowed(text: str) -> None:
    address = ipaddress.ip_address(text)
    assert refusal_reason(address) is None
    check_address(address)


@pytest.mark.parametrize("text", REFUSED)
def test_special_purpose_addresses_are_refused(text: str) -> None:
    address = ipaddress.ip_address(text)
    assert refusal_reason(address) is not None
    with pytest.raises(UnsafeDestination, match="is not allowed"):
        check_address(address)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("fc00::1", "unique local"),
        ("::ffff:127.0.0.1", "loopback"),
    ],
)
def test_reasons_say_what_the_address_is(text: str, reason: str) -> None:
    assert reason in (refusal_reason(ipaddress.ip_address(text)) or "")


@pytest.mark.parametrize(
    ("text", "inner"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("64:ff9b::7f00:1", "127.0.0.1"),
        ("2002:7f00:1::", "127.0.0.1"),
        ("2606:4700::1111", None),
    ],
)
def test_embedded_ipv4(text: str, inner: str | None) -> None:
    address = ipaddress.IPv6Address(text)
    expected = None if inner is None else ipaddress.IPv4Address(inner)
    assert embedded_ipv4(address) == expected


def test_allow_list_overrides_the_refusal() -> None:
    loopback: list[IPNetwork] = [ipaddress.ip_network("127.0.0.0/8")]
    check_address(ipaddress.ip_address("127.0.0.1"), loopback)
    check_address(ipaddress.ip_address("::ffff:127.0.0.1"), loopback)
    with pytest.raises(UnsafeDestination):
        check_address(ipaddress.ip_address("10.0.0.1"), loopback)
    with pytest.raises(UnsafeDestination):
        check_address(ipaddress.ip_address("::1"), loopback)


async def test_every_resolved_address_must_be_allowed() -> None:
    resolver = FixedResolver(
        {
            "good.example": ["93.184.215.14", "2606:4700::1111"],
            "mixed.example": ["8.8.8.8", "10.1.2.3"],
        }
    )
    addresses = await resolve_destination("good.example", 443, resolver)
    assert [str(a) for a in addresses] == ["93.184.215.14", "2606:4700::1111"]
    with pytest.raises(UnsafeDestination, match=r"10\.1\.2\.3"):
        await resolve_destination("mixed.example", 443, resolver)


async def test_ip_literals_are_not_looked_up() -> None:
    resolver = FixedResolver({})
    with pytest.raises(UnsafeDestination):
        await resolve_destination("169.254.169.254", 80, resolver)
    with pytest.raises(UnsafeDestination):
        await resolve_destination("[fe80::1%eth0]", 80, resolver)
    assert resolver.asked == []


async def test_unresolvable_host() -> None:
    with pytest.raises(HostNotResolved):
        await resolve_destination("nowhere.example", 443, FixedResolver({}))
    with pytest.raises(HostNotResolved):
        await resolve_destination("junk.example", 443, FixedResolver({"junk.example": ["x"]}))


async def test_system_resolver_answers_for_localhost() -> None:
    # No network needed: localhost comes from the hosts file.
    addresses = await SystemResolver().resolve("localhost", 80)
    assert addresses
    assert all(ipaddress.ip_address(text.split("%")[0]).is_loopback for text in addresses)


async def test_system_resolver_refuses_names_that_cannot_exist() -> None:
    with pytest.raises(HostNotResolved):
        await SystemResolver().resolve("a" * 64 + ".invalid", 80)
