"""`python -m bench.reads` (also `python -m bench reads`): the query side at scale, through the real
HTTP API, against raw SQL for the same rows measured in the same run.

(a) setup    10,000 organizations and 100,000 services loaded straight into the read model (COPY;
             one organization of 1,000 services, the others ~10 each), a member of three of them;
             the query plans (EXPLAIN) of the routes' statements are printed.
(b) reads    `GET /services` (the member's list, 50 a page, following `next_cursor`) and
             `GET /services/{id}`, p50/p99 over the instance's gateway process (token check, the
             member's organizations, the route; rate limits lifted for the run) on loopback, vs the
             route's own statement through psycopg.
(c) past     `GET /services/{id}?as_of=` and `GET /organizations/{id}/replay?until=` for a new
             organization of ~10,000 events (3,332 services created through the command processor;
             the projector snapshots it every 1,000 events), vs reading the snapshot's row alone
             through psycopg, and vs replaying the whole log (what every request did before).
(d) memory   the command processor's tenant states for 100,000 services: `TenantState`s folded
             in-process from 100,000 `ServiceRequested` events over 10,000 organizations, measured
             with tracemalloc (bytes still allocated once the events are dropped); and one
             organization's fold time as it grows (its maps share what an event did not change: `PMap`).
"""
from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import psycopg.rows

from bench.common import (
    Endpoints,
    operations,
    org,
    percentile,
    platform,
    progress,
    service,
    settle,
    wait_visible,
)
from commands import principal
from events import Envelope, Resources, ServiceRequested, TenantState, evolve
from projections.tables import build_tables
from runtime import devissuer

PREFIX = "readbench-"
READER = "reader"
HISTORY_PREFIX = "readhist-"
TABLES = build_tables()


# -- (a) setup ----------------------------------------------------------------------------------

def load(dsn: str, tenants: int, services: int, big: int, reader: str) -> dict[str, list[str]]:
    """Replace the benchmark's rows of the read model; the member's organizations and some ids."""
    now = datetime.now(UTC)
    names = [f"{PREFIX}{i:05d}" for i in range(tenants)]
    mine = names[:3]
    columns = [c.name for c in TABLES.services.columns]
    with psycopg.connect(dsn) as conn:
        conn.execute("DELETE FROM members WHERE subject = %s", (reader,))
        for table, column in (("services", "tenant_id"), ("members", "tenant_id"), ("organizations", "id")):
            conn.execute(f"DELETE FROM {table} WHERE {column} LIKE %s", (PREFIX + "%",))
        with conn.cursor().copy("COPY organizations (id, display_name, owner, created_at, updated_at, version) "
                                "FROM STDIN") as copy:
            for name in names:
                copy.write_row((name, name, "owner", now, now, 1))
        with conn.cursor().copy("COPY members (id, tenant_id, subject, role, created_at, updated_at, version) "
                                "FROM STDIN") as copy:
            for name in names:
                copy.write_row((f"{name}/owner", name, "owner", "org-owner", now, now, 1))
            for name in mine:
                copy.write_row((f"{name}/{reader}", name, reader, "service-viewer", now, now, 1))
        ids: list[str] = []  # the member's services
        with conn.cursor().copy(f"COPY services ({', '.join(columns)}) FROM STDIN") as copy:
            for i in range(services):
                tenant = names[0] if i < big else names[1 + (i - big) % (tenants - 1)]
                sid = str(uuid.UUID(int=random.getrandbits(128)))
                if tenant in mine:
                    ids.append(sid)
                at = now - timedelta(seconds=services - i)
                row = {"id": sid, "tenant_id": tenant, "name": f"svc-{i}", "engine": "yugabyte",
                       "engine_version": "2.25", "pop": "frankfurt", "size": "small", "cpu": 0.5, "memory_gb": 1,
                       "storage_gb": 10, "replicas": 1, "status": "Ready", "deletion_protection": False,
                       "labels": '{"team": "bench"}', "created_at": at, "updated_at": at,
                       "last_operation_id": f"op-{i}", "version": 3}
                copy.write_row([row.get(c) for c in columns])
        conn.execute("ANALYZE organizations")
        conn.execute("ANALYZE members")
        conn.execute("ANALYZE services")
    return {"mine": mine, "ids": ids}


LIST_SQL = ("SELECT * FROM services WHERE tenant_id = ANY(%s) AND (created_at, id) > (%s, %s) "
            "ORDER BY created_at, id LIMIT 51")
FIRST_SQL = "SELECT * FROM services WHERE tenant_id = ANY(%s) ORDER BY created_at, id LIMIT 51"
GET_SQL = "SELECT * FROM services WHERE id = %s"


