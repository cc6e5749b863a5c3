"""The folder-backed store behaves as the bucket does: whole-object writes, prefix listing and
deletion, ObjectMissing for absent keys, keys that cannot leave the folder."""
from __future__ import annotations

import pytest

from operators.backup.store import BlobStore, DirectoryStore, ObjectMissing, ObjectStore, StoreError


@pytest.fixture
def store(tmp_path) -> DirectoryStore:
    s = DirectoryStore(tmp_path / "root")
    s.ensure_bucket()
    return s


def test_both_stores_satisfy_the_protocol(store):
    assert isinstance(store, BlobStore)
    assert isinstance(ObjectStore("http://127.0.0.1:1", "a", "b", "bucket"), BlobStore)


def test_put_get_list_delete(store, tmp_path):
    store.put_bytes("tenants/acme/backups/b1/manifest.json", b"{}")
    src = tmp_path / "dump"
    src.write_bytes(b"x" * 3000)
    store.upload_file(src, "tenants/acme/backups/b1/data")
    store.put_bytes("tenants/acme2/backups/b9/data", b"other")
    assert store.exists("tenants/acme/backups/b1/data") and not store.exists("tenants/acme/nothing")
    assert [(o.key, o.size) for o in store.list("tenants/acme/")] == [
        ("tenants/acme/backups/b1/data", 3000), ("tenants/acme/backups/b1/manifest.json", 2)]
    assert len(store.list("tenants/acme")) == 3  # a prefix, not a folder
    assert store.list("nothing/") == []
    store.download_file("tenants/acme/backups/b1/data", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"x" * 3000
    assert store.delete_prefix("tenants/acme/") == 2
    assert [o.key for o in store.list()] == ["tenants/acme2/backups/b9/data"]
    assert not (tmp_path / "root" / "tenants" / "acme").exists()  # emptied folders go too
    store.delete("tenants/acme2/backups/b9/data")
    store.delete("tenants/acme2/backups/b9/data")  # deleting what is gone is fine
    assert store.list() == []


def test_missing_objects_and_bad_keys(store, tmp_path):
    with pytest.raises(ObjectMissing):
        store.get_bytes("keys/acme/none.json")
    with pytest.raises(ObjectMissing):
        store.download_file("keys/acme/none.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    for key in ["", "/abs", "a/../b", "a//b", "./a", "a/.tmp-x"]:
        with pytest.raises(StoreError):
            store.put_bytes(key, b"")
    with pytest.raises(StoreError):
        store.delete_prefix("")
