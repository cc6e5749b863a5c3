"""``dbaas keys list|add-pop|add-publisher|revoke``: the platform instance's keyring.

Every command on `dbaas.commands` and every report on `dbaas.pop.status` is signed; the keyring
(`<home>/keyring.json`, public keys only) says whose signatures the control plane believes and what
each holder may do. The instance's own keys (gateway, platform, pop-local) are kept there by
`dbaas stack up`; these commands register the others — a Kubernetes PoP's status reporter, or an
outside system publishing commands — and revoke them. The control plane re-reads the file when it
changes: no restart.

A new key pair is generated here and its private half written once, to `--out` (mode 0600) or
printed with `--json`; the platform keeps only the public half. Or bring your own Ed25519 public
key (`--public-key`, base64 of the 32 raw bytes) and keep the private half to yourself.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
from pathlib import Path

from commands import publisher_principal
from commands.catalog import ORG_ROLES
from deploy.stack import config as stack_config
from deploy.stack.base import SIGNING_KEYS
from runtime.signing import Keyring, Signer, TrustedKey, write_keyring
from schemas.catalog import POPS

NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class KeyringError(Exception):
    """The keyring cannot be changed as asked; the message says why."""


ERRORS = (KeyringError,)


def _keyring(args) -> tuple[Path, Keyring]:
    path = stack_config.resolve(args.home).keyring_file
    return path, Keyring(path)


def _add(args, entry: dict) -> int:
    path, ring = _keyring(args)
    if ring.get(entry["key_id"]) is not None:
        raise KeyringError(f"key {entry['key_id']!r} is already in the keyring; revoke it first to replace it")
    signer = None
    if args.public_key:
        entry["public_key"] = args.public_key
    else:
        signer = Signer.generate(entry["key_id"])
        entry["public_key"] = signer.public_text()
    try:
        trusted = TrustedKey.from_dict(entry)
    except ValueError as exc:
        raise KeyringError(str(exc)) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    write_keyring(path, [*ring.keys(), trusted])
    out = {**trusted.to_dict()}
    if signer is not None and args.out:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(signer.private_text() + "\n")
        out["private_key_file"] = str(args.out)
    elif signer is not None:
        out["private_key"] = signer.private_text()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"registered {trusted.kind} key {trusted.key_id!r}")
        if "private_key" in out:
            print(f"private key (shown once; keep it secret): {out['private_key']}")
        elif "private_key_file" in out:
            print(f"private key written to {out['private_key_file']} (mode 0600)")
    return 0


def cmd_add_pop(args) -> int:
    if args.pop not in POPS:
        raise KeyringError(f"PoP {args.pop!r} is not offered; choose one of: {', '.join(POPS)}")
    key_id = args.key_id or f"pop-{args.pop}"
    return _add(args, {"key_id": key_id, "kind": "pop", "name": key_id, "pop": args.pop})


def cmd_add_publisher(args) -> int:
    if not NAME.match(args.name):
        raise KeyringError(f"publisher name {args.name!r} must be a DNS-1123 label (a-z, 0-9, '-')")
    bad = [r for r in args.role if r not in ORG_ROLES]
    if bad:
        raise KeyringError(f"roles {', '.join(bad)} are not offered; choose from: {', '.join(ORG_ROLES)}")
    if not args.tenant:
        raise KeyringError("name the organizations it may act in: --tenant ORG (repeatable; '*' for any)")
    key_id = args.key_id or f"publisher-{args.name}"
    code = _add(args, {"key_id": key_id, "kind": "publisher", "name": args.name, "tenants": args.tenant,
                       "roles": args.role})
    if not args.json:
        print(f"its commands name the actor {publisher_principal(args.name)!r}")
    return code


def cmd_list(args) -> int:
    _, ring = _keyring(args)
    keys = [k.to_dict() for k in sorted(ring.keys(), key=lambda k: k.key_id)]
    if args.json:
        print(json.dumps(keys, indent=2))
        return 0
    for k in keys:
        scope = k.get("pop") or ",".join(k.get("tenants", [])) or "-"
        print(f"{k['key_id']:<28} {k['kind']:<10} {scope:<24} {','.join(k.get('roles', []))}")
    return 0


def cmd_revoke(args) -> int:
    if args.key_id in SIGNING_KEYS:
        raise KeyringError(f"{args.key_id!r} is one of the instance's own keys; `dbaas stack up` keeps it")
    path, ring = _keyring(args)
    if ring.get(args.key_id) is None:
        raise KeyringError(f"no key {args.key_id!r} in the keyring")
    write_keyring(path, [k for k in ring.keys() if k.key_id != args.key_id])
    print(f"revoked {args.key_id!r}: its signatures are refused from the next batch on")
    return 0


def _public_key(text: str) -> str:
    try:
        if len(base64.b64decode(text, validate=True)) != 32:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError("an Ed25519 public key: base64 of its 32 raw bytes") from None
    return text


def register(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="who may sign commands and PoP reports").add_subparsers(
        dest="action", required=True)

    def common(p: argparse.ArgumentParser, new: bool = False) -> None:
        p.add_argument("--home", help="instance folder (default .data/stack or $DBAAS_STACK_HOME)")
        p.add_argument("--json", action="store_true")
        if new:
            p.add_argument("--key-id", help="the id its messages name in the dbaas-key-id header")
            p.add_argument("--public-key", type=_public_key, help="register this public key instead of making a pair")
            p.add_argument("--out", type=Path, help="write the new private key here (mode 0600)")

    p = keys.add_parser("list", help="the keys the control plane trusts")
    common(p)
    p.set_defaults(func=cmd_list)
    p = keys.add_parser("add-pop", help="a PoP's key: its status reports are believed for its own services")
    common(p, new=True)
    p.add_argument("pop")
    p.set_defaults(func=cmd_add_pop)
    p = keys.add_parser("add-publisher", help="an outside system that publishes commands")
    common(p, new=True)
    p.add_argument("name")
    p.add_argument("--tenant", action="append", default=[], help="an organization it may act in (repeatable)")
    p.add_argument("--role", action="append", default=[], help="its role there (repeatable)")
    p.set_defaults(func=cmd_add_publisher)
    p = keys.add_parser("revoke", help="stop trusting a key")
    common(p)
    p.add_argument("key_id")
    p.set_defaults(func=cmd_revoke)

