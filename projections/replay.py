"""The rebuild's replay: reading partitions up to end offsets, and the bulk path into EMPTY twins.

`Replay` reads its consumer's partitions in order up to end offsets and hands each decoded batch to
a function running one batch behind in a second thread (the batch path, `projections.batch`: a few
set-wise statements per batch, correct over any stored rows; the rebuild's catch-up uses it).

`bulk` replays from the beginning into twins that are empty, where the stored row is known (none):
every projection is then a pure fold and the last state of each row wins. A worker decodes its
partitions, turns each event into the projectors' changes (membership guard and trace ids as in
`projections.batch`), folds them per row in memory (`projections.fold.apply_in_memory`, the
semantics of `write_one`) and writes each row ONCE with `COPY ... FROM STDIN`: no statement per
batch, no version checks, no index probes per event. Partitions are split between worker
processes (decoding Avro is the bound: one process per core); a tenant's events share one
partition, so two workers never hold the same row (if they did, the twin's primary key would refuse
the second copy, and the fallback below applies). A worker holding more than `max_rows` rows writes
them and continues with the batch path, so memory stays bounded on any log. An event the live
projector had to dead-letter because PostgreSQL refused it (a NUL in a text, a NULL where none may
be, an integer out of range: `fits`), or rows PostgreSQL refuses at the COPY, make `bulk` raise
`BulkRefused`: the rebuild empties the twins and replays batch by batch, which isolates the refused
event exactly as the live projector did (a fold would merge it with the changes after it).
Imports confluent-kafka, psycopg, SQLAlchemy, `schemas`, `events` and `projections.*`.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import queue as queues
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from confluent_kafka import Consumer, Message, TopicPartition
from sqlalchemy import BigInteger, Connection, Engine, Integer, Table, create_engine
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DataError, IntegrityError

from projections.batch import MEMBERS, MembershipGuard, apply_batch, traced
from projections.errors import ProjectionError, TransientError
from projections.fold import apply_in_memory
from projections.projectors import PROJECTIONS, Projection
from projections.settings import Settings
from projections.stream import Decoder, Item, consumer_config, error_of, fetch, is_eof
from projections.tables import Tables, build_tables
from runtime import heap
from schemas.registry import EVENTS_SUBJECT, Registry, Serde

log = structlog.get_logger("projections.replay")
REPLAY_BATCH = 5000  # messages per fetch (and per transaction on the batch path) at most
MAX_ROWS = 250_000  # rows a worker folds in memory before it writes them and goes on batch by batch
PARALLEL_FROM = 40_000  # events: below this, one process replays (starting workers costs ~0.5 s each)
_REFUSED = (DataError, IntegrityError, psycopg.errors.DataError, psycopg.errors.IntegrityError)


class BulkRefused(ProjectionError):
    """PostgreSQL refused the folded rows: replay batch by batch instead, isolating the event."""


@dataclass
class Replay:
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


# -- folding into empty tables ------------------------------------------------------------------

class Folder:
    """Folds items into rows held in memory, per read model (the twins are empty: no stored row);
    past `max_rows` rows it writes them and applies the rest batch by batch to the twins."""

    def __init__(self, engine: Engine, twins: Tables, projections: Mapping[str, Projection], max_rows: int,
                 prepared: Callable[[], None] = lambda: None):
        self.prepared = prepared  # returns once the twins exist (called before anything is written)
        self.engine = engine
        self.twins = twins
        self.projections = projections
        self.rows: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in projections}
        self.guard = MembershipGuard({}) if MEMBERS in projections else None
        self.max_rows = max_rows
        self.spilled = False

    def add(self, items: list[Item]) -> int:
        """Fold `items` (in log order); the number skipped (undecodable, or refused by the guard)."""
        if self.spilled:  # the twins exist: `write` waited for them
            with self.engine.begin() as conn:
                return len(apply_batch(conn, self.twins, self.projections, items, {}).dead)
        skipped = 0
        handlers = [(self.rows[name], projection.handlers, _limits(self.twins.read_model(name)))
                    for name, projection in self.projections.items()]
        for item in items:
            if item.poison is None and self.guard is not None:
                item = self.guard.admit(item)
            if item.poison is not None:
                skipped += 1
                continue
            env = item.envelope
            kind = type(env.payload)  # type: ignore[union-attr]
            for rows, by_type, limits in handlers:
                handler = by_type.get(kind)
                if handler is None or (change := handler(env)) is None:  # type: ignore[arg-type]
                    continue
                if item.trace is not None and change.creates:
                    change = traced(change, item.trace)
                if not fits(limits, change.values):
                    raise BulkRefused(f"{type(env.payload).__name__} {env.event_id} "  # type: ignore[union-attr]
                                      "carries a value PostgreSQL refuses")
                apply_in_memory(rows, change)
        if sum(len(rows) for rows in self.rows.values()) > self.max_rows:
            self.write()
            self.spilled = True
        return skipped

    def write(self) -> int:
        """Write the rows held (COPY into the twins, one transaction); the number written."""
        written = 0
        self.prepared()
        try:
            with self.engine.begin() as conn:
                for name, rows in self.rows.items():
                    written += copy_rows(conn, self.twins.read_model(name), rows.values())
        except _REFUSED as exc:
            raise BulkRefused(f"the folded rows were refused: {exc}") from exc
        self.rows = {name: {} for name in self.projections}
        return written


@dataclass(frozen=True)
class Limits:
    """What PostgreSQL checks of a table's values, as `fits` asks it."""

    columns: frozenset[str]
    not_null: frozenset[str]
    ranges: Mapping[str, tuple[int, int]]  # integer column -> [low, high)


