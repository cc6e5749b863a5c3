"""The read-model tables (SQLAlchemy 2 Core), the tracking positions table and the organizations'
snapshot tables (`projections.snapshots`).

Owns the table definitions, built by `build_tables(suffix)` so that a rebuild can create
`<name>__rebuild` twins with their own index names, and `create_all`, safe to run concurrently and
repeatedly, which also adds a read model's new nullable columns and new indexes in place (the
project's schema migrations). Every read-model row carries `version`: the sequence of the last event of its aggregate
applied to it, which makes re-applied events no-ops (see `projections.projectors`).
Imports SQLAlchemy only.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    Engine,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

READ_MODELS = ("organizations", "services", "operations", "members", "backups", "subscriptions")
POSITIONS = "projection_positions"
SNAPSHOTS = "tenant_snapshots"
SNAPSHOT_MARKS = "tenant_snapshot_marks"
SNAPSHOT_PARTITIONS = "tenant_snapshot_partitions"
REBUILD_SUFFIX = "__rebuild"
_CREATE_LOCK = 0x64626161_7370  # pg advisory lock key: one create_all at a time per database


@dataclass(frozen=True)
class Tables:
    """One set of read-model tables (live, or the `__rebuild` twins) and the shared positions table."""

    suffix: str
    metadata: MetaData  # the read models of this set only
    organizations: Table
    services: Table
    operations: Table
    members: Table
    backups: Table
    subscriptions: Table
    positions: Table  # never suffixed: one tracking table per database
    snapshots: Table  # never suffixed, like the positions (`projections.snapshots`)
    snapshot_marks: Table
    snapshot_partitions: Table

    def read_model(self, name: str) -> Table:
        return {"organizations": self.organizations, "services": self.services,
                "operations": self.operations, "members": self.members, "backups": self.backups,
                "subscriptions": self.subscriptions}[name]


def build_tables(suffix: str = "") -> Tables:
    metadata = MetaData()
    return Tables(
        suffix,
        metadata,
        _organizations(metadata, f"organizations{suffix}"),
        _services(metadata, f"services{suffix}"),
        _operations(metadata, f"operations{suffix}"),
        _members(metadata, f"members{suffix}"),
        _backups(metadata, f"backups{suffix}"),
        _subscriptions(metadata, f"subscriptions{suffix}"),
        *_tracking(MetaData()),
    )


def _ts(name: str, **kw: object) -> Column:
    return Column(name, DateTime(timezone=True), nullable=False, **kw)


def _organizations(metadata: MetaData, name: str) -> Table:
    return Table(
        name, metadata,
        Column("id", Text, nullable=False),  # the tenant slug
        Column("display_name", Text, nullable=False),
        Column("owner", Text, nullable=False),
        Column("quota", JSONB),  # NULL: the platform's default quota
        _ts("created_at"),
        _ts("updated_at"),
        Column("version", BigInteger, nullable=False),
        PrimaryKeyConstraint("id", name=f"{name}_pkey"),
    )


def _services(metadata: MetaData, name: str) -> Table:
    table = Table(
        name, metadata,
        Column("id", Text, nullable=False),
        Column("tenant_id", Text, nullable=False),
        Column("name", Text, nullable=False),
        Column("engine", Text, nullable=False),
        Column("engine_version", Text, nullable=False),
        Column("pop", Text, nullable=False),
        Column("size", Text, nullable=False),
        Column("cpu", Double, nullable=False),
        Column("memory_gb", Integer, nullable=False),
        Column("storage_gb", Integer, nullable=False),
        Column("replicas", Integer, nullable=False),
        Column("status", Text, nullable=False),
        Column("deletion_protection", Boolean, nullable=False),
        Column("labels", JSONB, nullable=False),
        Column("credentials", Text),  # encrypted by the PoP (Fernet token); never served by the queries
        _ts("created_at"),
        _ts("updated_at"),
        Column("last_operation_id", Text, nullable=False),
        # {schedule, retain_count, retain_days, pitr, set_at}; NULL: no policy was ever set
        Column("backup_policy", JSONB),
        # {source_service_id, source_engine, backup_id, to_time}: where a restored service's data
        # came from; NULL: not a restore
        Column("restore", JSONB),
        # {status, connector, operation_id, reason, at}: its change stream; NULL: never enabled
        Column("cdc", JSONB),
        Column("cdc_tables", JSONB),  # the tables it captures, as last enabled ([]: every table)
        Column("deleted_at", DateTime(timezone=True)),  # when ServiceDeleted was recorded
        Column("version", BigInteger, nullable=False),
        PrimaryKeyConstraint("id", name=f"{name}_pkey"),
    )
    Index(f"ix_{name}_tenant_name", table.c.tenant_id, table.c.name)
    Index(f"ix_{name}_created", table.c.created_at, table.c.id)  # keyset pagination over every service
    # a member's list: its organizations' services in keyset order, without scanning the others'
    Index(f"ix_{name}_tenant_created", table.c.tenant_id, table.c.created_at, table.c.id)
    return table


def _operations(metadata: MetaData, name: str) -> Table:
    table = Table(
        name, metadata,
        Column("id", Text, nullable=False),  # the operation id
        Column("tenant_id", Text, nullable=False),
        Column("type", Text, nullable=False),
        Column("aggregate_id", Text),  # NULL for a rejected command
        Column("state", Text, nullable=False),
        Column("reason_code", Text),
        Column("field", Text),
        Column("message", Text),
        Column("done_steps", Integer, nullable=False),
        Column("total_steps", Integer, nullable=False),
        # One column per step (render, commit, PoP report): {state, ref, at}; NULL until it happens.
        # Separate columns let a batch fold each step's change on its own.
        Column("render_step", JSONB),
        Column("commit_step", JSONB),
        Column("report_step", JSONB),
        Column("compensation", JSONB),  # {state: Pending|Done, ref: the revert commit, at}; NULL: none
        Column("requested_by", Text),
        Column("correlation_id", Text, nullable=False),
        # The request's payload fingerprint: the gateway answers 409 to an Idempotency-Key reused
        # with another body. NULL for rows projected before it was kept.
        Column("command_fingerprint", Text),
        # The trace of the request that started it (W3C trace id, from the `traceparent` header of
        # the event that created the row); NULL: tracing was off.
        Column("trace_id", Text),
        _ts("created_at"),
        _ts("updated_at"),
        Column("version", BigInteger, nullable=False),
        PrimaryKeyConstraint("id", name=f"{name}_pkey"),
    )
    Index(f"ix_{name}_tenant", table.c.tenant_id)
    return table


def _members(metadata: MetaData, name: str) -> Table:
    table = Table(
        name, metadata,
        Column("id", Text, nullable=False),  # "{tenant}/{subject}"
        Column("tenant_id", Text, nullable=False),
        Column("subject", Text, nullable=False),
        Column("role", Text),  # NULL: removed
        _ts("created_at"),
        _ts("updated_at"),
        Column("version", BigInteger, nullable=False),
        PrimaryKeyConstraint("id", name=f"{name}_pkey"),
    )
    Index(f"ix_{name}_subject", table.c.subject)
    Index(f"ix_{name}_tenant", table.c.tenant_id, table.c.subject)
    return table


def _subscriptions(metadata: MetaData, name: str) -> Table:
    """One row per tenant subscription (`id` is its id): its Kafka principal and consumer-group
    prefix, and its status (Requested, Active, Revoking, Revoked, Failed). Never its password."""
    table = Table(
        name, metadata,
        Column("id", Text, nullable=False),
        Column("tenant_id", Text, nullable=False),
        Column("name", Text, nullable=False),
        Column("principal", Text, nullable=False),
        Column("group_prefix", Text, nullable=False),
        Column("status", Text, nullable=False),
        Column("reason", Text),
        Column("requested_by", Text),
        _ts("created_at"),
        _ts("updated_at"),
        Column("version", BigInteger, nullable=False),
        PrimaryKeyConstraint("id", name=f"{name}_pkey"),
    )
    Index(f"ix_{name}_tenant", table.c.tenant_id, table.c.created_at)
    return table


def _backups(metadata: MetaData, name: str) -> Table:
    """One row per backup (`id` is the backup id). `status` is the backup's lifecycle status as its
    events say it (Requested, Completed, Failed, Deleting, Deleted); `step` counts the steps done of
    the operation in flight on it (1 rendered, 2 committed, 3 ended), so a Requested backup whose
    claim was rendered reads as Running (`projections.queries.backup_status`)."""
    table = Table(
        name, metadata,
        Column("id", Text, nullable=False),  # the backup id
        Column("tenant_id", Text, nullable=False),
        Column("service_id", Text, nullable=False),
        Column("service_name", Text, nullable=False),
        Column("engine", Text, nullable=False),
        Column("pop", Text, nullable=False),
        Column("status", Text, nullable=False),
        Column("step", Integer, nullable=False),
        Column("slot", Text),  # the schedule slot it fills (RFC 3339); NULL: on demand
        Column("pitr", Boolean, nullable=False),
        Column("operation_id", Text, nullable=False),  # the operation that took it
        Column("deletion_operation_id", Text),  # the operation deleting it (the last one asked)
        Column("requested_at", DateTime(timezone=True), nullable=False),
        Column("taken_at", DateTime(timezone=True)),
        Column("pitr_from", DateTime(timezone=True)),
        Column("size_bytes", BigInteger),
        Column("location", Text),
        Column("dek_id", Text),
        Column("kek_id", Text),
        Column("consistency", JSONB),
        Column("tables", JSONB),  # table -> {rows, checksum}
        Column("reason", Text),  # why its last operation failed (a failed deletion leaves it Completed)
        Column("deletion_reason", Text),  # requested | expired (retention); NULL: never asked
        _ts("created_at"),
        _ts("updated_at"),
        Column("version", BigInteger, nullable=False),
        PrimaryKeyConstraint("id", name=f"{name}_pkey"),
    )
    Index(f"ix_{name}_service", table.c.service_id, table.c.requested_at)
    Index(f"ix_{name}_tenant", table.c.tenant_id)
    return table


def _tracking(metadata: MetaData) -> tuple[Table, Table, Table, Table]:
    return _positions(metadata), *_snapshots(metadata)


def _positions(metadata: MetaData) -> Table:
    return Table(
        POSITIONS, metadata,
        Column("projection", Text, nullable=False),
        Column("topic", Text, nullable=False),
        Column("partition", Integer, nullable=False),
        Column("next_offset", BigInteger, nullable=False),  # the first offset not yet applied
        PrimaryKeyConstraint("projection", "topic", "partition", name=f"{POSITIONS}_pkey"),
    )


def _snapshots(metadata: MetaData) -> tuple[Table, Table, Table]:
    """An organization's read-model rows as they stood at an offset of its partition, written by the
    projector every N events of the organization (`projections.snapshots`); time travel replays
    from the latest one that precedes the moment asked about."""
    snapshots = Table(
        SNAPSHOTS, metadata,
        Column("topic", Text, nullable=False),
        Column("tenant_id", Text, nullable=False),
        Column("next_offset", BigInteger, nullable=False),  # every event of the tenant before it is in
        Column("read_model", Text, nullable=False),
        Column("partition", Integer, nullable=False),
        Column("events", BigInteger, nullable=False),  # the tenant's events before `next_offset`
        # the latest `occurred_at` of those events: the snapshot serves moments from this one on
        Column("occurred_until", DateTime(timezone=True), nullable=False),
        # the earliest `occurred_at` of the tenant's events since its previous snapshot: a replay to
        # an earlier moment need not read them
        Column("segment_min", DateTime(timezone=True)),
        Column("rows", JSONB, nullable=False),  # row id -> row (`to_jsonb` of the read model's row)
        PrimaryKeyConstraint("topic", "tenant_id", "next_offset", "read_model", name=f"{SNAPSHOTS}_pkey"),
    )
    Index(f"ix_{SNAPSHOTS}_until", snapshots.c.topic, snapshots.c.tenant_id, snapshots.c.read_model,
          snapshots.c.occurred_until)
    marks = Table(
        SNAPSHOT_MARKS, metadata,
        Column("topic", Text, nullable=False),
        Column("tenant_id", Text, nullable=False),
        Column("partition", Integer, nullable=False),
        Column("events", BigInteger, nullable=False),  # the tenant's events the projector has seen
        Column("snapshotted", BigInteger, nullable=False),  # `events` at its last snapshot
        Column("occurred_until", DateTime(timezone=True), nullable=False),
        Column("since_min", DateTime(timezone=True)),  # the earliest `occurred_at` since its last snapshot
        PrimaryKeyConstraint("topic", "tenant_id", name=f"{SNAPSHOT_MARKS}_pkey"),
    )
    partitions = Table(
        SNAPSHOT_PARTITIONS, metadata,
        Column("topic", Text, nullable=False),
        Column("partition", Integer, nullable=False),
        # the offset the marks began counting at: 0 means every tenant of the partition is counted
        # from its first event, which a snapshot needs (else its `occurred_until` may be too early)
        Column("counted_from", BigInteger, nullable=False),
        PrimaryKeyConstraint("topic", "partition", name=f"{SNAPSHOT_PARTITIONS}_pkey"),
    )
    return snapshots, marks, partitions


def index_names(table: Table) -> list[str]:
    """Names of the primary key and the indexes of `table`, in a stable order (for renaming)."""
    assert table.primary_key.name is not None
    return [str(table.primary_key.name), *sorted(str(i.name) for i in table.indexes)]


def rename_plan(rebuilt: Table, live: Table) -> list[str]:
    """The DDL that gives the rebuilt table the live table's name and index names (after the live
    table was dropped), so the next rebuild can create its twins again."""
    pairs = zip(index_names(rebuilt), index_names(live), strict=True)
    return [f'ALTER TABLE "{rebuilt.name}" RENAME TO "{live.name}"',
            *(f'ALTER INDEX "{old}" RENAME TO "{new}"' for old, new in pairs)]


def create_lock(conn) -> None:
    """Hold the advisory lock `create_all` holds, until the transaction ends: one creation at a time."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATE_LOCK})


