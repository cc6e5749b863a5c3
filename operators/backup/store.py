"""Where backups are kept: an S3-compatible bucket (``ObjectStore``, boto3) or a folder
(``DirectoryStore``, a PoP with a mounted volume; ``destination.path`` of a ``DatabaseBackup``).
Both satisfy ``BlobStore``; neither encrypts — ``sealing`` does that before anything reaches them.

Errors say what a caller should do:

- ``StoreUnavailable``: the store cannot be reached or answers 5xx/throttling, or a transfer
  broke off. Transient: retry later.
- ``ObjectMissing``: no object under that key (404).
- ``StoreError``: anything else (refused credentials, a missing bucket, a bad key, missing
  settings); retrying will not help.

The S3 client uses short timeouts and few retries, so a store that is down fails a call within a
few seconds instead of hanging a backup job.

Owns: the storage interface and its two implementations. Imports nothing of the project.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

ENV_ENDPOINT = "DBAAS_S3_ENDPOINT"
ENV_ACCESS_KEY = "DBAAS_S3_ACCESS_KEY"
ENV_SECRET_KEY = "DBAAS_S3_SECRET_KEY"
ENV_BUCKET = "DBAAS_S3_BUCKET"
DEFAULT_BUCKET = "dbaas-backups"

CONNECT_TIMEOUT = 2.0  # seconds to open a connection
READ_TIMEOUT = 30.0  # seconds without a byte from the store (a multipart part being stored)
MAX_ATTEMPTS = 2  # a call is tried at most twice by botocore before StoreUnavailable
MULTIPART_THRESHOLD = 64 * 1024 * 1024  # files above this are uploaded in parts
MULTIPART_CHUNK = 16 * 1024 * 1024  # each part; memory use is a few of these


class StoreError(Exception):
    """A store operation failed and retrying will not help (credentials, bucket, key, settings)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached, timed out or answered 5xx: transient, retry later."""


class ObjectMissing(StoreError):
    """No object under the key."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


@runtime_checkable
class BlobStore(Protocol):
    """Objects under ``/``-separated keys. Writes are whole-object and atomic: a reader sees the
    old object, the new one or none, never a part."""

    def ensure_bucket(self) -> None: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def upload_file(self, path: str | os.PathLike, key: str) -> None: ...

    def download_file(self, key: str, path: str | os.PathLike) -> None: ...

    def list(self, prefix: str = "") -> list[ObjectInfo]: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> int: ...


