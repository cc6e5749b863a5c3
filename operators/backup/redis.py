"""Redis (DragonflyDB's protocol in PoP ``local``): a service's keys backed up and restored.
Backup instants only: there is no point-in-time recovery for Redis.

A service owns the keys under ``<name>:`` (``service_identifier(tenant, service_id) + ":"``) in
every logical database (``operators.localpop.provisioners.RedisProvisioner``). The admin user
reaches all keys.

Backup (``backup``): per logical database holding keys, ``SCAN MATCH <prefix>*``, then per batch
of keys one ``MULTI``/``EXEC`` with ``TYPE``, ``DUMP``, ``PTTL`` and a read of the value, so each
key's payload, time to live and checksum are of one instant. Redis has no snapshot of a subset
of keys: keys written during the backup may or may not be in it, each one whole. The file
(``data.rdbdump``) holds, per key, the logical database, the name *without* the prefix, the
remaining time to live (ms, or -1) and the ``DUMP`` payload; a trailer with the key count marks
it complete.

Restore (``restore``): ``RESTORE <new prefix><name> <ttl> <payload> REPLACE`` in the same logical
database, in pipelined batches; a time to live is the one remaining at backup time.

Stats (``tables``): ``db<N>`` → key count and a checksum: the sum (mod 2^256) of SHA-256 over
each key's name (without prefix), type and value in a canonical form (hash fields and set
members sorted; sorted sets as ZRANGE gives them; lists and streams in order) — independent of
key order and of the server's internal encoding, so the restored copy gives the same. Keys whose
time to live ran out since the backup are missing from the copy and ``verify`` says so.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from operators.backup.manifest import Manifest, ManifestError, TableStat, diff_tables
from operators.backup.tools import EngineError, engine_errors
from operators.localpop.provisioners import AdminEndpoint, service_identifier

DUMP_FILE = "data.rdbdump"
MAGIC = b"DBAAS-REDIS-KEYS/1\n"
_RECORD = struct.Struct(">HIqI")  # db, name length, pttl, payload length
_END = 0xFFFF  # db number of the trailer record
BATCH = 500
_MOD = 2**256


def _length_prefixed(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _as_bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


def canonical_value(kind: str, value) -> bytes:
    """A key's value in a form that does not depend on the server's encoding or order."""
    if kind == "string":
        return value or b""
    if kind == "hash":
        return _length_prefixed(*(b for k, v in sorted(value.items()) for b in (k, v)))
    if kind == "set":
        return _length_prefixed(*sorted(value))
    if kind == "zset":
        return _length_prefixed(*(b for member, score in value for b in (member, _as_bytes(score))))
    if kind == "list":
        return _length_prefixed(*value)
    if kind == "stream":
        return _length_prefixed(*(b for entry_id, fields in value
                                  for b in (entry_id, _length_prefixed(*(x for kv in fields.items() for x in kv)))))
    return value or b""  # other types (modules): their DUMP payload


def key_digest(name: bytes, kind: str, value) -> int:
    return int.from_bytes(hashlib.sha256(_length_prefixed(name, kind.encode(), canonical_value(kind, value))).digest(),
                          "big")


class _Tally:
    def __init__(self):
        self.count: dict[int, int] = {}
        self.total: dict[int, int] = {}

    def add(self, db: int, digest: int) -> None:
        self.count[db] = self.count.get(db, 0) + 1
        self.total[db] = (self.total.get(db, 0) + digest) % _MOD

    def tables(self) -> dict[str, TableStat]:
        return {f"db{db}": TableStat(self.count[db], f"{self.total[db]:064x}") for db in sorted(self.count)}


def _read_command(pipe, kind: str, key: bytes) -> bool:
    """Queue the read of ``key``'s value; False for a type read through its DUMP payload."""
    reads = {"string": lambda: pipe.get(key), "hash": lambda: pipe.hgetall(key),
             "set": lambda: pipe.smembers(key), "zset": lambda: pipe.zrange(key, 0, -1, withscores=True),
             "list": lambda: pipe.lrange(key, 0, -1), "stream": lambda: pipe.xrange(key, "-", "+")}
    if kind not in reads:
        return False
    reads[kind]()
    return True