def explain(dsn: str, mine: list[str], some_id: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for label, sql, params in (("GET /services", FIRST_SQL, (mine,)), ("GET /services/{id}", GET_SQL, (some_id,))):
            plan = [r[0] for r in conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}", params)]
            print(f"    plan of {label}: " + " | ".join(p.strip() for p in plan if "Planning" not in p)[:260])


# -- (b) reads through the API ------------------------------------------------------------------

class Api:
    """A client of the instance's own gateway (the API process the launcher runs, as deployed: its
    own process and cores, tracing every request), signed in as the reader through the instance's
    development issuer."""

    def __init__(self, ep: Endpoints):
        if not ep.api:
            raise SystemExit("the benchmark instance runs no API")
        secrets = json.loads((ep.home / "secrets.json").read_text())
        self.base = f"{ep.api.rstrip('/')}/api/v1"
        self.token = devissuer.mint(secrets[devissuer.SECRET_NAME], READER)

    def __enter__(self) -> httpx.Client:
        self.client = httpx.Client(base_url=self.base, timeout=60,
                                   headers={"Authorization": f"Bearer {self.token}"})
        return self.client

    def __exit__(self, *exc) -> None:
        self.client.close()


def timed(n: int, call: Callable[[int], object]) -> list[float]:
    """Milliseconds of each of `n` calls (after a few unmeasured ones)."""
    for i in range(min(5, n)):
        call(i)
    out = []
    for i in range(n):
        started = time.perf_counter()
        call(i)
        out.append((time.perf_counter() - started) * 1000)
    return out


def show(label: str, ours: list[float], base: list[float], base_label: str, target: str = "") -> None:
    p50, p99, b50, b99 = (percentile(ours, 50), percentile(ours, 99), percentile(base, 50), percentile(base, 99))
    print(f"    {label:<34}: p50 {p50:8.2f} ms   p99 {p99:8.2f} ms   ({len(ours)} requests{target})")
    print(f"    {base_label:<34}: p50 {b50:8.2f} ms   p99 {b99:8.2f} ms   ({len(base)})")
    print(f"    {'ratio':<34}: p50 {p50 / b50:8.1f}x    p99 {p99 / b99:8.1f}x")


def bench_lists(client: httpx.Client, dsn: str, loaded: dict[str, list[str]], n: int) -> None:
    mine, ids = loaded["mine"], loaded["ids"]
    state = {"cursor": None}

    def page(_i: int) -> None:
        params = {"limit": 50, **({"cursor": state["cursor"]} if state["cursor"] else {})}
        r = client.get("/services", params=params)
        r.raise_for_status()
        state["cursor"] = r.json()["next_cursor"]

    ours = timed(n, page)
    with psycopg.connect(dsn, autocommit=True, row_factory=psycopg.rows.namedtuple_row) as conn:
        sql_state: dict[str, object] = {"last": None}

        def raw_page(_i: int) -> None:
            last = sql_state["last"]
            rows = (conn.execute(FIRST_SQL, (mine,)) if last is None
                    else conn.execute(LIST_SQL, (mine, *last))).fetchall()  # type: ignore[misc]
            sql_state["last"] = (rows[49].created_at, rows[49].id) if len(rows) > 50 else None
        base = timed(n, raw_page)
        show("GET /services (member's list)", ours, base, "raw SQL, the same pages", "; target p99 <= 20 ms")

        picks = [random.choice(ids) for _ in range(n + 5)]

        def one(i: int) -> None:
            client.get(f"/services/{picks[i]}").raise_for_status()
        ours = timed(n, one)
        base = timed(n, lambda i: conn.execute(GET_SQL, (picks[i],)).fetchone())
    show("GET /services/{id}", ours, base, "raw SQL, the same rows", "; target p99 <= 20 ms")


# -- (c) the past -------------------------------------------------------------------------------

def history_tenant(ep: Endpoints, events: int) -> str:
    """A new organization with about `events` events (3 per service created), through the command
    processor; the projector snapshots it as they come (a rebuild deletes snapshots, so an older
    organization may have none)."""
    tenant = f"{HISTORY_PREFIX}{uuid.uuid4().hex[:8]}"
    pub = ep.publisher()
    try:
        cmds = org(tenant) + [service(tenant, i) for i in range((events - 4) // 3)]
        for c in cmds:
            pub.publish_async(c)
        pub.producer.flush(120)
        wait_visible(ep.dsn, operations(cmds), timeout=900, on_progress=progress("history"))
    finally:
        pub.close()
    return tenant


def bench_past(client: httpx.Client, ep: Endpoints, tenant: str, n: int) -> None:
    from gateway.audit import EventLog

    with psycopg.connect(ep.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO members (id, tenant_id, subject, role, created_at, updated_at, version) "
                     "VALUES (%s, %s, %s, 'org-owner', now(), now(), 1000000000) ON CONFLICT (id) DO NOTHING",
                     (f"{tenant}/{READER}", tenant, principal(devissuer.ISSUER, READER)))
        marks = conn.execute("SELECT events FROM tenant_snapshot_marks WHERE tenant_id = %s", (tenant,)).fetchone()
        snaps = conn.execute("SELECT count(*), max(events) FROM tenant_snapshots WHERE tenant_id = %s "
                             "AND read_model = 'services'", (tenant,)).fetchone()
        services = conn.execute("SELECT id, created_at FROM services WHERE tenant_id = %s", (tenant,)).fetchall()
        last = max(at for _id, at in services)
    print(f"    organization {tenant}: {marks[0] if marks else '?'} events, {len(services)} services, "
          f"{snaps[0]} snapshots (the latest after {snaps[1]} events)")
    picks = []
    for _ in range(n + 5):
        sid, created = random.choice(services)
        moment = created + (last - created) * random.random()
        picks.append((sid, moment))

    def as_of(i: int) -> None:
        sid, moment = picks[i]
        r = client.get(f"/services/{sid}", params={"as_of": moment.isoformat()})
        if r.status_code != 200:
            raise SystemExit(f"as_of answered {r.status_code}: {r.text[:200]}")
    ours = timed(n, as_of)
    with psycopg.connect(ep.dsn, autocommit=True) as conn:
        floor = timed(n, lambda i: conn.execute(
            "SELECT rows -> %s::text FROM tenant_snapshots WHERE topic = 'dbaas.events' AND tenant_id = %s "
            "AND read_model = 'services' AND occurred_until <= %s ORDER BY occurred_until DESC LIMIT 1",
            (picks[i][0], tenant, picks[i][1])).fetchone())
    show("GET /services/{id}?as_of=", ours, floor, "raw SQL, the snapshot's row alone", "; target p99 <= 200 ms")
    whole = EventLog(ep.kafka, ep.registry)  # no snapshots: every request read the whole log
    try:
        before = timed(5, lambda i: whole.row(tenant, "services", picks[i][0], picks[i][1]))
    finally:
        whole.close()
    print(f"    {'the whole log replayed (before)':<34}: p50 {percentile(before, 50):8.2f} ms   "
          f"p99 {percentile(before, 99):8.2f} ms   (5; {percentile(before, 50) / percentile(ours, 50):.0f}x slower)")

    replays = max(10, n // 10)
    ours = timed(replays, lambda i: client.get(f"/organizations/{tenant}/replay",
                                               params={"until": picks[i][1].isoformat()}).raise_for_status())
    print(f"    {'GET /organizations/{id}/replay':<34}: p50 {percentile(ours, 50):8.2f} ms   "
          f"p99 {percentile(ours, 99):8.2f} ms   ({replays} requests; every row of the organization)")


# -- (d) memory ---------------------------------------------------------------------------------

def _requested(i: int, tenant: str, at: datetime) -> Envelope:
    sid = f"svc-{i}"
    return Envelope(f"e{i}", tenant, "service", sid, 1, at, f"c{i}", f"corr-{i}", f"op-{i}",
                    ServiceRequested(sid, f"name-{i}", "yugabyte", "2.25", "frankfurt", "small",
                                     Resources(0.5, 1, 10, 1)), actor_subject="bench")


def bench_memory(services: int, tenants: int, alone: int) -> None:
    at = datetime.now(UTC)
    gc.collect()
    tracemalloc.start()
    envelopes = [_requested(i, f"t{i % tenants}", at) for i in range(services)]
    started = time.perf_counter()
    states: dict[str, TenantState] = {}
    for env in envelopes:
        states[env.tenant_id] = evolve(states.get(env.tenant_id) or TenantState(env.tenant_id), env)
    folded = time.perf_counter() - started
    del envelopes, env
    gc.collect()
    held, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"(d) command processor: tenant states of {services:,} services over {tenants:,} organizations")
    print(f"    tracemalloc after the fold    : {held / 2**20:8.1f} MiB ({held / services:.0f} bytes per service; "
          f"fold {folded:.1f} s under tracemalloc)")
    print("    one organization, as it grows :", end="")
    for n in (alone // 4, alone // 2, alone):
        state = TenantState("one")
        batch = [_requested(i, "one", at) for i in range(n)]
        started = time.perf_counter()
        for env in batch:
            state = evolve(state, env)
        print(f" {n:,} services {time.perf_counter() - started:5.1f} s;", end="")
    print(" (its maps share what an event did not change: about linear)")


def bench_reads(ep: Endpoints, n: int = 1000, tenants: int = 10_000, services: int = 100_000,
                history: int = 10_000) -> None:
    print(f"(reads) {tenants:,} organizations and {services:,} services in the read model")
    started = time.perf_counter()
    loaded = load(ep.dsn, tenants, services, 1000, principal(devissuer.ISSUER, READER))
    print(f"    loaded with COPY in {time.perf_counter() - started:.1f} s; the member belongs to "
          f"{', '.join(loaded['mine'])} (1,000, ~10 and ~10 services)")
    explain(ep.dsn, loaded["mine"], loaded["ids"][0])
    tenant = history_tenant(ep, history)
    settle(ep.home)  # processes `up` restarted fold the event log first: not while reads are timed
    with Api(ep) as client:
        bench_lists(client, ep.dsn, loaded, n)
        bench_past(client, ep, tenant, max(50, n // 5))


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.reads")
    parser.add_argument("-n", type=int, default=1000, help="requests per route")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    # the reader's requests are the load measured: no per-tenant rate limit in the way
    ep = platform(without="saga,localpop-agent", env={"DBAAS_RATE_LIMITS": "*=1000000/1000000"})
    bench_reads(ep, args.n)
    if not args.skip_memory:
        bench_memory(100_000, 10_000, 12_000)
    print(f"(the benchmark platform stays up: `dbaas stack down --home {ep.home}` stops it)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
