"""Message signatures: how a consumer knows who published a Kafka message.

Every publisher of `dbaas.commands` (the HTTP gateway, the sagas, a registered outside system) and
every PoP that reports on `dbaas.pop.status` signs what it sends with an Ed25519 key of its own.
The signature covers the topic, the message key and the value bytes exactly as sent (domain tag
`dbaas.sig.v1`), and travels in two headers:

    dbaas-key-id     the key's id in the keyring (UTF-8)
    dbaas-signature  base64 of the 64-byte Ed25519 signature over
                     b"dbaas.sig.v1\\0" + topic + b"\\0" + key + b"\\0" + value

The consumer looks the key id up in the platform's *keyring*, a JSON file of public keys, each
with what its holder may do (`kind`: gateway | platform | pop | publisher, plus `pop`, `tenants`,
`roles` where they apply). The keyring is re-read when the file changes, so adding or revoking a
publisher needs no restart. Only public halves are in it; private keys stay with their holders.
This module knows nothing of the domain: it answers *which key signed this*, and the caller
decides what that key may do.
"""
from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

KEY_ID_HEADER = "dbaas-key-id"
SIGNATURE_HEADER = "dbaas-signature"
DOMAIN = b"dbaas.sig.v1\0"
KINDS = ("gateway", "platform", "pop", "publisher")