@functools.cache
def _limits(table: Table) -> Limits:
    ranges = {c.name: (-(2**63), 2**63) if isinstance(c.type, BigInteger) else (-(2**31), 2**31)
              for c in table.columns if isinstance(c.type, Integer)}
    return Limits(frozenset(c.name for c in table.columns),
                  frozenset(c.name for c in table.columns if not c.nullable), ranges)


def fits(limits: Limits, values: Mapping[str, Any]) -> bool:
    """Whether PostgreSQL takes `values` (column -> value): no NUL in a text or a JSON string, no
    NULL where none may be, integers in their column's range, no column the table lacks. The live
    projector dead-letters an event it refuses and applies the next ones; a fold would merge it with
    them, so such an event sends the rebuild to the batch path, which isolates it the same way.
    Checked for every change of a rebuild: by the values' types, the commonest first."""
    if not values.keys() <= limits.columns:
        return False
    for name, value in values.items():
        kind = type(value)
        if kind is str:
            if "\x00" in value:
                return False
        elif value is None:
            if name in limits.not_null:
                return False
        elif kind is int:
            low, high = limits.ranges.get(name, (value, value + 1))
            if not low <= value < high:
                return False
        elif (kind is dict or kind is list) and value and _holds_nul(value):
            return False
    return True


