"""LocalCache's rules, with a feed whose liveness the test sets (the real feed against Redis is
tests/integration/test_invalidation_feed.py)."""

from __future__ import annotations

import asyncio

import pytest

from services.common import local_cache
from services.common.local_cache import MISSING, LocalCache


class Feed:
    def __init__(self) -> None:
        self.live = True
        self.drains = 0

    def drain(self) -> None:
        self.drains += 1


@pytest.fixture
def feed() -> Feed:
    return Feed()


def cache_of(feed: Feed, **limits: float) -> LocalCache[str]:
    settings = {"max_entries": 3, "max_age_s": 10.0, **limits}
    return LocalCache(
        feed, "unit", max_entries=int(settings["max_entries"]), max_age_s=settings["max_age_s"]
    )


def fill(cache: LocalCache[str], key: str, value: str) -> None:
    cache.finish(cache.begin(key), value)


def test_every_lookup_drains_the_feed_first(feed: Feed) -> None:
    cache = cache_of(feed)
    fill(cache, "k", "v")
    before = feed.drains
    assert cache.get("k") == "v"
    assert feed.drains == before + 1


def test_an_invalidation_during_a_fill_keeps_it_out_even_with_a_second_fill(feed: Feed) -> None:
    cache = cache_of(feed)
    first = cache.begin("k")
    cache.invalidate("k")
    second = cache.begin("k")  # began after the change: its value is new, but not kept either
    cache.finish(first, "old")
    cache.finish(second, "new")
    assert cache.get("k") is MISSING
    fill(cache, "k", "new")  # once no fill that saw the change is in flight, fills keep again
    assert cache.get("k") == "new"


def test_a_reset_during_a_fill_keeps_it_out(feed: Feed) -> None:
    cache = cache_of(feed)
    ticket = cache.begin("k")
    cache.reset()
    cache.finish(ticket, "old")
    assert cache.get("k") is MISSING


def test_nothing_is_answered_or_kept_while_the_feed_is_not_live(feed: Feed) -> None:
    cache = cache_of(feed)
    fill(cache, "k", "v")
    feed.live = False
    assert cache.get("k") is MISSING
    fill(cache, "j", "w")
    feed.live = True
    assert cache.get("j") is MISSING


def test_a_failed_lookup_is_not_kept(feed: Feed) -> None:
    cache = cache_of(feed)
    cache.finish(cache.begin("k"), MISSING)
    assert cache.get("k") is MISSING


def test_entries_expire_and_the_oldest_goes_first(
    feed: Feed, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(local_cache.time, "monotonic", lambda: now[0])
    cache = cache_of(feed, max_entries=2, max_age_s=5.0)
    fill(cache, "a", "1")
    fill(cache, "b", "2")
    fill(cache, "c", "3")
    assert cache.get("a") is MISSING
    assert (cache.get("b"), cache.get("c")) == ("2", "3")
    now[0] += 5.1
    assert cache.get("b") is MISSING


async def test_fetch_keeps_what_the_lookup_found_and_not_what_it_raised(feed: Feed) -> None:
    cache = cache_of(feed)
    calls = []

    async def lookup() -> str:
        calls.append(1)
        return "found"

    assert await cache.fetch("k", lookup) == "found"
    assert await cache.fetch("k", lookup) == "found"
    assert len(calls) == 1

    async def failing() -> str:
        raise RuntimeError("Redis down")

    with pytest.raises(RuntimeError):
        await cache.fetch("j", failing)
    assert cache.get("j") is MISSING
    fill(cache, "j", "later")  # the failed fill left no trace behind
    assert cache.get("j") == "later"


async def test_concurrent_misses_share_one_lookup(feed: Feed) -> None:
    cache = cache_of(feed)
    release = asyncio.Event()
    calls = []

    async def lookup() -> str:
        calls.append(1)
        await release.wait()
        return "found"

    waiting = [asyncio.create_task(cache.fetch("k", lookup)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == ["found"] * 5
    assert len(calls) == 1


async def test_a_lookup_begun_after_a_change_never_joins_one_from_before(feed: Feed) -> None:
    cache = cache_of(feed)
    release_old = asyncio.Event()

    async def old() -> str:
        await release_old.wait()
        return "old"

    async def new() -> str:
        return "new"

    first = asyncio.create_task(cache.fetch("k", old))
    await asyncio.sleep(0)
    cache.invalidate("k")  # the write is acknowledged: later lookups must see it
    assert await cache.fetch("k", new) == "new"
    release_old.set()
    assert await first == "old"
    assert cache.get("k") is MISSING  # neither kept: both raced the change


async def test_a_cancelled_first_lookup_leaves_the_others_to_look_up_themselves(
    feed: Feed,
) -> None:
    cache = cache_of(feed)
    never = asyncio.Event()

    async def hangs() -> str:
        await never.wait()
        return "never"

    async def answers() -> str:
        return "found"

    first = asyncio.create_task(cache.fetch("k", hangs))
    await asyncio.sleep(0)
    second = asyncio.create_task(cache.fetch("k", answers))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == "found"
    assert first.cancelled()
