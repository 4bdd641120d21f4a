"""Destination URL validation: syntax, scheme and the SSRF check, all as InvalidArgument(url)."""

from __future__ import annotations

import ipaddress

import pytest

from services.common.errors import InvalidArgument
from services.webhook.destinations import check_destination, parse_url
from services.webhook.ssrf import IPNetwork

from .support import FixedResolver

RESOLVER = FixedResolver(
    {
        "hooks.example.com": ["93.184.215.14"],
        "v6.example.com": ["2606:4700::1111"],
        "internal.example.com": ["10.0.0.7"],
        "rebind.example.com": ["93.184.215.14", "127.0.0.1"],
        "localhost": ["127.0.0.1", "::1"],
    }
)
LOOPBACK_V4: list[IPNetwork] = [ipaddress.ip_network("127.0.0.0/8")]


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/webhook",
        "https://hooks.example.com:8443/a?b=c",
        "HTTPS://HOOKS.EXAMPLE.COM/",
        "https://v6.example.com",
        "https://93.184.215.14/hook",
        "https://[2606:4700::1111]/hook",
    ],
)
async def test_good_urls(url: str) -> None:
    await check_destination(url, RESOLVER)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "required"),
        ("https://hooks.example.com/" + "a" * 2048, "2048"),
        ("hooks.example.com/webhook", "absolute http or https"),
        ("/relative/path", "absolute http or https"),
        ("ftp://hooks.example.com/", "absolute http or https"),
        ("javascript:alert(1)", "absolute http or https"),
        ("https:///path-only", "host"),
        ("https://user:pw@hooks.example.com/", "credentials"),
        ("https://user@hooks.example.com/", "credentials"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
        ("https://hooks.example.com:0/", "port"),
        ("https://hooks.example.com/a b", "whitespace"),
        ("https://hooks.example.com/\x00", "control"),
        (" https://hooks.example.com/", "whitespace"),
        ("http://hooks.example.com/", "https"),
        ("https://nowhere.example.com/", "host does not resolve"),
        ("https://internal.example.com/", "destination 10.0.0.7 is not allowed"),
        ("https://rebind.example.com/", "destination 127.0.0.1 is not allowed"),
        ("https://127.0.0.1/", "not allowed"),
        ("https://[::1]:8080/", "not allowed"),
        ("https://169.254.169.254/latest/meta-data/", "not allowed"),
        ("https://localhost/", "not allowed"),
    ],
)
async def test_bad_urls_name_the_url_field(url: str, problem: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await check_destination(url, RESOLVER)
    assert caught.value.field == "url"
    assert problem in caught.value.message


async def test_plain_http_only_inside_the_allow_list() -> None:
    await check_destination("http://127.0.0.1:9000/hook", RESOLVER, LOOPBACK_V4)
    await check_destination("https://127.0.0.1:9000/hook", RESOLVER, LOOPBACK_V4)
    # localhost also answers ::1, which the allow list does not cover.
    with pytest.raises(InvalidArgument, match="::1"):
        await check_destination("http://localhost:9000/hook", RESOLVER, LOOPBACK_V4)
    with pytest.raises(InvalidArgument, match="https"):
        await check_destination("http://hooks.example.com/", RESOLVER, LOOPBACK_V4)


def test_parse_url_keeps_the_parts() -> None:
    parts = parse_url("https://hooks.example.com:8443/path?q=1")
    assert (parts.hostname, parts.port, parts.path) == ("hooks.example.com", 8443, "/path")