def _holds_nul(value: Any) -> bool:
    """Whether a JSON value (dicts, lists, scalars) has a NUL in a string or a key: what JSONB
    refuses (`\\u0000`). A walk, not `json.dumps`: it runs for every change of a rebuild."""
    if type(value) is str:
        return "\x00" in value
    if isinstance(value, dict):
        return any((type(k) is str and "\x00" in k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_holds_nul(v) for v in value)
    return False


def copy_rows(conn: Connection, table: Table, rows: Iterable[Mapping[str, Any]]) -> int:
    """`COPY table FROM STDIN` of `rows` (column -> value; a column a row lacks is NULL, as in the
    upsert of `write_one`), in the binary format: PostgreSQL parses no text (measured ~30 % faster
    than the text format on these tables), each value sent as its column's type."""
    columns = [c.name for c in table.columns]
    names = ", ".join(f'"{c}"' for c in columns)
    count = 0
    driver = conn.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    with driver.cursor() as cur, cur.copy(f'COPY "{table.name}" ({names}) FROM STDIN (FORMAT BINARY)') as copy:
        copy.set_types(_pg_types(table))
        for row in rows:
            copy.write_row([row.get(c) for c in columns])
            count += 1
    return count


@functools.cache
def _pg_types(table: Table) -> list[str]:
    """The PostgreSQL type of each column (e.g. `timestamp with time zone`), as the binary COPY needs them."""
    return [c.type.compile(dialect=postgresql.dialect()).lower() for c in table.columns]


# -- workers ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """What one worker replays: its partitions from `starts` up to `ends`, into the twins."""

    settings: Settings
    names: tuple[str, ...]
    suffix: str
    starts: dict[int, int]
    ends: dict[int, int]
    stall_timeout: float
    max_rows: int


@dataclass(frozen=True)
class Reached:
    positions: dict[int, int]  # per partition: the next offset, everything before it applied
    skipped: int
    timings: Mapping[str, float] = field(default_factory=dict)  # seconds per phase (the slowest worker's)


def replay_job(job: Job, report: Callable[[int], None], prepared: Callable[[], None] = lambda: None) -> Reached:
    """Replay `job`'s partitions into the empty twins: fold, then COPY (see the module docstring);
    `prepared` returns once the twins exist (nothing is written before)."""
    # the youngest generation collected every 100,000 allocations instead of 700: a replay allocates
    # millions of objects that live until the COPY beside as many that die at once; with the default
    # thresholds the collector walked the growing heap again and again (a quarter of a replay's time)
    with heap.collecting_every(100_000):
        return _replay_job(job, report, prepared)


def _replay_job(job: Job, report: Callable[[int], None], prepared: Callable[[], None]) -> Reached:
    settings = job.settings
    engine = create_engine(settings.sqlalchemy_url)
    registry = Registry(settings.registry_url)
    consumer = Consumer(consumer_config(settings, group=f"{settings.consumer_group}-rebuild"))
    try:
        consumer.assign([TopicPartition(settings.events_topic, p, off) for p, off in job.starts.items()])
        projections = {name: PROJECTIONS[name] for name in job.names}
        folder = Folder(engine, build_tables(job.suffix), projections, job.max_rows, prepared)
        replay = Replay(consumer, Decoder(Serde(registry, EVENTS_SUBJECT)), job.starts,
                        lambda _phase, read: report(read), job.stall_timeout)
        started = time.perf_counter()
        replay.until(job.ends, folder.add, "replay")
        folded = time.perf_counter()
        if not folder.spilled:
            folder.write()
        return Reached(dict(replay.pos), replay.skipped,
                       {"folding": folded - started, "writing": time.perf_counter() - folded})
    finally:
        consumer.close()
        registry.close()
        engine.dispose()


def _work(job: Job, index: int, out: Any, twins_ready: Any) -> None:
    """A worker process: progress and its outcome go to `out` (a queue), never an exception. It
    writes once `twins_ready` (an event) is set: the parent prepares the twins while it starts."""

    def prepared() -> None:
        if not twins_ready.wait(job.stall_timeout):
            raise TransientError(f"the rebuild's tables were not prepared within {job.stall_timeout:.0f}s")

    try:
        reached = replay_job(job, lambda read: out.put(("read", index, read)), prepared)
    except BulkRefused as exc:
        out.put(("refused", index, str(exc)))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it (else the traceback is lost)
        out.put(("failed", index, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"))
    else:
        out.put(("done", index, reached))


def split(starts: dict[int, int], ends: dict[int, int], workers: int) -> list[dict[int, int]]:
    """Partitions with events to read, spread over at most `workers` groups of about equal size
    (largest first, each to the least loaded group)."""
    todo = sorted((p for p in ends if ends[p] > starts[p]), key=lambda p: starts[p] - ends[p])
    groups: list[dict[int, int]] = [{} for _ in range(max(1, min(workers, len(todo))))]
    load = [0] * len(groups)
    for p in todo:
        i = load.index(min(load))
        groups[i][p] = starts[p]
        load[i] += ends[p] - starts[p]
    return [g for g in groups if g]


def default_workers(total: int) -> int:
    """One process per core for a large replay; one (this process) for a small one."""
    return 1 if total < PARALLEL_FROM else max(1, min(len(os.sched_getaffinity(0)), 8))


def bulk(settings: Settings, names: tuple[str, ...], suffix: str, starts: dict[int, int], ends: dict[int, int],
         report: Callable[[int], None], *, prepare: Callable[[], None], workers: int, stall_timeout: float,
         max_rows: int = MAX_ROWS) -> Reached:
    """Replay every partition from `starts` to (at least) `ends` into the twins named by `suffix`,
    which `prepare` empties (it runs here while the workers start: importing and connecting cost a
    worker ~0.5 s; they write nothing before it returns); `report` gets the number of offsets read
    so far. Raises `BulkRefused` when PostgreSQL refused the rows (nothing of the replay is then
    usable: empty the twins)."""
    groups = split(starts, ends, workers)
    untouched = {p: off for p, off in starts.items() if not any(p in g for g in groups)}
    if len(groups) <= 1:
        prepare()
        group = groups[0] if groups else {}
        reached = replay_job(Job(settings, names, suffix, group, {p: ends[p] for p in group}, stall_timeout,
                                 max_rows), report) if group else Reached({}, 0)
        return Reached({**untouched, **reached.positions}, reached.skipped, reached.timings)
    context = multiprocessing.get_context("spawn")  # never fork a process holding Kafka clients
    out, twins_ready = context.Queue(), context.Event()
    procs = [context.Process(target=_work, name=f"rebuild-replay-{i}", daemon=True,
                             args=(Job(settings, names, suffix, g, {p: ends[p] for p in g}, stall_timeout, max_rows),
                                   i, out, twins_ready))
             for i, g in enumerate(groups)]
    for proc in procs:
        proc.start()
    try:
        prepare()
        twins_ready.set()
        return _collect(procs, out, untouched, report)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(10)


def _collect(procs: list[Any], out: Any, untouched: dict[int, int], report: Callable[[int], None]) -> Reached:
    read = [0] * len(procs)
    done: dict[int, Reached] = {}
    refused: list[str] = []
    while len(done) + len(refused) < len(procs):
        try:
            kind, index, value = out.get(timeout=1.0)
        except queues.Empty:
            dead = [p.name for i, p in enumerate(procs) if i not in done and not p.is_alive()
                    and p.exitcode not in (None, 0)]
            if dead:
                raise TransientError(f"rebuild workers {', '.join(dead)} ended without a result") from None
            continue
        if kind == "read":
            read[index] = value
            report(sum(read))
        elif kind == "done":
            done[index] = value
        elif kind == "refused":
            refused.append(value)
        else:
            raise TransientError(f"a rebuild worker failed: {value}")
    if refused:
        raise BulkRefused(refused[0])
    positions = dict(untouched)
    for reached in done.values():
        positions.update(reached.positions)
    timings = {phase: max(r.timings.get(phase, 0.0) for r in done.values())
               for phase in {k for r in done.values() for k in r.timings}}
    return Reached(positions, sum(r.skipped for r in done.values()), timings)