def create_all(engine: Engine, tables: Tables | None = None) -> Tables:
    """Create the live tables (or `tables`) and the positions table when missing; idempotent."""
    tables = tables or build_tables()
    with engine.begin() as conn:
        create_lock(conn)
        tables.positions.metadata.create_all(conn, checkfirst=True)
        tables.metadata.create_all(conn, checkfirst=True)
        _add_missing_columns(conn, tables)
        _add_missing_indexes(conn, tables)
    return tables


def _add_missing_indexes(conn, tables: Tables) -> None:
    """Indexes added to a read model since its table was created, built in place (a table's index
    names are part of the rebuild's rename plan, so the live table must have them all)."""
    for table in (tables.read_model(name) for name in READ_MODELS):
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            index.create(conn, checkfirst=True)


def _add_missing_columns(conn, tables: Tables) -> None:
    """Columns added to a read model since its table was created, added in place when they may be
    NULL (so an existing platform picks up a new column without a rebuild; a rebuild fills it)."""
    for table in (tables.read_model(name) for name in READ_MODELS):
        have = {row[0] for row in conn.execute(
            text("SELECT column_name FROM information_schema.columns WHERE table_name = :t"), {"t": table.name})}
        for column in table.columns:
            if column.name not in have and column.nullable:
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN IF NOT EXISTS "{column.name}" {kind}'))
