"""Client-side envelope encryption of backups: nothing reaches object storage in clear.

Keys:

- The platform's **key-encryption key** (KEK, ``Kek``): an id and 256 bits, from
  ``DBAAS_BACKUP_KEK`` = ``<kek_id>:<base64 of 32 bytes>``. It never encrypts data; it wraps data
  keys.
- One **data key** per tenant (``DataKeys``): 256 random bits with a short random id, created on
  the tenant's first backup and stored wrapped (AES-256-GCM under the KEK, the tenant, data key id
  and KEK id as associated data) at ``keys/{tenant}/{dek_id}.json``. Cluster-wide files that hold
  many tenants' rows use the platform's own data key (tenant ``_platform``).

Sealed streams (``seal_file``/``open_file``, ``seal_bytes``/``open_bytes``) are chunked, so a file
of any size is sealed and opened with memory for two chunks:

    header:  magic "DBSEAL" | version (1 byte) | dek id length (1 byte) | dek id (ascii)
             | chunk size (4 bytes, big-endian) | nonce prefix (8 random bytes)
    chunks:  AES-256-GCM(plaintext chunk) with its 16-byte tag, each chunk ``chunk size`` bytes of
             plaintext except the last (0..chunk size); there is always a last chunk
    nonce:   nonce prefix || chunk index (4 bytes, big-endian)
    AAD:     header || len(caller aad) (4 bytes) || caller aad || chunk index (8 bytes) || final (1 byte)

Each chunk is bound to the header, the caller's associated data, its position and whether it is
the last: a changed byte, a dropped or appended chunk, chunks swapped, or a file cut anywhere
(even on a chunk boundary) fail with ``SealError``. ``SealedStore`` adds the tenant and object key
to the associated data, so an object copied to another key or tenant does not open either.

Owns: the key hierarchy, the sealed format and sealed upload/download.
Imports: ``operators.backup.store`` (where wrapped keys and sealed objects are kept).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import re
import secrets
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from operators.backup.store import BlobStore, ObjectMissing

ENV_KEK = "DBAAS_BACKUP_KEK"
PLATFORM_TENANT = "_platform"  # whose data key seals cluster-wide WAL, binlogs and base backups

MAGIC = b"DBSEAL"
VERSION = 1
CHUNK_SIZE = 1024 * 1024
MAX_CHUNK_SIZE = 64 * 1024 * 1024  # refused above this: a header must not make a reader allocate more
TAG_SIZE = 16
NONCE_PREFIX_SIZE = 8
MAX_CHUNKS = 2**32  # the counter's range: 4 PiB at the default chunk size
KEY_SIZE = 32

_TENANT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class SealError(Exception):
    """A sealed object or wrapped key does not open: tampered with, truncated, reordered, sealed
    under another key or for another tenant or object, or not a sealed object at all."""


def _check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT.match(tenant) or tenant in (".", ".."):
        raise ValueError(f"invalid tenant {tenant!r} for backup keys")
    return tenant


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise SealError(f"{what} is not base64") from None


# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kek:
    """The platform's key-encryption key."""

    id: str
    key: bytes = field(repr=False)

    def __post_init__(self):
        if not _KEY_ID.match(self.id or ""):
            raise ValueError(f"invalid KEK id {self.id!r}: 1-64 of A-Z a-z 0-9 _ . -")
        if len(self.key) != KEY_SIZE:
            raise ValueError(f"a KEK has {KEY_SIZE} bytes, not {len(self.key)}")

    @classmethod
    def parse(cls, text: str) -> Kek:
        """``<kek_id>:<base64 of 32 bytes>``."""
        kek_id, sep, encoded = (text or "").strip().partition(":")
        if not sep:
            raise ValueError(f"{ENV_KEK} must be <kek_id>:<base64 of {KEY_SIZE} bytes>")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{ENV_KEK}: the key after ':' is not base64") from None
        return cls(kek_id, key)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Kek:
        env = os.environ if environ is None else environ
        if not env.get(ENV_KEK):
            raise ValueError(f"{ENV_KEK} is not set")
        return cls.parse(env[ENV_KEK])

    @classmethod
    def generate(cls, kek_id: str | None = None) -> Kek:
        return cls(kek_id or f"kek-{secrets.token_hex(4)}", secrets.token_bytes(KEY_SIZE))

    def text(self) -> str:
        """The ``DBAAS_BACKUP_KEK`` form."""
        return f"{self.id}:{base64.b64encode(self.key).decode()}"


