"""Webhook destination URLs: syntax, scheme and where they resolve, as InvalidArgument(url)."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import SplitResult, urlsplit

from services.common.errors import InvalidArgument
from services.webhook.ssrf import (
    DestinationError,
    IPNetwork,
    Resolver,
    is_allowed,
    resolve_destination,
)

FIELD = "url"
MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_url(url: str) -> SplitResult:
    """The URL's parts when it is an absolute http(s) URL with a host and no credentials."""
    if not url:
        raise InvalidArgument(FIELD, "is required")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgument(FIELD, f"must be at most {MAX_URL_LENGTH} characters")
    # urlsplit silently drops some of these, so the URL checked would not be the one stored.
    if any(char.isspace() or not char.isprintable() for char in url):
        raise InvalidArgument(FIELD, "must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidArgument(FIELD, "is not a valid URL") from None
    if parts.scheme.lower() not in DEFAULT_PORTS:
        raise InvalidArgument(FIELD, "must be an absolute http or https URL")
    if "@" in parts.netloc:
        raise InvalidArgument(FIELD, "must not contain credentials (user:password@)")
    if not parts.hostname:
        raise InvalidArgument(FIELD, "must name a host")
    if port == 0:
        raise InvalidArgument(FIELD, "port must be 1 to 65535")
    return parts


async def check_destination(
    url: str, resolver: Resolver, allowed: Sequence[IPNetwork] = ()
) -> None:
    """InvalidArgument(url) unless webhooks may be delivered to `url`.

    https is required unless every address the host resolves to is in the allow list.
    """
    parts = parse_url(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    try:
        addresses = await resolve_destination(
            host, parts.port or DEFAULT_PORTS[scheme], resolver, allowed
        )
    except DestinationError as exc:
        raise InvalidArgument(FIELD, str(exc)) from None
    if scheme != "https" and not all(is_allowed(address, allowed) for address in addresses):
        raise InvalidArgument(FIELD, "must use https")
