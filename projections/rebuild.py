"""Rebuild read models from the whole log, then swap them in atomically while the runner keeps going.

`rebuild(settings, names)` replays the topic from the beginning up to its end offsets at start into
fresh `<table>__rebuild` twins (one transaction per batch of up to `REPLAY_BATCH` messages, written
set-wise by `projections.batch` in a second thread while the next batch is read and decoded), then
swaps in ONE transaction: lock the projections' position rows (FOR UPDATE: the live runner's next
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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from sqlalchemy import Connection, Engine, create_engine, text

from projections import positions
from projections.batch import apply_batch
from projections.errors import ConfigurationError, ProjectionError, TransientError
from projections.projectors import PROJECTIONS, Projection
from projections.settings import Settings
from projections.stream import Decoder, Item, consumer_config, error_of, fetch, is_eof, topic_partitions
from projections.tables import READ_MODELS, REBUILD_SUFFIX, Tables, build_tables, create_all, rename_plan
from runtime import logs
from schemas.registry import EVENTS_SUBJECT, Registry, Serde

log = structlog.get_logger("projections.rebuild")
REPLAY_BATCH = 5000  # messages per replay transaction at most: few commits (a batch costs a few statements)


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


ProgressCallback = Callable[[Progress], None]


def select(names: Sequence[str]) -> tuple[str, ...]:
    """The read models to rebuild, in a fixed order; all of them when `names` is empty."""
    unknown = sorted(set(names) - set(READ_MODELS))
    if unknown:
        raise ConfigurationError(f"no read model named {', '.join(unknown)}; choose from {', '.join(READ_MODELS)}")
    return tuple(n for n in READ_MODELS if n in names or not names)


@dataclass
class _Replay:
    """Reads the assigned partitions in order, applying each batch through `apply`."""

    consumer: Consumer
    decode: Decoder
    starts: dict[int, int]
    report: Callable[[str, int], None]
    stall_timeout: float
    pos: dict[int, int] = field(default_factory=dict)
    skipped: int = 0

    def __post_init__(self) -> None:
        self.pos = dict(self.starts)

    @property
    def read(self) -> int:
        return sum(self.pos[p] - self.starts[p] for p in self.pos)

    def until(self, ends: dict[int, int], apply: Callable[[list[Item]], int], phase: str) -> None:
        """Read until every partition reaches `ends`. `apply` (it answers how many items it could not
        apply) runs in a second thread, one batch behind: PostgreSQL writes a batch while this thread
        reads and decodes the next one."""
        last_move = time.monotonic()
        with ThreadPoolExecutor(1, thread_name_prefix="rebuild-apply") as writer:
            applying: Future[int] | None = None
            while behind := {p: e for p, e in ends.items() if self.pos[p] < e}:
                before = self.read
                if items := self._next_batch():
                    if applying is not None:
                        self.skipped += applying.result()
                    applying = writer.submit(apply, items)
                if self.read > before:
                    last_move = time.monotonic()
                    self.report(phase, self.read)
                elif time.monotonic() - last_move > self.stall_timeout:
                    raise TransientError(f"replay stalled {self.stall_timeout:.0f}s short of the end offsets "
                                         f"{behind} (at {({p: self.pos[p] for p in behind})})")
            if applying is not None:
                self.skipped += applying.result()

    def _next_batch(self) -> list[Item]:
        """The next messages, decoded; the positions move past them and past the ends reached."""
        records: list[Message] = []
        for msg in fetch(self.consumer, REPLAY_BATCH, 0.2):
            if (err := error_of(msg)) is not None:
                log.warning("consumer error; the client retries", error=str(err))
            elif is_eof(msg):
                self.pos[msg.partition()] = max(self.pos[msg.partition()], msg.offset())
            else:
                records.append(msg)
        for m in records:
            self.pos[m.partition()] = max(self.pos[m.partition()], m.offset() + 1)
        return [self.decode(m) for m in records]


def rebuild(settings: Settings, names: Sequence[str] = (), progress: ProgressCallback | None = None,
            *, stall_timeout: float = 120.0) -> RebuildResult:
    chosen = select(names)
    engine = create_engine(settings.sqlalchemy_url, pool_pre_ping=True)
    registry = Registry(settings.registry_url)
    consumer: Consumer | None = None
    topic = settings.events_topic
    try:
        live = create_all(engine)
        twins = build_tables(REBUILD_SUFFIX)
        partitions = topic_partitions(settings.kafka_bootstrap, topic)
        _prepare(engine, live, twins, chosen, topic, partitions)
        decoder = Decoder(Serde(registry, EVENTS_SUBJECT))
        consumer = Consumer(consumer_config(settings, group=f"{settings.consumer_group}-rebuild"))
        bounds = {p: _watermarks(consumer, topic, p) for p in partitions}
        starts = {p: low for p, (low, _high) in bounds.items()}
        total = sum(high - low for low, high in bounds.values())
        consumer.assign([TopicPartition(topic, p, off) for p, off in starts.items()])

        def report(phase: str, read: int) -> None:
            if progress:
                progress(Progress(phase, chosen, read, total))

        selected = {n: PROJECTIONS[n] for n in chosen}
        replay = _Replay(consumer, decoder, starts, report, stall_timeout)
        log.info("rebuild started", projections=chosen, topic=topic, total=total)
        replay.until({p: high for p, (_low, high) in bounds.items()},
                     lambda items: _apply_committed(engine, twins, selected, items), "replay")
        report("replayed", replay.read)
        final = _swap(engine, live, twins, chosen, topic, partitions, replay, selected)
        report("swapped", replay.read)
        log.info("rebuild swapped in", projections=chosen, replayed=replay.read, skipped=replay.skipped)
        return RebuildResult(chosen, replay.read, replay.skipped, final)
    finally:
        if consumer is not None:
            consumer.close()
        registry.close()
        engine.dispose()


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
          partitions: list[int], replay: _Replay, selected: dict[str, Projection]) -> dict[int, int]:
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
