"""PMap: the tenant state's persistent map behaves as a dict that is never changed in place."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import PMap, TenantState

KEYS = st.integers(min_value=0, max_value=60)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, st.integers()),
        st.tuples(st.just("discard"), KEYS, st.none()),
        st.tuples(st.just("read"), KEYS, st.none()),  # a full read folds the overlay into the base
        st.tuples(st.just("update"), KEYS, st.lists(st.tuples(KEYS, st.integers()), max_size=4)),
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_every_version_reads_as_the_dict_it_stands_for(ops):
    """Given any run of changes, when each version is read afterwards, then it holds what a dict
    changed the same way held at that point — same entries, same order — whatever came after it."""
    model: dict[int, int] = {}
    current: PMap[int, int] = PMap()
    versions: list[tuple[PMap[int, int], dict[int, int]]] = []
    for op, key, value in ops:
        match op:
            case "set":
                current = current.set(key, value)
                model = {**model, key: value}
            case "discard":
                current = current.discard(key)
                model = {k: v for k, v in model.items() if k != key}
            case "read":
                list(current.items())
            case "update":  # several keys at once, as a dict or as pairs (a key given twice: its last value)
                pairs = [(key, 0), *value]
                current = current.update(dict(pairs) if len(pairs) % 2 else pairs)
                model = {**model, **dict(pairs)}
        versions.append((current, model))
    for version, expected in versions:
        assert list(version.items()) == list(expected.items())
        assert len(version) == len(expected) and version == expected
        for key in range(61):
            assert (key in version) == (key in expected)
            assert version.get(key, "none") == expected.get(key, "none")


def test_a_change_leaves_the_map_it_came_from_as_it_was():
    base = PMap({"a": 1, "b": 2})
    changed = base.set("a", 10).set("c", 3).discard("b")
    assert dict(base) == {"a": 1, "b": 2}
    assert dict(changed) == {"a": 10, "c": 3}


@pytest.mark.parametrize(
    "reason, steps, order",
    [
        ("a new key goes last", [("set", "c")], ["a", "b", "c"]),
        ("a replaced value keeps its key's place", [("set", "a")], ["a", "b"]),
        ("a key removed and set again goes last", [("discard", "a"), ("set", "a")], ["b", "a"]),
    ],
)
def test_iteration_order_is_a_dicts(reason, steps, order):
    m = PMap({"a": 1, "b": 2})
    for op, key in steps:
        m = m.set(key, 0) if op == "set" else m.discard(key)
    assert list(m) == order, reason


def test_many_changes_fold_the_overlay_into_the_base():
    """Sets copy only the overlay; once it has grown to about the root of the base it is folded in,
    so no read goes through more than a base and an overlay."""
    m: PMap[int, int] = PMap()
    for i in range(10_000):
        m = m.set(i, i)
    assert len(m._over) <= max(8, math.isqrt(len(m._base)) + 1)
    assert len(m) == 10_000 and m[9_999] == 9_999 and m.get(10_000) is None


def test_reads_like_a_mapping():
    m = PMap([("x", 1)]).set("y", 2)
    assert m["y"] == 2 and m.get("z", 0) == 0 and "x" in m and "z" not in m
    with pytest.raises(KeyError):
        m["z"]
    assert m == {"x": 1, "y": 2} and {"x": 1, "y": 2} == m and m != {"x": 1}
    assert {**m} == {"x": 1, "y": 2} and sorted(m.keys()) == ["x", "y"] and sorted(m.values()) == [1, 2]
    assert m.update({"x": 5, "w": 0}) == {"x": 5, "y": 2, "w": 0}
    assert m.discard("absent") is m
    assert repr(m) == "PMap({'x': 1, 'y': 2})"
    assert pickle.loads(pickle.dumps(m)) == m


def test_a_map_is_not_hashable():
    with pytest.raises(TypeError):
        hash(PMap())


def test_a_tenant_state_keeps_persistent_maps_even_when_given_dicts():
    state = TenantState("acme", members={"alice": "org-owner"})
    assert isinstance(state.members, PMap) and isinstance(state.services, PMap)
    assert state == TenantState("acme", members=PMap({"alice": "org-owner"}))