@dataclass(frozen=True)
class DataKey:
    """A tenant's data key: what sealed objects are encrypted with."""

    id: str
    key: bytes = field(repr=False)

    def __post_init__(self):
        if not _KEY_ID.match(self.id or "") or len(self.id.encode()) > 255:
            raise ValueError(f"invalid data key id {self.id!r}")
        if len(self.key) != KEY_SIZE:
            raise ValueError(f"a data key has {KEY_SIZE} bytes, not {len(self.key)}")


def _wrap_aad(tenant: str, dek_id: str, kek_id: str) -> bytes:
    return b"\x00".join([b"dbaas-dek-v1", tenant.encode(), dek_id.encode(), kek_id.encode()])


class DataKeys:
    """Tenants' data keys, wrapped under the KEK in ``store`` at ``keys/{tenant}/{dek_id}.json``.

    A tenant's current key is the one with the smallest id among its stored keys. Two processes
    creating a tenant's first key at once both write theirs and then both pick the smallest id
    they see, so they converge on one; any key ever used stays stored, and every sealed object
    names its own key, so an object sealed under a losing key still opens."""

    def __init__(self, store: BlobStore, kek: Kek):
        self.store = store
        self.kek = kek
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, str], DataKey] = {}
        self._current: dict[str, DataKey] = {}

    @staticmethod
    def key_name(tenant: str, dek_id: str) -> str:
        return f"keys/{_check_tenant(tenant)}/{dek_id}.json"

    def for_tenant(self, tenant: str) -> DataKey:
        """The tenant's current data key, created and stored on first use."""
        _check_tenant(tenant)
        with self._lock:
            if tenant in self._current:
                return self._current[tenant]
            ids = self._stored_ids(tenant)
            if not ids:
                self._create(tenant)
                ids = self._stored_ids(tenant)
            key = self._get(tenant, min(ids))
            self._current[tenant] = key
            return key

    def get(self, tenant: str, dek_id: str) -> DataKey:
        """The tenant's data key ``dek_id`` (to open an object sealed under it)."""
        _check_tenant(tenant)
        if not _KEY_ID.match(dek_id or ""):
            raise SealError(f"invalid data key id {dek_id!r}")
        with self._lock:
            return self._get(tenant, dek_id)

    def _stored_ids(self, tenant: str) -> list[str]:
        prefix = f"keys/{tenant}/"
        return [o.key[len(prefix):-len(".json")] for o in self.store.list(prefix)
                if o.key.endswith(".json") and "/" not in o.key[len(prefix):]]

    def _create(self, tenant: str) -> None:
        dek = DataKey(secrets.token_hex(6), secrets.token_bytes(KEY_SIZE))
        nonce = secrets.token_bytes(12)
        wrapped = AESGCM(self.kek.key).encrypt(nonce, dek.key, _wrap_aad(tenant, dek.id, self.kek.id))
        record = {"kek_id": self.kek.id, "dek_id": dek.id, "nonce": base64.b64encode(nonce).decode(),
                  "wrapped": base64.b64encode(wrapped).decode()}
        self.store.put_bytes(self.key_name(tenant, dek.id), json.dumps(record, sort_keys=True).encode())
        self._keys[(tenant, dek.id)] = dek

    def _get(self, tenant: str, dek_id: str) -> DataKey:
        if (tenant, dek_id) in self._keys:
            return self._keys[(tenant, dek_id)]
        name = self.key_name(tenant, dek_id)
        try:
            record = json.loads(self.store.get_bytes(name))
        except ObjectMissing:
            raise SealError(f"tenant {tenant} has no data key {dek_id} ({name} is missing)") from None
        except (ValueError, UnicodeDecodeError):
            raise SealError(f"{name} is not a wrapped data key") from None
        if not isinstance(record, dict) or record.get("dek_id") != dek_id:
            raise SealError(f"{name} is not the wrapped data key {dek_id}")
        if record.get("kek_id") != self.kek.id:
            raise SealError(f"data key {dek_id} of tenant {tenant} is wrapped under KEK "
                            f"{record.get('kek_id')!r}, not this platform's {self.kek.id!r}")
        nonce = _b64decode(record.get("nonce", ""), f"{name}: nonce")
        wrapped = _b64decode(record.get("wrapped", ""), f"{name}: wrapped key")
        try:
            key = AESGCM(self.kek.key).decrypt(nonce, wrapped, _wrap_aad(tenant, dek_id, self.kek.id))
        except (InvalidTag, ValueError):
            raise SealError(f"data key {dek_id} of tenant {tenant} does not unwrap under KEK "
                            f"{self.kek.id} (tampered with, or stored for another tenant)") from None
        dek = DataKey(dek_id, key)
        self._keys[(tenant, dek_id)] = dek
        return dek


# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Header:
    dek_id: str
    chunk_size: int
    nonce_prefix: bytes

    def encode(self) -> bytes:
        dek = self.dek_id.encode("ascii")
        return (MAGIC + bytes([VERSION, len(dek)]) + dek + struct.pack(">I", self.chunk_size)
                + self.nonce_prefix)


def read_header(src: BinaryIO) -> tuple[Header, bytes]:
    """The header at the start of ``src`` and its raw bytes (part of every chunk's AAD)."""
    head = src.read(len(MAGIC) + 2)
    if len(head) < len(MAGIC) + 2 or head[:len(MAGIC)] != MAGIC:
        raise SealError("not a sealed object (no DBSEAL header)")
    if head[len(MAGIC)] != VERSION:
        raise SealError(f"sealed object of format version {head[len(MAGIC)]}, this reader knows {VERSION}")
    dek_len = head[len(MAGIC) + 1]
    rest = src.read(dek_len + 4 + NONCE_PREFIX_SIZE)
    if len(rest) != dek_len + 4 + NONCE_PREFIX_SIZE:
        raise SealError("sealed object cut inside its header")
    try:
        dek_id = rest[:dek_len].decode("ascii")
    except UnicodeDecodeError:
        raise SealError("sealed object header: data key id is not ascii") from None
    (chunk_size,) = struct.unpack(">I", rest[dek_len:dek_len + 4])
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise SealError(f"sealed object header: chunk size {chunk_size} out of range")
    return Header(dek_id, chunk_size, rest[dek_len + 4:]), head + rest


def sealed_key_id(path: str | os.PathLike) -> str:
    """The id of the data key the sealed file at ``path`` was sealed with."""
    with open(path, "rb") as fh:
        return read_header(fh)[0].dek_id


def _chunk_aad(header: bytes, aad: bytes, index: int, final: bool) -> bytes:
    return header + struct.pack(">I", len(aad)) + aad + struct.pack(">QB", index, 1 if final else 0)


def _read_full(src: BinaryIO, size: int) -> bytes:
    """``size`` bytes, fewer only at the end of ``src`` (pipes and sockets may return less)."""
    parts, left = [], size
    while left:
        part = src.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


@dataclass(frozen=True)
class Digest:
    """Size and SHA-256 (hex) of a sealed object's plaintext."""

    size: int
    sha256: str


def seal_stream(src: BinaryIO, dst: BinaryIO, key: DataKey, aad: bytes = b"", *,
                chunk_size: int = CHUNK_SIZE) -> Digest:
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size {chunk_size} out of range 1..{MAX_CHUNK_SIZE}")
    header = Header(key.id, chunk_size, secrets.token_bytes(NONCE_PREFIX_SIZE))
    raw = header.encode()
    dst.write(raw)
    aead, digest, size = AESGCM(key.key), hashlib.sha256(), 0
    index = 0
    chunk = _read_full(src, chunk_size)
    while True:
        # One chunk ahead: a chunk is the last when nothing follows it.
        following = _read_full(src, chunk_size) if len(chunk) == chunk_size else b""
        final = not following
        if index >= MAX_CHUNKS:
            raise ValueError("too much data for one sealed object")
        digest.update(chunk)
        size += len(chunk)
        nonce = header.nonce_prefix + struct.pack(">I", index)
        dst.write(aead.encrypt(nonce, chunk, _chunk_aad(raw, aad, index, final)))
        if final:
            return Digest(size, digest.hexdigest())
        chunk, index = following, index + 1


def open_stream(src: BinaryIO, dst: BinaryIO, key: DataKey, aad: bytes = b"") -> Digest:
    """Authenticated plaintext of ``src`` into ``dst``. On ``SealError`` part of it may already be
    in ``dst``: callers writing files use ``open_file`` (which removes it)."""
    header, raw = read_header(src)
    if header.dek_id != key.id:
        raise SealError(f"sealed under data key {header.dek_id}, not {key.id}")
    aead, digest, size = AESGCM(key.key), hashlib.sha256(), 0
    block = header.chunk_size + TAG_SIZE
    index = 0
    sealed = _read_full(src, block)
    while True:
        following = _read_full(src, block) if len(sealed) == block else b""
        final = not following
        if len(sealed) < TAG_SIZE:
            raise SealError(f"sealed object cut short at chunk {index}")
        nonce = header.nonce_prefix + struct.pack(">I", index)
        try:
            chunk = aead.decrypt(nonce, sealed, _chunk_aad(raw, aad, index, final))
        except InvalidTag:
            raise SealError(f"chunk {index} does not authenticate: the object was changed, cut, reordered, "
                            "or sealed with other associated data or key") from None
        digest.update(chunk)
        size += len(chunk)
        dst.write(chunk)
        if final:
            return Digest(size, digest.hexdigest())
        if index + 1 >= MAX_CHUNKS:
            raise SealError("sealed object has more chunks than its format allows")
        sealed, index = following, index + 1