def check_key(key: str) -> str:
    """``key`` when it is a relative ``/``-separated path without empty, ``.`` or ``..`` parts."""
    if not isinstance(key, str) or not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise StoreError(f"invalid object key {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise StoreError(f"invalid object key {key!r}: empty, '.' or '..' parts")
    return key


# --------------------------------------------------------------------------------------------
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                    "InternalError", "ServiceUnavailable", "OperationAborted"}


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (boto3's transfer errors carry the client error as context)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        cur = todo.pop(0)
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        todo += [cur.__cause__, cur.__context__, getattr(cur, "last_exception", None)]


def _translate(exc: Exception, what: str) -> StoreError:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    for cause in _causes(exc):
        if isinstance(cause, ClientError):
            err = cause.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            message = err.get("Message") or code or f"HTTP {status}"
            if code in _MISSING_CODES or (status == 404 and code not in ("NoSuchBucket", "NoSuchUpload")):
                return ObjectMissing(f"{what}: no such object")
            if status >= 500 or code in _TRANSIENT_CODES or status == 429:
                return StoreUnavailable(f"{what}: the store answered {code or status}: {message}")
            return StoreError(f"{what}: the store refused ({code or status}): {message}")
        if isinstance(cause, (NoCredentialsError, PartialCredentialsError)):
            return StoreError(f"{what}: no S3 credentials ({cause})")
        if isinstance(cause, (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError)):
            return StoreUnavailable(f"{what}: the store cannot be reached ({cause})")
        if isinstance(cause, BotoCoreError):
            return StoreError(f"{what}: {cause}")
    return StoreUnavailable(f"{what}: {exc.__class__.__name__}: {exc}")


class ObjectStore:
    """A bucket of an S3-compatible server (SeaweedFS locally), path-style addressing."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str = DEFAULT_BUCKET, *,
                 region: str = "us-east-1", connect_timeout: float = CONNECT_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT, max_attempts: int = MAX_ATTEMPTS):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        if not endpoint or not bucket:
            raise StoreError("an S3 endpoint and a bucket are needed")
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        config = Config(
            region_name=region, signature_version="s3v4",
            connect_timeout=connect_timeout, read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"},
            # Checksums only where the API demands them: S3-compatible servers differ in their
            # support of the newer trailing checksums; the sealed objects authenticate themselves.
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
            max_pool_connections=8)
        # A session of its own: no shared default, no profile or environment credentials.
        session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                                        region_name=region)
        self._client = session.client("s3", endpoint_url=self.endpoint, config=config)
        self._transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD,
                                        multipart_chunksize=MULTIPART_CHUNK, max_concurrency=4,
                                        use_threads=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ObjectStore:
        """From ``DBAAS_S3_ENDPOINT``, ``DBAAS_S3_ACCESS_KEY``, ``DBAAS_S3_SECRET_KEY`` and
        ``DBAAS_S3_BUCKET`` (default ``dbaas-backups``)."""
        env = os.environ if environ is None else environ
        missing = [n for n in (ENV_ENDPOINT, ENV_ACCESS_KEY, ENV_SECRET_KEY) if not env.get(n)]
        if missing:
            raise StoreError(f"object storage is not configured: {', '.join(missing)} not set")
        return cls(env[ENV_ENDPOINT], env[ENV_ACCESS_KEY], env[ENV_SECRET_KEY],
                   env.get(ENV_BUCKET) or DEFAULT_BUCKET)

    def __repr__(self) -> str:
        return f"ObjectStore({self.endpoint!r}, bucket={self.bucket!r})"

    @contextlib.contextmanager
    def _call(self, what: str):
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (ClientError, BotoCoreError, Boto3Error, OSError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, (ConnectionError, TimeoutError)) \
                    and not any(isinstance(c, (ClientError, BotoCoreError)) for c in _causes(exc)):
                raise  # a local file error (the caller's path), not the store's
            raise _translate(exc, what) from exc

    # -- the BlobStore interface -----------------------------------------------------------
    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        with self._call(f"bucket {self.bucket}"):
            try:
                self._client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status != 404 and exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                    raise
            try:
                self._client.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou",
                                                                      "BucketAlreadyExists"):
                    raise

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._call(f"put {check_key(key)}"):
            self._client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data))

    def get_bytes(self, key: str) -> bytes:
        with self._call(f"get {check_key(key)}"):
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                return body.read()
            finally:
                body.close()

    def upload_file(self, path: str | os.PathLike, key: str) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no file {path} to upload")
        with self._call(f"upload {check_key(key)}"):
            self._client.upload_file(str(path), self.bucket, key, Config=self._transfer)

    def download_file(self, key: str, path: str | os.PathLike) -> None:
        """``key`` into ``path``, written whole or not at all (a temporary file beside it)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.part-{secrets.token_hex(4)}")
        try:
            with self._call(f"download {check_key(key)}"):
                self._client.download_file(self.bucket, key, str(tmp), Config=self._transfer)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        found = []
        with self._call(f"list {prefix or '/'}"):
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", ()):
                    found.append(ObjectInfo(obj["Key"], int(obj["Size"]), obj["LastModified"]))
        return sorted(found, key=lambda o: o.key)

    def exists(self, key: str) -> bool:
        try:
            with self._call(f"head {check_key(key)}"):
                self._client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ObjectMissing:
            return False

    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing object is not an error."""
        with self._call(f"delete {check_key(key)}"):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with ``prefix`` (non-empty); returns how many."""
        if not prefix:
            raise StoreError("delete_prefix needs a non-empty prefix")
        keys = [o.key for o in self.list(prefix)]
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            with self._call(f"delete {prefix}*"):
                answer = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            errors = [e for e in answer.get("Errors", ()) if e.get("Code") not in _MISSING_CODES]
            if errors:
                first = errors[0]
                raise StoreError(f"delete {prefix}*: {len(errors)} objects not deleted, e.g. "
                                 f"{first.get('Key')}: {first.get('Code')} {first.get('Message', '')}")
        return len(keys)

    def close(self) -> None:
        self._client.close()


# --------------------------------------------------------------------------------------------
class DirectoryStore:
    """Objects as files below ``root`` (a key is a relative path). Writes go to a temporary file in
    the same folder, then are renamed into place."""

    TMP_PREFIX = ".tmp-"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        check_key(key)
        if any(part.startswith(self.TMP_PREFIX) for part in key.split("/")):
            raise StoreError(f"invalid object key {key!r}: parts may not start with {self.TMP_PREFIX}")
        return self.root.joinpath(*key.split("/"))

    def _unavailable(self, what: str, exc: OSError) -> StoreError:
        return StoreUnavailable(f"{what}: {exc.strerror or exc} ({self.root})")

    @contextlib.contextmanager
    def _writing(self, key: str) -> Iterator[Path]:
        """A temporary path that becomes ``key`` when the block ends without an error."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._unavailable(f"put {key}", exc) from exc
        tmp = path.with_name(f"{self.TMP_PREFIX}{path.name}-{secrets.token_hex(4)}")
        try:
            yield tmp
            os.replace(tmp, path)
        except OSError as exc:
            raise self._unavailable(f"put {key}", exc) from exc
        finally:
            tmp.unlink(missing_ok=True)

    def ensure_bucket(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._unavailable("create the store folder", exc) from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._writing(key) as tmp:
            tmp.write_bytes(data)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectMissing(f"get {key}: no such object") from None
        except OSError as exc:
            raise self._unavailable(f"get {key}", exc) from exc

    def upload_file(self, path: str | os.PathLike, key: str) -> None:
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"no file {source} to upload")
        with self._writing(key) as tmp, open(source, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)

    def download_file(self, key: str, path: str | os.PathLike) -> None:
        source, target = self._path(key), Path(path)
        tmp = target.with_name(f".{target.name}.part-{secrets.token_hex(4)}")
        if not source.is_file():
            raise ObjectMissing(f"download {key}: no such object")
        try:
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        # Only the folders the prefix can reach are walked.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*base.split("/")) if base else self.root
        found = []
        if not start.is_dir():
            return []
        try:
            for folder, dirs, files in os.walk(start):
                dirs[:] = [d for d in dirs if not d.startswith(self.TMP_PREFIX)]
                for name in files:
                    if name.startswith(self.TMP_PREFIX):
                        continue
                    full = Path(folder) / name
                    key = full.relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        st = full.stat()
                        found.append(ObjectInfo(key, st.st_size,
                                                datetime.fromtimestamp(st.st_mtime, UTC)))
        except OSError as exc:
            raise self._unavailable(f"list {prefix or '/'}", exc) from exc
        return sorted(found, key=lambda o: o.key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except IsADirectoryError:
            return
        except OSError as exc:
            raise self._unavailable(f"delete {key}", exc) from exc
        self._prune(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise StoreError("delete_prefix needs a non-empty prefix")
        objects = self.list(prefix)
        for obj in objects:
            self.delete(obj.key)
        return len(objects)

    def _prune(self, folder: Path) -> None:
        """Remove folders left empty, up to the root."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent
