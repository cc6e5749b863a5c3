"""Sealing a short secret to one process: anyone with the public key can seal, only the holder of
the private key opens.

An X25519 key pair per holder (the private key base64 of its 32 raw bytes, as the instance's
`secrets.json` keeps it; the public key the same for its public half). `seal` makes an ephemeral
X25519 key, agrees a secret with the recipient's public key, derives a ChaCha20-Poly1305 key with
HKDF-SHA256 (salt: both public keys; info: `dbaas.seal.v1` and the key id) and encrypts with
`context` as associated data, so a sealed value moved to another context (another subscription)
does not open. Format: `v1.<key id>.<base64url(ephemeral public key | nonce | ciphertext+tag)>`.

Used for tenant subscriptions' Kafka passwords: the gateway seals the password it generates to the
subscription saga, which alone can open it to create the SCRAM credential.

Owns the sealed format. Imports `cryptography` only.
"""
from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "v1"
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class SealError(ValueError):
    """A sealed value that does not open: another key, another context, or changed bytes."""


def generate() -> str:
    """A new private key (base64 of 32 raw bytes)."""
    raw = X25519PrivateKey.generate().private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                    serialization.NoEncryption())
    return base64.b64encode(raw).decode()


def _private(text: str) -> X25519PrivateKey:
    try:
        return X25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise SealError(f"not an X25519 private key: {exc}") from None


def public_key(private_text: str) -> str:
    """The public half of `private_text` (base64 of 32 raw bytes)."""
    return base64.b64encode(_private(private_text).public_key().public_bytes(*_RAW)).decode()


def _key(shared: bytes, ephemeral: bytes, recipient: bytes, key_id: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=ephemeral + recipient, info=f"dbaas.seal.v1\0{key_id}".encode()).derive(shared)


def seal(public_text: str, key_id: str, secret: bytes, context: bytes) -> str:
    """`secret` sealed to the holder of `public_text` (known as `key_id`), bound to `context`."""
    try:
        recipient = X25519PublicKey.from_public_bytes(base64.b64decode(public_text, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise SealError(f"not an X25519 public key: {exc}") from None
    ephemeral = X25519PrivateKey.generate()
    eph_raw, rcp_raw = ephemeral.public_key().public_bytes(*_RAW), recipient.public_bytes(*_RAW)
    nonce = os.urandom(12)
    body = ChaCha20Poly1305(_key(ephemeral.exchange(recipient), eph_raw, rcp_raw, key_id)).encrypt(nonce, secret, context)
    return f"{VERSION}.{key_id}.{base64.urlsafe_b64encode(eph_raw + nonce + body).decode()}"


def key_id_of(sealed: str) -> str:
    parts = sealed.split(".", 2)
    if len(parts) != 3 or parts[0] != VERSION or not parts[1]:
        raise SealError("not a sealed value of this format (v1.<key id>.<data>)")
    return parts[1]


def open_sealed(private_text: str, sealed: str, context: bytes) -> bytes:
    """The secret of `sealed`, or SealError."""
    key_id = key_id_of(sealed)
    try:
        raw = base64.urlsafe_b64decode(sealed.split(".", 2)[2])
    except (binascii.Error, ValueError):
        raise SealError("the sealed data is not base64") from None
    if len(raw) < 32 + 12 + 16:
        raise SealError("the sealed data is too short")
    private = _private(private_text)
    eph_raw, nonce, body = raw[:32], raw[32:44], raw[44:]
    shared = private.exchange(X25519PublicKey.from_public_bytes(eph_raw))
    try:
        return ChaCha20Poly1305(_key(shared, eph_raw, private.public_key().public_bytes(*_RAW), key_id)).decrypt(
            nonce, body, context)
    except InvalidTag:
        raise SealError("the sealed value does not open with this key and context") from None
