"""Host routing and round-robin, without any I/O."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, strategies as st

from tunnel_core.http.router import Router, normalize_host


def test_round_robin_is_exact_and_removal_keeps_the_turn_order() -> None:
    router = Router()
    for name in "abc":
        router.register(name, ["app.test"])
    assert [router.pick("app.test") for _ in range(6)] == list("abcabc")
    assert router.pick("app.test") == "a"
    router.unregister("b")  # b was next
    assert [router.pick("app.test") for _ in range(4)] == list("caca")


def test_hosts_then_default_then_nothing() -> None:
    router = Router()
    assert router.pick("x.test") is None
    router.register("d", [None])
    router.register("api", ["API.test"])
    assert router.pick("api.TEST:8000") == "api"
    assert router.pick("other.test") == "d"
    router.unregister("d")
    assert router.pick("other.test") is None
    assert router.hosts_of("api") == ("api.test",)
    router.unregister("api")
    assert len(router) == 0 and router.pick("api.test") is None


def test_register_again_replaces_the_hosts() -> None:
    router = Router()
    router.register("c", ["a.test"])
    router.register("c", ["b.test"])
    assert router.pick("a.test") is None and router.pick("b.test") == "c"


def test_normalize_host() -> None:
    assert normalize_host("Example.COM.:80") == "example.com"
    assert normalize_host("[::1]:8000") == "[::1]"


@given(st.integers(1, 8), st.integers(1, 200), st.data())
def test_any_removal_leaves_a_fair_rotation(n: int, picks: int, data: st.DataObject) -> None:
    router = Router()
    for i in range(n):
        router.register(i, ["h"])
    for _ in range(data.draw(st.integers(0, 20))):
        router.pick("h")
    gone = data.draw(st.sets(st.integers(0, n - 1), max_size=n - 1))
    for i in gone:
        router.unregister(i)
    alive = n - len(gone)
    counts = Counter(router.pick("h") for _ in range(picks * alive))
    assert set(counts) == set(range(n)) - gone
    assert set(counts.values()) == {picks}
