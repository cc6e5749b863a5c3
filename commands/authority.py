"""Who vouches for a command, and the actor `decide` may believe because of it.

A command's `actor` is what its publisher *claims*. The command processor checks the message's
signature against the platform's keyring and hands `decide` a `Proof`: the `Authority` of the key
that signed it, or `Unverified` with the reason. Only then is the actor believed, and only as far
as the key allows:

- `gateway`: the HTTP API, which verified the caller's OIDC token. Its actor (an issuer-bound
  principal and the roles the token grants) stands; it may never claim `system` nor send the
  platform's own `Record*` commands.
- `platform`: the sagas and the backup scheduler. They send only the `Record*` commands and the
  commands a platform process may start (scheduled backups, retention's deletions), as `system`.
- `publisher`: an outside system registered by the platform operator with the organizations it may
  act in and its roles there. Its actor is the publisher itself (`urn:dbaas:publisher#<name>`) with
  the registered roles, whatever the command claims.
- `pop` keys sign status reports on `dbaas.pop.status`, never commands.

Principals are issuer-bound: `<issuer>#<subject>` (an OIDC issuer has no fragment, so the first
`#` splits them), so the same `sub` from two issuers is two different people.
Pure: no I/O. Imports `commands.catalog`, `commands.records`, `commands.validation`.
"""
from __future__ import annotations

from dataclasses import dataclass

from commands.catalog import PERMISSIONS, SYSTEM_ROLE
from commands.records import Actor, CommandEnvelope
from commands.validation import Problem
from events import stores_directly

PUBLISHER_ISSUER = "urn:dbaas:publisher"
PLATFORM_ISSUER = "urn:dbaas:platform"
# Commands only the platform's own processes send (a step of an operation, as `system`).
SYSTEM_COMMANDS = frozenset(t for t, roles in PERMISSIONS.items() if roles == (SYSTEM_ROLE,))
# Commands the platform's processes may send as `system`: those, and the ones users send too that a
# platform process also starts (a scheduled backup, a deletion by retention).
PLATFORM_COMMANDS = frozenset(t for t, roles in PERMISSIONS.items() if SYSTEM_ROLE in roles)
# Rejections that say who may not send a command: they do not take its command id (the rightful
# sender may still use it) and get an operation id of their own.
REFUSALS = ("unauthenticated", "forbidden")


@dataclass(frozen=True)
class Authority:
    """The verified key a command was signed with and what its holder may be."""

    kind: str  # gateway | platform | publisher | pop
    name: str
    tenants: tuple[str, ...] = ()  # publisher: organizations it may act in ("*": any)
    roles: tuple[str, ...] = ()  # publisher: its roles there


@dataclass(frozen=True)
class Unverified:
    """No trusted key signed the command; `reason` says what was wrong."""

    reason: str


Proof = Authority | Unverified
stores_directly(Authority, Unverified)  # one per command judged


def principal(issuer: str, subject: str) -> str:
    """The issuer-bound identity of a subject: `<issuer>#<subject>`."""
    return f"{issuer}#{subject}"


def split_principal(value: str) -> tuple[str | None, str]:
    """(issuer, subject) of a principal; (None, value) for a subject recorded before principals."""
    issuer, sep, subject = value.partition("#")
    return (issuer, subject) if sep and issuer else (None, value)


def publisher_principal(name: str) -> str:
    return principal(PUBLISHER_ISSUER, name)


def believed_actor(proof: Proof, cmd: CommandEnvelope) -> Actor | Problem:
    """The actor `decide` judges `cmd` as, or the refusal (`unauthenticated` / `forbidden`)."""
    system = cmd.command_type in SYSTEM_COMMANDS
    match proof:
        case Unverified(reason=reason):
            return Problem("unauthenticated", None, f"the command's publisher cannot be verified: {reason}")
        case Authority(kind="platform"):
            if cmd.command_type not in PLATFORM_COMMANDS:
                return Problem("forbidden", None, f"the platform key sends only the platform's own commands; "
                               f"{cmd.command_type} must come from a user or a registered publisher")
            return Actor(cmd.actor.subject, (SYSTEM_ROLE,))
        case Authority(kind="gateway"):
            if system or SYSTEM_ROLE in cmd.actor.roles:
                return _reserved(cmd)
            return cmd.actor
        case Authority(kind="publisher", name=name, tenants=tenants, roles=roles):
            if system or SYSTEM_ROLE in cmd.actor.roles:
                return _reserved(cmd)
            if cmd.tenant_id not in tenants and "*" not in tenants:
                allowed = ", ".join(tenants) or "none"
                return Problem("forbidden", None, f'publisher "{name}" may act only in the organizations it is '
                               f'registered for ({allowed}), not in "{cmd.tenant_id}"')
            expected = publisher_principal(name)
            if cmd.actor.subject != expected:
                return Problem("unauthenticated", "actor.subject",
                               f'a command signed by publisher "{name}" names it as its actor: '
                               f'actor.subject must be "{expected}", not "{cmd.actor.subject}"')
            return Actor(expected, tuple(roles))
        case Authority(kind=kind, name=name):
            return Problem("unauthenticated", None, f'key "{name}" is a {kind} key; it cannot sign commands')


def _reserved(cmd: CommandEnvelope) -> Problem:
    return Problem("forbidden", None, f"{cmd.command_type} and the role {SYSTEM_ROLE} are reserved to the "
                   "platform's own processes")