class RedisBackups:
    """Backups of the services of one Redis server; ``admin`` reaches every key."""

    def __init__(self, admin: AdminEndpoint, *, connect_timeout: float = 10.0, batch: int = BATCH):
        self.admin = admin
        self.connect_timeout = connect_timeout
        self.batch = batch

    @contextmanager
    def _client(self, db: int = 0) -> Iterator:
        import redis

        client = redis.Redis(host=self.admin.host, port=self.admin.port, username=self.admin.user,
                             password=self.admin.password, db=db, socket_timeout=max(self.connect_timeout, 30),
                             socket_connect_timeout=self.connect_timeout, decode_responses=False)
        try:
            yield client
        except redis.RedisError as exc:
            raise EngineError(f"Redis at {self.admin.host}:{self.admin.port}: {exc}") from None
        finally:
            client.close()

    def _databases(self) -> list[int]:
        with self._client() as client:
            return sorted(int(name[2:]) for name in client.info("keyspace") if name.startswith("db"))

    def _keys(self, client, prefix: str) -> Iterator[list[bytes]]:
        pattern = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix) + "*"
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= self.batch:
                yield batch
                batch = []
        if batch:
            yield batch

    def _read_batch(self, client, keys: list[bytes], *, dump: bool) -> list[tuple[bytes, str, object, int, bytes | None]]:
        """(key, type, value, pttl, payload) of each key still present, each of one instant."""
        kinds = [k.decode() for k in _types(client, keys)]
        results = []
        pending = list(zip(keys, kinds))
        for _ in range(5):  # a key whose type changed in between is read again
            if not pending:
                break
            pipe = client.pipeline(transaction=True)
            plan = []
            for key, kind in pending:
                if kind == "none":
                    continue
                pipe.type(key)
                if dump:
                    pipe.dump(key)
                    pipe.pttl(key)
                typed = _read_command(pipe, kind, key)
                if not typed and not dump:
                    pipe.dump(key)  # a type of its own (a module's): its payload is its value
                plan.append((key, kind, typed))
            replies = iter(pipe.execute(raise_on_error=False))
            retry = []
            for key, kind, typed in plan:
                now_kind = next(replies)
                payload = next(replies) if dump else None
                pttl = next(replies) if dump else -1
                value = next(replies) if typed or not dump else payload
                now_kind = now_kind.decode() if isinstance(now_kind, bytes) else str(now_kind)
                if now_kind == "none":
                    continue  # deleted or expired meanwhile
                if now_kind != kind or any(isinstance(r, Exception) for r in (value, payload, pttl)):
                    retry.append((key, now_kind))
                    continue
                results.append((key, kind, value, pttl, payload))
            pending = retry
        if pending:
            raise EngineError(f"Redis keys kept changing type while read: {[k for k, _ in pending][:5]}")
        return results

    @engine_errors
    def backup(self, tenant: str, service_id: str, backup_id: str, workdir: Path, *,
               pitr_base: str | None = None) -> Manifest:
        """Every key of the service into ``workdir/data.rdbdump``; its manifest (not written)."""
        prefix = service_identifier(tenant, service_id) + ":"
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        tally, written = _Tally(), 0
        started = datetime.now(timezone.utc)
        tmp = workdir / (DUMP_FILE + ".tmp")
        with open(tmp, "wb") as out:
            out.write(MAGIC)
            for db in self._databases():
                with self._client(db) as client:
                    for keys in self._keys(client, prefix):
                        for key, kind, value, pttl, payload in self._read_batch(client, keys, dump=True):
                            name = key[len(prefix):]
                            out.write(_RECORD.pack(db, len(name), pttl if pttl and pttl > 0 else -1, len(payload)))
                            out.write(name)
                            out.write(payload)
                            tally.add(db, key_digest(name, kind, value))
                            written += 1
            out.write(_RECORD.pack(_END, 0, written, 0))
        tmp.replace(workdir / DUMP_FILE)
        return Manifest(engine="redis", tenant=tenant, service_id=service_id, backup_id=backup_id,
                        taken_at=started, consistency={"time": started.isoformat(), "keys": written},
                        tables=tally.tables(), files={"data": DUMP_FILE}, pitr_base=pitr_base)

    @engine_errors
    def restore(self, manifest: Manifest, files_dir: Path, target_prefix: str) -> int:
        """Every key of the backup under ``target_prefix`` (the new service's ``<name>:``), in its
        logical database; returns the number of keys."""
        if manifest.engine != "redis":
            raise ManifestError(f"a {manifest.engine} backup cannot be restored into redis")
        if not target_prefix.endswith(":"):
            raise ValueError("a key prefix ends with ':'")
        path = Path(files_dir) / manifest.files.get("data", DUMP_FILE)
        prefix = target_prefix.encode()
        restored = 0
        clients: dict[int, object] = {}
        pipes: dict[int, object] = {}
        try:
            for db, name, pttl, payload in read_dump(path):
                if db not in pipes:
                    clients[db] = self._open(db)
                    pipes[db] = clients[db].pipeline(transaction=False)
                pipes[db].restore(prefix + name, max(pttl, 0), payload, replace=True)
                restored += 1
                if len(pipes[db]) >= self.batch:
                    pipes[db].execute()
            for pipe in pipes.values():
                pipe.execute()
        finally:
            for client in clients.values():
                client.close()
        return restored

    def _open(self, db: int):
        import redis

        return redis.Redis(host=self.admin.host, port=self.admin.port, username=self.admin.user,
                           password=self.admin.password, db=db, socket_timeout=max(self.connect_timeout, 30),
                           socket_connect_timeout=self.connect_timeout)

    @engine_errors
    def stats(self, prefix: str) -> dict[str, TableStat]:
        """Key count and checksum per logical database of the keys under ``prefix``."""
        tally = _Tally()
        for db in self._databases():
            with self._client(db) as client:
                for keys in self._keys(client, prefix):
                    for key, kind, value, _, _ in self._read_batch(client, keys, dump=False):
                        tally.add(db, key_digest(key[len(prefix):], kind, value))
        return tally.tables()

    @engine_errors
    def verify(self, manifest: Manifest, target_prefix: str) -> list[str]:
        """What differs between the backup's keys and those under ``target_prefix``."""
        return diff_tables(manifest.tables, self.stats(target_prefix))


def _types(client, keys: list[bytes]) -> list[bytes]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
    return [k if isinstance(k, bytes) else str(k).encode() for k in pipe.execute()]


def read_dump(path: Path) -> Iterator[tuple[int, bytes, int, bytes]]:
    """(db, name without prefix, pttl or -1, DUMP payload) of each key in a backup file;
    ``EngineError`` when the file is not one or was cut short."""
    with open(path, "rb") as fh:
        if fh.read(len(MAGIC)) != MAGIC:
            raise EngineError(f"{path.name} is not a Redis key backup")
        count = 0
        while True:
            head = fh.read(_RECORD.size)
            if len(head) != _RECORD.size:
                raise EngineError(f"{path.name} is truncated (after {count} keys)")
            db, name_len, pttl, payload_len = _RECORD.unpack(head)
            if db == _END:
                if pttl != count:
                    raise EngineError(f"{path.name} holds {count} keys, its trailer says {pttl}")
                return
            name, payload = fh.read(name_len), fh.read(payload_len)
            if len(name) != name_len or len(payload) != payload_len:
                raise EngineError(f"{path.name} is truncated (after {count} keys)")
            count += 1
            yield db, name, pttl, payload