def _temp_beside(path: Path, what: str) -> Path:
    return path.with_name(f".{path.name}.{what}-{secrets.token_hex(4)}")


def seal_file(src: str | os.PathLike, dst: str | os.PathLike, key: DataKey, aad: bytes = b"", *,
              chunk_size: int = CHUNK_SIZE) -> Digest:
    """Seal the file ``src`` into ``dst``; returns the plaintext's size and SHA-256."""
    dst = Path(dst)
    tmp = _temp_beside(dst, "sealing")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            result = seal_stream(fin, fout, key, aad, chunk_size=chunk_size)
        os.replace(tmp, dst)
        return result
    finally:
        tmp.unlink(missing_ok=True)


def open_file(src: str | os.PathLike, dst: str | os.PathLike, key: DataKey, aad: bytes = b"") -> Digest:
    """Open the sealed file ``src`` into ``dst``: ``dst`` appears only once every chunk has
    authenticated (a temporary file beside it until then)."""
    dst = Path(dst)
    tmp = _temp_beside(dst, "opening")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            result = open_stream(fin, fout, key, aad)
        os.replace(tmp, dst)
        return result
    finally:
        tmp.unlink(missing_ok=True)


def seal_bytes(data: bytes, key: DataKey, aad: bytes = b"", *, chunk_size: int = CHUNK_SIZE) -> bytes:
    out = io.BytesIO()
    seal_stream(io.BytesIO(data), out, key, aad, chunk_size=chunk_size)
    return out.getvalue()


def open_bytes(blob: bytes, key: DataKey, aad: bytes = b"") -> bytes:
    out = io.BytesIO()
    open_stream(io.BytesIO(blob), out, key, aad)
    return out.getvalue()


# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SealedObject:
    """A sealed object as stored: its key, the plaintext's size and SHA-256, and the key ids it
    was sealed under (what events and manifests record)."""

    key: str
    size: int
    sha256: str
    dek_id: str
    kek_id: str


class SealedStore:
    """Sealed upload and download of tenants' objects: each object is sealed under its tenant's
    data key, with the tenant and the object key in its associated data."""

    def __init__(self, store: BlobStore, data_keys: DataKeys):
        self.store = store
        self.data_keys = data_keys

    @staticmethod
    def object_aad(tenant: str, key: str, aad: bytes = b"") -> bytes:
        return b"\x00".join([b"dbaas-object-v1", tenant.encode(), key.encode(), aad])

    def put_file(self, tenant: str, key: str, path: str | os.PathLike, aad: bytes = b"") -> SealedObject:
        """Seal ``path`` into a temporary file beside it, upload that, remove it."""
        path = Path(path)
        dek = self.data_keys.for_tenant(tenant)
        tmp = _temp_beside(path, "sealed")
        try:
            digest = seal_file(path, tmp, dek, self.object_aad(tenant, key, aad))
            self.store.upload_file(tmp, key)
        finally:
            tmp.unlink(missing_ok=True)
        return SealedObject(key, digest.size, digest.sha256, dek.id, self.data_keys.kek.id)

    def get_file(self, tenant: str, key: str, path: str | os.PathLike, aad: bytes = b"") -> SealedObject:
        """Download ``key`` beside ``path`` and open it into ``path`` (only when it authenticates)."""
        path = Path(path)
        tmp = _temp_beside(path, "download")
        try:
            self.store.download_file(key, tmp)
            dek = self.data_keys.get(tenant, sealed_key_id(tmp))
            digest = open_file(tmp, path, dek, self.object_aad(tenant, key, aad))
        finally:
            tmp.unlink(missing_ok=True)
        return SealedObject(key, digest.size, digest.sha256, dek.id, self.data_keys.kek.id)

    def put_bytes(self, tenant: str, key: str, data: bytes, aad: bytes = b"") -> SealedObject:
        dek = self.data_keys.for_tenant(tenant)
        self.store.put_bytes(key, seal_bytes(data, dek, self.object_aad(tenant, key, aad)))
        return SealedObject(key, len(data), hashlib.sha256(data).hexdigest(), dek.id, self.data_keys.kek.id)

    def get_bytes(self, tenant: str, key: str, aad: bytes = b"") -> bytes:
        blob = self.store.get_bytes(key)
        header, _ = read_header(io.BytesIO(blob))
        return open_bytes(blob, self.data_keys.get(tenant, header.dek_id), self.object_aad(tenant, key, aad))
