"""Rebuild read models from the whole log, then swap them in atomically while the runner keeps going.

`rebuild(settings, names)` replays the topic from the beginning up to its end offsets at start into
fresh, empty `<table>__rebuild` twins — folded per row in memory and written once with COPY, the
partitions split between worker processes (`projections.replay.bulk`); should PostgreSQL refuse
those rows, the twins are emptied and the replay runs again batch by batch (one transaction per
batch of up to `REPLAY_BATCH` messages, written set-wise by `projections.batch`), which isolates the
refused event as the live runner did — then swaps in ONE transaction: lock the projections' position rows (FOR UPDATE: the live runner's next
batch waits) and the live tables, apply to the twins whatever the live runner applied beyond the
replay's end, drop each live table, rename its twin and the twin's indexes into place, and store
the positions the twins reached.
Undecodable messages are skipped (the live runner already dead-lettered them).

Composition root of `python -m projections.rebuild [NAME ...]` (all read models when none given;
progress on stderr). Imports `events`, `schemas`, `runtime` and `projections.*`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
from confluent_kafka import Consumer, KafkaException, TopicPartition
from sqlalchemy import Connection, Engine, create_engine, text

from projections import positions, snapshots
from projections.batch import apply_batch
from projections.errors import ConfigurationError, ProjectionError, TransientError
from projections.projectors import PROJECTIONS, Projection
from projections.replay import MAX_ROWS, BulkRefused, Reached, Replay, bulk, default_workers
from projections.settings import Settings
from projections.stream import Decoder, Item, consumer_config, topic_partitions
from projections.tables import READ_MODELS, REBUILD_SUFFIX, Tables, build_tables, create_all, rename_plan
from runtime import logs
from schemas.registry import EVENTS_SUBJECT, Registry, Serde

log = structlog.get_logger("projections.rebuild")


@dataclass(frozen=True)
class Progress:
    phase: str  # "replay" (per batch), "replayed" (end offsets reached), "catch-up", "swapped"
    projections: tuple[str, ...]
    replayed: int  # offsets read so far
    total: int  # offsets between the beginning and the end offsets at start


@dataclass(frozen=True)
class RebuildResult:
    projections: tuple[str, ...]
    replayed: int  # offsets read, catch-up included
    skipped: int  # messages skipped: undecodable, or refused by the database (as the live runner did)
    positions: dict[int, int]  # per partition: the next offset stored for every rebuilt projection
    seconds: dict[str, float] = field(default_factory=dict)  # per phase: preparing, replaying (folding, writing), swapping


ProgressCallback = Callable[[Progress], None]


def select(names: Sequence[str]) -> tuple[str, ...]:
    """The read models to rebuild, in a fixed order; all of them when `names` is empty."""
    unknown = sorted(set(names) - set(READ_MODELS))
    if unknown:
        raise ConfigurationError(f"no read model named {', '.join(unknown)}; choose from {', '.join(READ_MODELS)}")
    return tuple(n for n in READ_MODELS if n in names or not names)


def rebuild(settings: Settings, names: Sequence[str] = (), progress: ProgressCallback | None = None,
            *, stall_timeout: float = 120.0, workers: int | None = None, max_rows: int = MAX_ROWS) -> RebuildResult:
    """`workers`: processes replaying partitions in parallel (default: one per core for a large
    log, this process alone for a small one); `max_rows`: rows a worker folds in memory at most."""
    chosen = select(names)
    clock = _Clock()
    engine = create_engine(settings.sqlalchemy_url, pool_pre_ping=True)
    registry: Registry | None = None
    consumer: Consumer | None = None
    topic = settings.events_topic
    try:
        # The log's bounds first: they decide the replaying processes, which then start (~0.5 s
        # each) while this process creates the tables and the empty twins (`prepare`).
        partitions = topic_partitions(settings.kafka_bootstrap, topic)
        consumer = Consumer(consumer_config(settings, group=f"{settings.consumer_group}-rebuild"))
        bounds = {p: _watermarks(consumer, topic, p) for p in partitions}
        starts = {p: low for p, (low, _high) in bounds.items()}
        ends = {p: high for p, (_low, high) in bounds.items()}
        total = sum(high - low for low, high in bounds.values())
        live, twins = build_tables(), build_tables(REBUILD_SUFFIX)
        selected = {n: PROJECTIONS[n] for n in chosen}

        def prepare() -> None:
            create_all(engine, live)
            _prepare(engine, live, twins, chosen, topic, partitions)

        def report(phase: str, read: int) -> None:
            if progress:
                progress(Progress(phase, chosen, read, total))

        log.info("rebuild started", projections=chosen, topic=topic, total=total)
        clock.lap("preparing")
        try:
            reached: Reached | None = bulk(
                settings, chosen, REBUILD_SUFFIX, starts, ends, lambda read: report("replay", read), prepare=prepare,
                workers=default_workers(total) if workers is None else workers, stall_timeout=stall_timeout,
                max_rows=max_rows)
        except BulkRefused as exc:
            log.warning("rows refused by the database; replaying batch by batch", error=str(exc))
            prepare()
            reached = None
        registry = Registry(settings.registry_url)
        replay = Replay(consumer, Decoder(Serde(registry, EVENTS_SUBJECT)), starts, report, stall_timeout)
        if reached is None:
            consumer.assign([TopicPartition(topic, p, off) for p, off in starts.items()])
            replay.until(ends, lambda items: _apply_committed(engine, twins, selected, items), "replay")
        else:
            replay.pos.update(reached.positions)
            replay.skipped += reached.skipped
            clock.laps.update(reached.timings)
            consumer.assign([TopicPartition(topic, p, off) for p, off in replay.pos.items()])
        report("replayed", replay.read)
        clock.lap("replaying")
        final = _swap(engine, live, twins, chosen, topic, partitions, replay, selected)
        report("swapped", replay.read)
        clock.lap("swapping")
        log.info("rebuild swapped in", projections=chosen, replayed=replay.read, skipped=replay.skipped,
                 seconds={phase: round(s, 3) for phase, s in clock.laps.items()})
        return RebuildResult(chosen, replay.read, replay.skipped, final, dict(clock.laps))
    finally:
        if consumer is not None:
            consumer.close()
        if registry is not None:
            registry.close()
        engine.dispose()


class _Clock:
    """Seconds per phase of a rebuild, for its log line (`folding`/`writing`: the slowest worker's
    share of `replaying`)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[phase] = now - self.last
        self.last = now


def _prepare(engine: Engine, live: Tables, twins: Tables, chosen: tuple[str, ...], topic: str,
             partitions: list[int]) -> None:
    """Position rows to lock later, and empty twins (a failed earlier rebuild may have left some)."""
    with engine.begin() as conn:
        positions.ensure(conn, live, topic, chosen, partitions)
        for name in chosen:
            twins.read_model(name).drop(conn, checkfirst=True)
            twins.read_model(name).create(conn)


def _watermarks(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
    except KafkaException as exc:
        raise TransientError(f"end offsets of {topic}[{partition}] unavailable: {exc}") from exc
    return low, high


def _apply_committed(engine: Engine, twins: Tables, selected: dict[str, Projection], items: list[Item]) -> int:
    with engine.begin() as conn:
        return _apply_in(conn, twins, selected, items)


def _swap(engine: Engine, live: Tables, twins: Tables, chosen: tuple[str, ...], topic: str,
          partitions: list[int], replay: Replay, selected: dict[str, Projection]) -> dict[int, int]:
    with engine.begin() as conn:
        stored = positions.lock(conn, live, topic, chosen)
        tables = ", ".join(f'"{live.read_model(n).name}"' for n in chosen)
        conn.execute(text(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"))
        ahead = {p: max(stored.get((n, p), 0) for n in chosen) for p in partitions}
        replay.until(ahead, lambda items: _apply_in(conn, twins, selected, items), "catch-up")
        for name in chosen:
            conn.execute(text(f'DROP TABLE "{live.read_model(name).name}"'))
            for ddl in rename_plan(twins.read_model(name), live.read_model(name)):
                conn.execute(text(ddl))
        final = dict(replay.pos)
        snapshots.forget(conn, live, topic)  # they hold the rows of the tables just replaced
        positions.advance(conn, live, topic, {(n, p): final[p] for n in chosen for p in partitions})
    return final


def _apply_in(conn: Connection, twins: Tables, selected: dict[str, Projection], items: list[Item]) -> int:
    """Apply to the twins; the number skipped (undecodable, or refused by the database)."""
    return len(apply_batch(conn, twins, selected, items, {}).dead)


def _print_progress(p: Progress) -> None:
    if p.phase in ("replay", "catch-up"):
        print(f"rebuild {','.join(p.projections)}: {p.phase} {p.replayed}/{p.total} events", file=sys.stderr)
    else:
        print(f"rebuild {','.join(p.projections)}: {p.phase} ({p.replayed}/{p.total} events)", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m projections.rebuild",
                                     description="Rebuild read models from the event log and swap them in.")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"read models ({', '.join(READ_MODELS)}); "
                        "all when none given")
    args = parser.parse_args(argv)
    logs.configure("projections.rebuild")
    try:
        result = rebuild(Settings.from_env(), args.names, _print_progress)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ProjectionError as exc:
        print(f"error: rebuild failed, the live read models are unchanged: {exc}", file=sys.stderr)
        return 1
    print(f"rebuilt {', '.join(result.projections)}: {result.replayed} events replayed, "
          f"{result.skipped} unusable skipped (see the dead-letter topic)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
