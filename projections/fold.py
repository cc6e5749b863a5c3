"""Folding a batch's changes to one read model into one net change per row, in pure Python.

Owns `fold(changes) -> Folded`. Applied one by one (`projections.projectors.write_one`), changes give
a row that depends on the stored row, which is unknown here; a `Net` describes the outcome for every
possible stored row at once, so that `projections.writer` writes a whole batch with a few set-based
statements:

- no row stored: changes before the first one that `creates` do nothing; that one inserts its row
  whatever its version; each later change applies when it is newer than the row so far;
- a row stored at version V: a change applies exactly when it is newer than V and than every change
  before it in the batch (call it a record). So the row ends at `top`, the last record's version,
  when V < top (else nothing changes), and each column holds the value of the last record that
  sets it if that record is newer than V (`since[column]`), else its stored value.

Both cases give the same row when the first creating change is itself a record, because a creating
change carries the whole row and the changes after it that apply are the records after it. In the
log the projector reads, sequences of an aggregate only grow, so that always holds; a chain where
it does not (a change newer than the creation comes before it) is handed back in `chains`, to be
written change by change. Also `apply_in_memory`, the same semantics on rows held in memory (time
travel, and the rebuild's fold into empty twins). Imports `projections.projectors`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from projections.projectors import Change


@dataclass(slots=True)
class Net:
    """The net change of a batch to one row; see the module docstring for how it applies."""

    key: str
    top: int  # the version of the last record: the row's version once anything applies
    creates: bool  # a row is inserted when none is stored
    whole: bool  # the last record carries the whole row: every column changes, at `top`
    values: Mapping[str, Any]  # column -> the value of the last record that sets it
    since: dict[str, int]  # column -> the version of that record (left empty when `whole`)


@dataclass
class Folded:
    nets: list[Net] = field(default_factory=list)  # one per row, for the set-based statement
    chains: list[list[Change]] = field(default_factory=list)  # rows to write change by change, in order


def fold(changes: Iterable[Change]) -> Folded:
    """The net change per row of `changes` (in log order), and the chains no net change describes."""
    chains: dict[str, list[Change]] = {}
    for change in changes:
        chains.setdefault(change.key, []).append(change)
    folded = Folded()
    for key, chain in chains.items():
        records = chain if len(chain) == 1 else _records(chain)
        if records is None:
            folded.chains.append(chain)
        else:
            folded.nets.append(_net(key, records))
    return folded


def _records(chain: list[Change]) -> list[Change] | None:
    """The changes newer than every change before them; None when the first creating change is
    not one of them."""
    records = [chain[0]]
    created = chain[0].creates
    for change in chain[1:]:
        if change.version > records[-1].version:
            records.append(change)
            created = created or change.creates
        elif change.creates and not created:
            return None
    return records


def _net(key: str, records: list[Change]) -> Net:
    last = records[-1]
    if len(records) == 1:  # the usual case, kept cheap
        return Net(key, last.version, last.creates, last.creates, last.values,
                   {} if last.creates else dict.fromkeys(last.values, last.version))
    values: dict[str, Any] = {}
    for record in records:
        values.update(record.values)
    since = {} if last.creates else {column: r.version for r in records for column in r.values}
    return Net(key, last.version, any(r.creates for r in records), last.creates, values, since)


def apply_in_memory(table: dict[str, dict[str, Any]], change: Change) -> None:
    """What `projections.projectors.write_one` does to a stored row, on rows held in memory (row id
    -> row): a whole row is inserted, or replaces an older one; other changes apply to an existing,
    older row only."""
    row = table.get(change.key)
    if change.creates:
        if row is None or row["version"] < change.version:
            table[change.key] = {"id": change.key, **change.values, "version": change.version}
    elif row is not None and row["version"] < change.version:
        row.update(change.values, version=change.version)
