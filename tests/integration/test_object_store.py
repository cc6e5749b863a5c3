"""Backups' object storage on the platform's real SeaweedFS: sealed objects round-trip and are
never stored in clear, each tenant has its own data key, a store that is down fails fast, and
prefixes are deleted whole."""
from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid

import pytest

from operators.backup.sealing import DataKeys, Kek, SealedStore, SealError
from operators.backup.store import ObjectMissing, ObjectStore, StoreUnavailable

MARKER = b"MARKER-7f3a-customer-row"


@pytest.fixture(scope="module")
def env(stack) -> dict[str, str]:
    return stack.backup_env()


@pytest.fixture(scope="module")
def store(env) -> ObjectStore:
    s = ObjectStore.from_env(env)
    s.ensure_bucket()
    return s


@pytest.fixture(scope="module")
def sealed(store, env) -> SealedStore:
    return SealedStore(store, DataKeys(store, Kek.from_env(env)))


@pytest.fixture
def run() -> str:
    """A prefix of this test's own: the platform may be kept between runs."""
    return uuid.uuid4().hex[:10]


def _raw_client(env):
    import boto3

    return boto3.client("s3", endpoint_url=env["DBAAS_S3_ENDPOINT"], region_name="us-east-1",
                        aws_access_key_id=env["DBAAS_S3_ACCESS_KEY"],
                        aws_secret_access_key=env["DBAAS_S3_SECRET_KEY"])


def test_a_sealed_file_round_trips_and_is_never_stored_in_clear(tmp_path, sealed, store, env, run):
    tenant = f"acme-{run}"
    # a few chunks and then some, with the marker in every chunk and across boundaries
    data = (MARKER + os.urandom(4000)) * 700
    src = tmp_path / "dump"
    src.write_bytes(data)
    key = f"tenants/{tenant}/backups/b1/data"
    obj = sealed.put_file(tenant, key, src, aad=b"b1")
    assert (obj.size, obj.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump"]  # the sealed copy is gone

    raw = _raw_client(env).get_object(Bucket=env["DBAAS_S3_BUCKET"], Key=key)["Body"].read()
    assert len(raw) > len(data) and MARKER not in raw
    wrapped = _raw_client(env).get_object(Bucket=env["DBAAS_S3_BUCKET"],
                                          Key=f"keys/{tenant}/{obj.dek_id}.json")["Body"].read()
    assert MARKER not in wrapped

    restored = tmp_path / "restored"
    assert sealed.get_file(tenant, key, restored, aad=b"b1") == obj
    assert restored.read_bytes() == data

    # changed in the bucket: refused, nothing written
    _raw_client(env).put_object(Bucket=env["DBAAS_S3_BUCKET"], Key=key, Body=raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(SealError):
        sealed.get_file(tenant, key, tmp_path / "tampered", aad=b"b1")
    assert not (tmp_path / "tampered").exists()


def test_a_large_file_goes_up_in_parts(tmp_path, sealed, store, run):
    tenant = f"big-{run}"
    src = tmp_path / "big"
    with open(src, "wb") as fh:
        fh.writelines(MARKER + os.urandom(1024 * 1024 - len(MARKER)) for _ in range(80))
    key = f"tenants/{tenant}/backups/b1/data"
    obj = sealed.put_file(tenant, key, src)
    (info,) = store.list(key)
    assert info.size > obj.size == 80 * 1024 * 1024
    out = tmp_path / "out"
    sealed.get_file(tenant, key, out)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == obj.sha256
    store.delete_prefix(f"tenants/{tenant}/")


def test_each_tenant_has_its_own_data_key(sealed, store, env, run):
    a = sealed.put_bytes(f"a-{run}", f"tenants/a-{run}/backups/b1/manifest.json", b'{"rows": 1}')
    b = sealed.put_bytes(f"b-{run}", f"tenants/b-{run}/backups/b1/manifest.json", b'{"rows": 2}')
    assert a.dek_id != b.dek_id and a.kek_id == b.kek_id == Kek.from_env(env).id
    assert [o.key for o in store.list(f"keys/a-{run}/")] == [f"keys/a-{run}/{a.dek_id}.json"]
    assert [o.key for o in store.list(f"keys/b-{run}/")] == [f"keys/b-{run}/{b.dek_id}.json"]
    # another process finds the same key, and opens the object
    again = SealedStore(store, DataKeys(store, Kek.from_env(env)))
    assert again.data_keys.for_tenant(f"a-{run}").id == a.dek_id
    assert again.get_bytes(f"a-{run}", a.key) == b'{"rows": 1}'
    with pytest.raises(SealError):
        again.get_bytes(f"b-{run}", a.key)  # tenant b cannot open tenant a's object


def test_missing_objects_and_prefix_deletion(store, run):
    prefix = f"tenants/del-{run}/backups/"
    for i in range(5):
        store.put_bytes(f"{prefix}b{i}/data", b"x" * i)
    store.put_bytes(f"tenants/del-{run}-other/backups/b0/data", b"keep")
    assert [o.size for o in store.list(prefix)] == [0, 1, 2, 3, 4]
    assert store.exists(f"{prefix}b3/data") and not store.exists(f"{prefix}b9/data")
    with pytest.raises(ObjectMissing):
        store.get_bytes(f"{prefix}b9/data")
    assert store.delete_prefix(prefix) == 5
    assert store.list(prefix) == []
    assert store.get_bytes(f"tenants/del-{run}-other/backups/b0/data") == b"keep"
    store.delete(f"tenants/del-{run}-other/backups/b0/data")
    assert not store.exists(f"tenants/del-{run}-other/backups/b0/data")


def test_a_store_that_is_down_fails_within_seconds(env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    down = ObjectStore(f"http://127.0.0.1:{port}", env["DBAAS_S3_ACCESS_KEY"], env["DBAAS_S3_SECRET_KEY"])
    for call in (lambda: down.get_bytes("keys/x/y.json"), lambda: down.put_bytes("a/b", b"c"),
                 lambda: down.list("keys/"), lambda: down.exists("a/b")):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            call()
        assert time.monotonic() - started < 5
