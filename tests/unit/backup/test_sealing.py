"""Envelope encryption of backups: sealed files and bytes open only unchanged, whole, in order,
under their own key, tenant and associated data; data keys are wrapped under the KEK and created
once per tenant. The keys live in a real folder (``DirectoryStore``)."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import threading

import pytest

from operators.backup.sealing import (
    CHUNK_SIZE,
    TAG_SIZE,
    DataKey,
    DataKeys,
    Kek,
    SealedStore,
    SealError,
    open_bytes,
    open_file,
    read_header,
    seal_bytes,
    seal_file,
    sealed_key_id,
)
from operators.backup.store import DirectoryStore

CHUNK = 64  # small chunks, so that tests cross chunk boundaries with little data


@pytest.fixture
def key() -> DataKey:
    return DataKey("d1", os.urandom(32))


@pytest.fixture
def store(tmp_path) -> DirectoryStore:
    s = DirectoryStore(tmp_path / "bucket")
    s.ensure_bucket()
    return s


@pytest.fixture
def kek() -> Kek:
    return Kek.generate("kek-test")


def _chunks(blob: bytes) -> tuple[bytes, list[bytes]]:
    import io

    src = io.BytesIO(blob)
    header, raw = read_header(src)
    body = src.read()
    block = header.chunk_size + TAG_SIZE
    return raw, [body[i:i + block] for i in range(0, len(body), block)]


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK, 3 * CHUNK + 5])
def test_bytes_round_trip_across_chunk_boundaries(key, size):
    data = os.urandom(size)
    blob = seal_bytes(data, key, b"ctx", chunk_size=CHUNK)
    assert open_bytes(blob, key, b"ctx") == data
    _raw, chunks = _chunks(blob)
    # a last chunk always exists, even for empty data or data ending on a boundary
    assert len(chunks) == max(1, -(-size // CHUNK))
    if size >= 16:
        assert data not in blob


def test_three_chunk_boundaries_in_a_file(tmp_path, key):
    data = b"".join(bytes([i]) * CHUNK for i in range(4))  # exactly four chunks: three boundaries
    src, sealed, opened = tmp_path / "plain", tmp_path / "sealed", tmp_path / "opened"
    src.write_bytes(data)
    digest = seal_file(src, sealed, key, b"aad", chunk_size=CHUNK)
    assert (digest.size, digest.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert len(_chunks(sealed.read_bytes())[1]) == 4
    assert sealed_key_id(sealed) == "d1"
    assert open_file(sealed, opened, key, b"aad") == digest
    assert opened.read_bytes() == data


def test_the_default_chunk_size_round_trips_a_file_of_a_few_chunks(tmp_path, key):
    data = os.urandom(2 * CHUNK_SIZE + 12345)
    src, sealed, opened = tmp_path / "plain", tmp_path / "sealed", tmp_path / "opened"
    src.write_bytes(data)
    seal_file(src, sealed, key)
    assert sealed.stat().st_size > len(data)
    open_file(sealed, opened, key)
    assert opened.read_bytes() == data


def test_sealing_and_opening_a_large_file_keep_memory_bounded(tmp_path, key):
    import tracemalloc

    src, sealed, opened = tmp_path / "plain", tmp_path / "sealed", tmp_path / "opened"
    with open(src, "wb") as fh:
        fh.truncate(48 * CHUNK_SIZE + 3)  # sparse: 48 MiB of zeros without writing them
    tracemalloc.start()
    try:
        digest = seal_file(src, sealed, key)
        open_file(sealed, opened, key)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * CHUNK_SIZE  # a few chunks, not the file
    assert digest.size == opened.stat().st_size == 48 * CHUNK_SIZE + 3


def _refused(blob: bytes, key: DataKey, aad: bytes = b"ctx") -> None:
    with pytest.raises(SealError):
        open_bytes(blob, key, aad)


def test_a_changed_byte_anywhere_is_detected(key):
    blob = seal_bytes(os.urandom(3 * CHUNK + 7), key, b"ctx", chunk_size=CHUNK)
    for position in [0, 6, 9, len(blob) // 2, len(blob) - 1] + list(range(len(blob) - 40, len(blob), 7)):
        changed = bytearray(blob)
        changed[position] ^= 0x01
        _refused(bytes(changed), key)


def test_truncation_is_detected_even_on_a_chunk_boundary(key):
    blob = seal_bytes(os.urandom(3 * CHUNK), key, b"ctx", chunk_size=CHUNK)
    raw, chunks = _chunks(blob)
    assert len(chunks) == 3
    _refused(raw + chunks[0] + chunks[1], key)  # last chunk dropped: the one before is not final
    _refused(raw + chunks[0], key)
    _refused(raw, key)  # header only
    _refused(blob[:-1], key)
    _refused(blob[:len(raw) - 3], key)  # inside the header
    _refused(b"", key)


def test_reordered_duplicated_or_appended_chunks_are_detected(key):
    blob = seal_bytes(os.urandom(3 * CHUNK + 10), key, b"ctx", chunk_size=CHUNK)
    raw, (c0, c1, c2, c3) = _chunks(blob)
    _refused(raw + c1 + c0 + c2 + c3, key)
    _refused(raw + c0 + c0 + c2 + c3, key)
    _refused(raw + c0 + c1 + c2 + c3 + c3, key)
    _refused(blob + b"x", key)
    other = seal_bytes(os.urandom(3 * CHUNK + 10), key, b"ctx", chunk_size=CHUNK)
    _raw2, (d0, *_rest) = _chunks(other)
    _refused(raw + d0 + c1 + c2 + c3, key)  # a chunk of another object under the same key


def test_wrong_key_or_associated_data_is_detected(key):
    blob = seal_bytes(b"secret rows", key, b"ctx", chunk_size=CHUNK)
    _refused(blob, DataKey("d1", os.urandom(32)))  # same id, other key
    _refused(blob, DataKey("d2", key.key))  # the header names d1
    _refused(blob, key, b"other ctx")
    _refused(b"not sealed at all, just some bytes", key)


def test_a_failed_open_leaves_no_plaintext_file(tmp_path, key):
    src, sealed, opened = tmp_path / "plain", tmp_path / "sealed", tmp_path / "opened"
    src.write_bytes(os.urandom(3 * CHUNK))
    seal_file(src, sealed, key, chunk_size=CHUNK)
    sealed.write_bytes(sealed.read_bytes()[:-TAG_SIZE - CHUNK])
    with pytest.raises(SealError):
        open_file(sealed, opened, key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "sealed"]


def test_kek_parses_its_environment_form_and_refuses_bad_ones(kek):
    parsed = Kek.from_env({"DBAAS_BACKUP_KEK": kek.text()})
    assert parsed == kek and parsed.id == "kek-test"
    assert kek.key.hex() not in repr(kek)
    for bad in ["", "no-colon", "id:not*base64", "id:" + base64.b64encode(b"short").decode(),
                ":" + base64.b64encode(os.urandom(32)).decode()]:
        with pytest.raises(ValueError):
            Kek.parse(bad)


def test_a_tenant_gets_one_data_key_stored_wrapped(store, kek):
    keys = DataKeys(store, kek)
    first = keys.for_tenant("acme")
    assert keys.for_tenant("acme") == first
    assert DataKeys(store, kek).for_tenant("acme") == first  # another process finds it
    assert DataKeys(store, kek).for_tenant("globex") != first
    (stored,) = store.list("keys/acme/")
    assert stored.key == f"keys/acme/{first.id}.json"
    record = json.loads(store.get_bytes(stored.key))
    assert set(record) == {"kek_id", "dek_id", "nonce", "wrapped"}
    assert record["kek_id"] == kek.id and record["dek_id"] == first.id
    assert first.key not in store.get_bytes(stored.key)
    assert first.key not in base64.b64decode(record["wrapped"])
    assert DataKeys(store, kek).get("acme", first.id) == first


def test_wrapped_keys_open_only_under_their_kek_and_tenant(store, kek):
    dek = DataKeys(store, kek).for_tenant("acme")
    with pytest.raises(SealError):
        DataKeys(store, Kek("kek-test", os.urandom(32))).get("acme", dek.id)  # same id, other key
    with pytest.raises(SealError):
        DataKeys(store, Kek.generate("kek-other")).get("acme", dek.id)
    # the wrapped key copied under another tenant does not unwrap there
    store.put_bytes(f"keys/globex/{dek.id}.json", store.get_bytes(f"keys/acme/{dek.id}.json"))
    with pytest.raises(SealError):
        DataKeys(store, kek).get("globex", dek.id)
    with pytest.raises(SealError):
        DataKeys(store, kek).get("initech", dek.id)


def test_racing_first_uses_converge_on_one_key(store, kek):
    barrier = threading.Barrier(4)
    found = []

    def first_use():
        barrier.wait()
        found.append(DataKeys(store, kek).for_tenant("acme").id)

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = sorted(o.key.split("/")[-1][:-5] for o in store.list("keys/acme/"))
    assert DataKeys(store, kek).for_tenant("acme").id == stored[0]
    assert set(found) <= set(stored)  # every key ever handed out stays stored


def test_invalid_tenants_are_refused(store, kek):
    for tenant in ["", "..", "a/b", "../x", "a\x00b"]:
        with pytest.raises(ValueError):
            DataKeys(store, kek).for_tenant(tenant)


def test_sealed_store_round_trip_and_binding_to_tenant_and_key(tmp_path, store, kek):
    sealed = SealedStore(store, DataKeys(store, kek))
    src = tmp_path / "dump"
    data = b"MARKER-ROW " * 50
    src.write_bytes(data)
    obj = sealed.put_file("acme", "tenants/acme/backups/b1/data", src, aad=b"b1")
    assert (obj.size, obj.sha256, obj.kek_id) == (len(data), hashlib.sha256(data).hexdigest(), kek.id)
    assert obj.dek_id == DataKeys(store, kek).for_tenant("acme").id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bucket", "dump"]  # no temporary file left
    assert b"MARKER-ROW" not in store.get_bytes(obj.key)
    out = tmp_path / "restored"
    assert sealed.get_file("acme", obj.key, out, aad=b"b1") == obj
    assert out.read_bytes() == data
    with pytest.raises(SealError):
        sealed.get_file("globex", obj.key, tmp_path / "x", aad=b"b1")  # another tenant
    with pytest.raises(SealError):
        sealed.get_file("acme", obj.key, tmp_path / "x", aad=b"b2")
    store.put_bytes("tenants/acme/backups/b2/data", store.get_bytes(obj.key))  # moved object
    with pytest.raises(SealError):
        sealed.get_file("acme", "tenants/acme/backups/b2/data", tmp_path / "x", aad=b"b1")
    assert not (tmp_path / "x").exists()
    small = sealed.put_bytes("_platform", "pops/local/postgres/wal/000000010000000000000001", b"wal bytes")
    assert sealed.get_bytes("_platform", small.key) == b"wal bytes"
    assert small.dek_id != obj.dek_id
