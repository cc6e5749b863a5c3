"""`PMap`: an immutable mapping whose updates share what did not change.

Owns the tenant state's maps (services, command ids, sequences, …). `evolve` makes a new state for
every event; copying a dict per change made each event cost O(entries), and a tenant's maps grow
with everything it ever did. A `PMap` is a *base* dict that is never changed again plus a small
*overlay* dict of the entries set since: `set` copies the overlay only, and folds it into a new
base once it has grown to about the square root of the base (amortized O(√n) per change, a plain
dict lookup or two per read). Removing an entry copies the map (rare: members, names of deleted
services). Iteration order is a dict's: insertion order, a replaced value keeps its key's place.

Never mutated once built, as far as anyone can see: folding the overlay into the base on a full
read replaces the map's own references with a new dict and never changes a dict another map
shares. Imports nothing of the project.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any, TypeVar, overload

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")

_MISSING: Any = object()
_MIN_OVERLAY = 8  # below this the overlay is folded in only when the base is as small


class PMap(Mapping[K, V]):
    """An immutable, insertion-ordered mapping: `set`, `update` and `discard` return new maps."""

    __slots__ = ("_base", "_len", "_over")

    _base: dict[K, V]
    _over: dict[K, V]  # entries set since the base was made: new keys, or new values for its keys
    _len: int

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._base = dict(items)
        self._over = {}
        self._len = len(self._base)

    @classmethod
    def _of(cls, base: dict[K, V], over: dict[K, V], length: int) -> PMap[K, V]:
        new = object.__new__(cls)
        new._base, new._over, new._len = base, over, length
        return new

    # reads

    def __getitem__(self, key: K) -> V:
        over = self._over
        if key in over:
            return over[key]
        return self._base[key]

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V | D, /) -> V | D: ...

    def get(self, key: K, default: Any = None) -> Any:
        value = self._over.get(key, _MISSING)
        return self._base.get(key, default) if value is _MISSING else value

    def __contains__(self, key: object) -> bool:
        return key in self._over or key in self._base

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[K]:
        return iter(self._whole())

    def keys(self) -> KeysView[K]:
        return self._whole().keys()

    def values(self) -> ValuesView[V]:
        return self._whole().values()

    def items(self) -> ItemsView[K, V]:
        return self._whole().items()

    def _whole(self) -> dict[K, V]:
        """Every entry in one dict (the caller only reads it). Reading everything is O(n) anyway,
        so the overlay is folded into a new base here, for this map only."""
        if self._over:
            self._base = {**self._base, **self._over}  # a new dict: maps sharing the old base keep it
            self._over = {}
        return self._base

    # changes: new maps

    def set(self, key: K, value: V) -> PMap[K, V]:
        """This map with `key` bound to `value` (a key already there keeps its place)."""
        base, over = self._base, self._over
        new = object.__new__(self.__class__)  # `_of`, inlined: evolve sets several entries per event
        new._len = self._len if key in over or key in base else self._len + 1
        if len(over) >= _MIN_OVERLAY and len(over) * len(over) >= len(base):
            new._base, new._over = {**base, **over, key: value}, {}
        else:
            new._base, new._over = base, {**over, key: value}
        return new

    def update(self, other: Mapping[K, V] | Iterable[tuple[K, V]]) -> PMap[K, V]:
        """This map with every entry of `other` set, in `other`'s order."""
        pairs = other.items() if isinstance(other, Mapping) else other
        new = self
        for key, value in pairs:
            new = new.set(key, value)
        return new

    def discard(self, key: K) -> PMap[K, V]:
        """This map without `key` (itself when the key is not there). O(n): removals are rare."""
        if key not in self:
            return self
        return self._of({k: v for k, v in self._whole().items() if k != key}, {}, self._len - 1)

    # comparison and display

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PMap):
            return self._len == other._len and self._whole() == other._whole()
        if isinstance(other, Mapping):
            return self._whole() == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # its values need not be hashable

    def __repr__(self) -> str:
        return f"PMap({self._whole()!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (PMap, (dict(self._whole()),))