class Unverified(Exception):
    """The message carries no signature, or one no trusted key made. `reason` says which."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def signed_bytes(topic: str, key: bytes | None, value: bytes | None) -> bytes:
    return DOMAIN + topic.encode() + b"\0" + (key or b"") + b"\0" + (value or b"")


@dataclass(frozen=True)
class Signer:
    """A private key and its id: what a publishing process holds."""

    key_id: str
    private: Ed25519PrivateKey

    @classmethod
    def generate(cls, key_id: str) -> Signer:
        return cls(key_id, Ed25519PrivateKey.generate())

    @classmethod
    def from_text(cls, key_id: str, text: str) -> Signer:
        """From the base64 of the 32 raw private bytes (as `private_text` writes it) or a PEM."""
        text = text.strip()
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError("the signing key must be an Ed25519 key")
            return cls(key_id, key)
        return cls(key_id, Ed25519PrivateKey.from_private_bytes(base64.b64decode(text)))

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Signer | None:
        """`DBAAS_SIGNING_KEY_ID` + `DBAAS_SIGNING_KEY`, or None when the process has none."""
        env = os.environ if env is None else env
        if not env.get("DBAAS_SIGNING_KEY"):
            return None
        return cls.from_text(env.get("DBAAS_SIGNING_KEY_ID") or "", env["DBAAS_SIGNING_KEY"])

    def private_text(self) -> str:
        raw = self.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                         serialization.NoEncryption())
        return base64.b64encode(raw).decode()

    def public_text(self) -> str:
        return public_text(self.private.public_key())

    def headers(self, topic: str, key: bytes | None, value: bytes | None) -> list[tuple[str, bytes]]:
        signature = self.private.sign(signed_bytes(topic, key, value))
        return [(KEY_ID_HEADER, self.key_id.encode()), (SIGNATURE_HEADER, base64.b64encode(signature))]


def public_text(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


@dataclass(frozen=True)
class TrustedKey:
    """One keyring entry: a public key and what its holder is."""

    key_id: str
    kind: str
    public_key: str  # base64 of the 32 raw bytes
    name: str = ""
    pop: str | None = None  # kind pop: the PoP it speaks for
    tenants: tuple[str, ...] = ()  # kind publisher: the organizations it may act in
    roles: tuple[str, ...] = ()  # kind publisher: its roles there
    _key: bytes | None = field(default=None, compare=False, repr=False)  # the 32 raw bytes, checked

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrustedKey:
        kind = d.get("kind")
        if kind not in KINDS:
            raise ValueError(f"keyring entry {d.get('key_id')!r}: kind must be one of {', '.join(KINDS)}")
        if not d.get("key_id") or not d.get("public_key"):
            raise ValueError("keyring entry needs key_id and public_key")
        if kind == "pop" and not d.get("pop"):
            raise ValueError(f"keyring entry {d['key_id']!r}: a pop key names its pop")
        public = base64.b64decode(d["public_key"])
        Ed25519PublicKey.from_public_bytes(public)  # 32 bytes, or ValueError
        return cls(d["key_id"], kind, d["public_key"], d.get("name") or d["key_id"], d.get("pop"),
                   tuple(d.get("tenants") or ()), tuple(d.get("roles") or ()), public)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key_id": self.key_id, "kind": self.kind, "name": self.name,
                               "public_key": self.public_key}
        if self.pop:
            out["pop"] = self.pop
        if self.tenants:
            out["tenants"] = list(self.tenants)
        if self.roles:
            out["roles"] = list(self.roles)
        return out

    def verify(self, signature: bytes, data: bytes) -> bool:
        """Whether `signature` is this key's Ed25519 signature of `data`. Checked by libsodium
        (PyNaCl), in about half the time OpenSSL takes (`cryptography`, which signs): every command
        and every metrics sample is verified. libsodium is the stricter of the two (it also refuses
        signatures by small-order keys and non-canonical encodings), which no signer here makes."""
        assert self._key is not None
        if len(signature) != 64:  # else its bytes and the data's would be read as one signed message
            return False
        try:
            crypto_sign_open(signature + data, self._key)  # libsodium's signed message: signature, then data
            return True
        except BadSignatureError:
            return False


def header(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> bytes | None:
    for k, v in headers or ():
        if k == name:
            return v
    return None


class Keyring:
    """The trusted public keys, from a JSON file (`{"keys": [entry, …]}`), re-read when it changes."""

    def __init__(self, path: Path | None, keys: Iterable[TrustedKey] = ()):
        self.path = path
        self._keys = {k.key_id: k for k in keys}
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self.refresh()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Keyring:
        env = os.environ if env is None else env
        path = env.get("DBAAS_KEYRING")
        return cls(Path(path) if path else None)

    def refresh(self) -> None:
        """Re-read the file if it changed since the last read (one stat when it did not)."""
        if self.path is None:
            return
        try:
            st = self.path.stat()
        except FileNotFoundError:
            stamp = None
        else:
            stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        with self._lock:
            entries = json.loads(self.path.read_text())["keys"] if stamp else []
            self._keys = {k.key_id: k for k in map(TrustedKey.from_dict, entries)}
            self._stamp = stamp

    def keys(self) -> list[TrustedKey]:
        return list(self._keys.values())

    def get(self, key_id: str) -> TrustedKey | None:
        return self._keys.get(key_id)

    def verify(self, topic: str, key: bytes | None, value: bytes | None,
               headers: Sequence[tuple[str, bytes | None]] | None) -> TrustedKey:
        """The trusted key that signed this message, or `Unverified` with the reason."""
        key_id = header(headers, KEY_ID_HEADER)
        signature = header(headers, SIGNATURE_HEADER)
        if not key_id or not signature:
            raise Unverified(f"the message is not signed: send the {KEY_ID_HEADER} and {SIGNATURE_HEADER} "
                             "headers (see the publishing contract)")
        try:
            kid = key_id.decode()
            raw = base64.b64decode(signature, validate=True)
        except (UnicodeDecodeError, ValueError):
            raise Unverified(f"the {SIGNATURE_HEADER} header is not base64") from None
        trusted = self._keys.get(kid)
        if trusted is None:
            self.refresh()
            trusted = self._keys.get(kid)
        if trusted is None:
            raise Unverified(f"key {kid!r} is not in the platform's keyring (unknown or revoked)")
        if not trusted.verify(raw, signed_bytes(topic, key, value)):
            raise Unverified(f"the signature does not match the message for key {kid!r} "
                             "(altered, or signed for another topic or key)")
        return trusted


def write_keyring(path: Path, keys: Iterable[TrustedKey]) -> None:
    """Replace the keyring file in one step (readers never see it half-written)."""
    from runtime.files import replace_text

    body = {"keys": [k.to_dict() for k in sorted(keys, key=lambda k: k.key_id)]}
    replace_text(path, json.dumps(body, indent=2) + "\n")
