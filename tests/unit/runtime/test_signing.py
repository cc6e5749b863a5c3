"""Message signatures and the keyring: who published a message, and nothing else believed."""
from __future__ import annotations

import base64
import os

import pytest

from runtime.kafka import murmur2, partition_for
from runtime.signing import KEY_ID_HEADER, SIGNATURE_HEADER, Keyring, Signer, TrustedKey, Unverified, write_keyring

TOPIC, KEY, VALUE = "dbaas.commands", b"acme", b"\x00\x00\x00\x00\x01payload"


def entry(signer: Signer, kind: str = "gateway", **more) -> TrustedKey:
    return TrustedKey.from_dict({"key_id": signer.key_id, "kind": kind, "public_key": signer.public_text(), **more})


@pytest.fixture
def gateway() -> Signer:
    return Signer.generate("gateway")


def test_a_signed_message_names_its_key(gateway, tmp_path):
    ring = Keyring(None, [entry(gateway)])
    assert ring.verify(TOPIC, KEY, VALUE, gateway.headers(TOPIC, KEY, VALUE)).key_id == "gateway"


@pytest.mark.parametrize("topic, key, value, reason", [
    ("dbaas.commands", b"acme", VALUE + b"x", "a byte of the value changed"),
    ("dbaas.commands", b"globex", VALUE, "moved to another tenant's key"),
    ("dbaas.pop.status", b"acme", VALUE, "replayed on another topic"),
])
def test_a_signature_covers_topic_key_and_value(gateway, topic, key, value, reason):
    ring = Keyring(None, [entry(gateway)])
    headers = gateway.headers(TOPIC, KEY, VALUE)
    with pytest.raises(Unverified, match="does not match"):
        ring.verify(topic, key, value, headers)


def test_unsigned_unknown_and_forged_messages_are_unverified(gateway):
    ring = Keyring(None, [entry(gateway)])
    with pytest.raises(Unverified, match="not signed"):
        ring.verify(TOPIC, KEY, VALUE, [("correlation-id", b"x")])
    stranger = Signer.generate("stranger")
    with pytest.raises(Unverified, match="not in the platform's keyring"):
        ring.verify(TOPIC, KEY, VALUE, stranger.headers(TOPIC, KEY, VALUE))
    # a stranger's signature under the gateway's key id
    forged = [(KEY_ID_HEADER, b"gateway"), stranger.headers(TOPIC, KEY, VALUE)[1]]
    with pytest.raises(Unverified, match="does not match"):
        ring.verify(TOPIC, KEY, VALUE, forged)
    with pytest.raises(Unverified, match="not base64"):
        ring.verify(TOPIC, KEY, VALUE, [(KEY_ID_HEADER, b"gateway"), (SIGNATURE_HEADER, b"%%%")])


def test_a_key_accepts_exactly_what_openssl_accepts_for_its_signers(gateway):
    """Verification is libsodium's; its verdicts on what signers make and on every kind of damage
    are those of OpenSSL's (`cryptography`) verify."""
    import random

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    trusted = entry(gateway)
    openssl = Ed25519PublicKey.from_public_bytes(base64.b64decode(gateway.public_text()))

    def openssl_says(signature: bytes, data: bytes) -> bool:
        try:
            openssl.verify(signature, data)
            return True
        except InvalidSignature:
            return False

    rng = random.Random(7)
    cases = []
    for _ in range(200):
        data = rng.randbytes(rng.randrange(0, 400))
        signature = gateway.private.sign(data)
        cases.append((signature, data))
        flipped = bytearray(signature)
        flipped[rng.randrange(64)] ^= 1 << rng.randrange(8)
        cases.append((bytes(flipped), data))
        if data:
            altered = bytearray(data)
            altered[rng.randrange(len(data))] ^= 1
            cases.append((signature, bytes(altered)))
        cases.append((signature, data + b"\0"))
        cases.append((signature[:63], signature[63:] + data))  # a short signature borrowing the data's byte
        cases.append((signature + b"\0", data))
        cases.append((b"\0" * 64, data))
    verdicts = [(trusted.verify(sig, data), openssl_says(sig, data)) for sig, data in cases]
    assert all(ours == theirs for ours, theirs in verdicts)
    assert sum(ours for ours, _ in verdicts) == 200  # the genuine ones, and only those


def test_the_keyring_file_is_read_again_when_it_changes(gateway, tmp_path):
    path = tmp_path / "keyring.json"
    ring = Keyring(path)  # no file yet: nothing trusted
    publisher = Signer.generate("ci-bot")
    headers = publisher.headers(TOPIC, KEY, VALUE)
    with pytest.raises(Unverified):
        ring.verify(TOPIC, KEY, VALUE, headers)
    write_keyring(path, [entry(gateway), entry(publisher, "publisher", tenants=["acme"], roles=["service-admin"])])
    trusted = ring.verify(TOPIC, KEY, VALUE, headers)  # an unknown key id reads the file again
    assert (trusted.kind, trusted.tenants, trusted.roles) == ("publisher", ("acme",), ("service-admin",))
    write_keyring(path, [entry(gateway)])  # revoked
    os.utime(path, ns=(1, 1))  # a change within the same clock tick still shows in mtime/size
    ring.refresh()
    with pytest.raises(Unverified, match="unknown or revoked"):
        ring.verify(TOPIC, KEY, VALUE, headers)


def test_a_key_round_trips_through_its_text_and_pem(gateway):
    again = Signer.from_text("gateway", gateway.private_text())
    assert again.public_text() == gateway.public_text()
    with pytest.raises(ValueError, match="pop key names its pop"):
        entry(gateway, "pop")
    with pytest.raises(ValueError, match="kind must be"):
        entry(gateway, "admin")


# Kafka's own test vectors (org.apache.kafka.common.utils.UtilsTest), as signed 32-bit ints.
@pytest.mark.parametrize("data, expected", [
    (b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829), (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
])
def test_murmur2_is_kafkas(data, expected):
    assert murmur2(data) == expected & 0xFFFFFFFF


def test_partition_for_uses_the_positive_hash():
    assert all(0 <= partition_for(f"tenant-{i}".encode(), 12) < 12 for i in range(200))
    assert len({partition_for(f"tenant-{i}".encode(), 12) for i in range(200)}) == 12
