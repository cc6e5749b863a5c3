"""Stateless checks of a command: who may send it and whether its fields make sense.

Owns the rules and the wording of every rejection that needs no tenant state: each `Problem`
says what is wrong and how to fix it. Reads the offer from `commands.catalog`.
Imports `commands.records`, `commands.catalog` and `events` (for `Resources`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime

from commands.catalog import (
    BACKUP_REPORT_PHASES,
    BACKUP_STEP_CODES,
    CDC_REPORT_PHASES,
    CDC_TABLES_MAX,
    LIMITS,
    ORG_ROLES,
    PERMISSIONS,
    POP_REPORT_PHASES,
    QUOTA_RESOURCE_MAX,
    QUOTA_SERVICES_RANGE,
    RESOURCE_FIELDS,
    RETAIN_COUNT_MAX,
    RETAIN_DAYS_MAX,
    SAGA_STEPS,
    SIZE_PLANS,
)
from commands.records import (
    Actor,
    AddMember,
    BackupService,
    CancelOperation,
    ChangeMemberRole,
    Command,
    CommandError,
    CreateOrganization,
    CreateService,
    CreateSubscription,
    DeleteBackup,
    DeleteService,
    DisableCdc,
    EnableCdc,
    RecordBackupCommitted,
    RecordBackupRendered,
    RecordBackupReport,
    RecordBackupReverted,
    RecordBackupStepFailed,
    RecordCdcCommitted,
    RecordCdcRendered,
    RecordCdcReport,
    RecordCdcStepFailed,
    RecordPopReport,
    RecordServiceClaimCommitted,
    RecordServiceClaimRendered,
    RecordServiceClaimReverted,
    RecordStepFailed,
    RecordStepTimedOut,
    RecordSubscriptionFailed,
    RecordSubscriptionGranted,
    RecordSubscriptionRevoked,
    RemoveMember,
    RestoreService,
    RevokeSubscription,
    ScaleService,
    SetBackupPolicy,
    SetDeletionProtection,
    SetQuota,
)
from events import STEPS, Quota, Resources
from schemas.catalog import DEFAULT_ENGINE_VERSIONS, ENGINES, POP_ENGINES, POPS, SIZES


@dataclass(frozen=True)
class Problem:
    reason_code: str  # one of events.REASON_CODES
    field: str | None
    message: str


DNS_LABEL = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
DNS_LABEL_RULE = (
    "use 1 to 63 characters: lowercase letters, digits and '-', "
    "starting with a letter and ending with a letter or digit"
)
LABEL_PART = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
LABEL_RULE = (
    "use 1 to 63 characters: letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
)
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A sealed secret (runtime.sealing): version, key id, base64url of key, nonce, ciphertext and tag (bounded).
SEALED = re.compile(r"v1\.[a-z0-9-]{1,40}\.[A-Za-z0-9_=-]{80,400}")
DISPLAY_NAME_MAX = 100
SUBJECT_MAX = 255
# A service becomes a Helm release of its name, and Helm refuses release names over 53 characters.
SERVICE_NAME_MAX = 53
# Kubernetes' own limits for labels (key name part and value: 63 characters each, enforced by the
# patterns above); how many a service carries is ours to bound, so a claim stays small.
LABELS_MAX = 32
LABEL_PART_MAX = 63
SHOWN_MAX = 80  # characters of a refused value a message repeats


def authorize(actor: Actor, command_type: str, member_role: str | None = None, tenant: str = "") -> Problem | None:
    """May `actor` send `command_type` to organization `tenant`? Its roles there are the ones the
    command carries (granted by the identity provider for this organization, or a platform
    process's `system`) and its membership role in the organization's state."""
    if not actor.subject.strip():
        return Problem("forbidden", None, "the command has no actor subject; sign in and send it again")
    allowed = PERMISSIONS[command_type]
    if not allowed or member_role in allowed or any(role in allowed for role in actor.roles):
        return None
    held = {*actor.roles, *([member_role] if member_role else [])}
    where = f' in organization "{tenant}"' if tenant else ""
    has = ", ".join(sorted(held)) or "no roles"
    return Problem(
        "forbidden",
        None,
        f'{command_type} needs one of the roles {", ".join(allowed)}; actor "{actor.subject}" has {has}{where}',
    )


def validate(command: Command) -> list[Problem]:
    """Every stateless problem of `command`, in field order; [] = well-formed."""
    match command:
        case CreateOrganization():
            return _collect(_dns_label("slug", command.slug), _display_name(command.display_name))
        case CreateService():
            return [] if _well_formed_creation(command) else _creation_problems(command)
        case ScaleService():
            given = [name for name in RESOURCE_FIELDS if getattr(command, name) is not None]
            return _collect(
                _uuid("service_id", command.service_id),
                _something_to_scale(given),
                *(_in_range(name, getattr(command, name)) for name in given),
            )
        case DeleteService() | SetDeletionProtection():
            return _collect(_uuid("service_id", command.service_id))
        case RecordServiceClaimRendered() | RecordServiceClaimCommitted():
            return _collect(_uuid("service_id", command.service_id), _uuid("operation_id", command.operation_id))
        case RecordPopReport():
            return _collect(
                _uuid("service_id", command.service_id),
                _uuid("operation_id", command.operation_id),
                _choice("phase", command.phase, POP_REPORT_PHASES),
            )
        case CancelOperation():
            return _collect(_uuid("operation_id", command.operation_id))
        case RecordStepTimedOut():
            return _collect(
                _uuid("service_id", command.service_id),
                _uuid("operation_id", command.operation_id),
                _choice("step", command.step, STEPS),
            )
        case RecordStepFailed():
            return _collect(
                _uuid("service_id", command.service_id),
                _uuid("operation_id", command.operation_id),
                _choice("step", command.step, SAGA_STEPS),
            )
        case RecordServiceClaimReverted():
            return _collect(_uuid("service_id", command.service_id), _uuid("operation_id", command.operation_id))
        case BackupService():
            return _collect(_uuid("service_id", command.service_id), _uuid("backup_id", command.backup_id),
                            _slot(command.slot))
        case SetBackupPolicy():
            return _collect(_uuid("service_id", command.service_id), _cron(command.schedule),
                            _whole("retain_count", command.retain_count, RETAIN_COUNT_MAX),
                            _whole("retain_days", command.retain_days, RETAIN_DAYS_MAX))
        case DeleteBackup():
            return _collect(_uuid("backup_id", command.backup_id))
        case RestoreService():
            return _collect(
                _uuid("service_id", command.service_id),
                _service_name(command.name),
                _uuid("source_service_id", command.source_service_id),
                _restore_point(command.backup_id, command.to_time),
                _choice("pop", command.pop, POPS) if command.pop is not None else None,
                _choice("size", command.size, SIZES) if command.size is not None else None,
                *_labels(command.labels),
            )
        case RecordBackupRendered() | RecordBackupCommitted() | RecordBackupReverted():
            return _collect(_uuid("backup_id", command.backup_id), _uuid("operation_id", command.operation_id))
        case RecordBackupReport():
            return _collect(_uuid("backup_id", command.backup_id), _uuid("operation_id", command.operation_id),
                            _choice("phase", command.phase, BACKUP_REPORT_PHASES))
        case RecordBackupStepFailed():
            return _collect(_uuid("backup_id", command.backup_id), _uuid("operation_id", command.operation_id),
                            _choice("step", command.step, STEPS), _choice("code", command.code, BACKUP_STEP_CODES))
        case EnableCdc():
            return _collect(_uuid("service_id", command.service_id), *_cdc_tables(command.tables))
        case DisableCdc():
            return _collect(_uuid("service_id", command.service_id))
        case RecordCdcRendered() | RecordCdcCommitted():
            return _collect(_uuid("service_id", command.service_id), _uuid("operation_id", command.operation_id))
        case RecordCdcReport():
            return _collect(_uuid("service_id", command.service_id), _uuid("operation_id", command.operation_id),
                            _choice("phase", command.phase, CDC_REPORT_PHASES))
        case RecordCdcStepFailed():
            return _collect(_uuid("service_id", command.service_id), _uuid("operation_id", command.operation_id),
                            _choice("step", command.step, STEPS), _choice("code", command.code, BACKUP_STEP_CODES))
        case SetQuota():
            return _quota(command.quota)
        case AddMember() | ChangeMemberRole():
            return _collect(_subject(command.subject), _choice("role", command.role, ORG_ROLES))
        case RemoveMember():
            return _collect(_subject(command.subject))
        case CreateSubscription():
            return _collect(_uuid("subscription_id", command.subscription_id), _dns_label("name", command.name),
                            _sealed(command.sealed_password))
        case RevokeSubscription():
            return _collect(_uuid("subscription_id", command.subscription_id))
        case RecordSubscriptionGranted() | RecordSubscriptionRevoked() | RecordSubscriptionFailed():
            return _collect(_uuid("subscription_id", command.subscription_id),
                            _uuid("operation_id", command.operation_id))
        case _:
            raise CommandError(f"validate does not know {type(command).__name__}")


# A table (collection) a connector captures: `table` or `schema.table`; part of a topic name, so
# what a topic name may hold (lowercase letters, digits, `_`), at most 63 characters per part.
_CDC_TABLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$")


def _cdc_tables(tables: tuple[str, ...] | list[str]) -> list[Problem | None]:
    if len(tables) > CDC_TABLES_MAX:
        return [Problem("invalid", "tables", f"{len(tables)} tables named; name at most {CDC_TABLES_MAX}, or "
                        "none to capture every table")]
    problems: list[Problem | None] = []
    for i, table in enumerate(tables):
        if not isinstance(table, str) or not _CDC_TABLE.match(table):
            problems.append(Problem("invalid", f"tables[{i}]", f"table {_shown(str(table))!r} cannot name a CDC "
                                    "topic: use `table` or `schema.table` in lowercase letters, digits and `_`"))
    if len(set(tables)) != len(tables):
        problems.append(Problem("invalid", "tables", "a table is named twice; name each once"))
    return problems


def resolve_resources(command: CreateService) -> Resources:
    """The size plan with the command's overrides applied."""
    plan = SIZE_PLANS[command.size]
    return Resources(
        cpu=float(command.cpu if command.cpu is not None else plan.cpu),
        memory_gb=command.memory_gb if command.memory_gb is not None else plan.memory_gb,
        storage_gb=command.storage_gb if command.storage_gb is not None else plan.storage_gb,
        replicas=command.replicas if command.replicas is not None else plan.replicas,
    )


def resolve_engine_version(command: CreateService) -> str:
    return (
        command.engine_version
        if command.engine_version is not None
        else DEFAULT_ENGINE_VERSIONS[command.engine]
    )


def _subject(value: str) -> Problem | None:
    if value.strip() and value == value.strip() and len(value) <= SUBJECT_MAX and value.isprintable():
        return None
    return Problem("invalid", "subject", f"subject {_shown(value)!r} is not a user's subject: give the identity "
                   f"provider's `sub` of the user, 1 to {SUBJECT_MAX} printable characters without "
                   "leading or trailing spaces")


def _quota(quota: Quota) -> list[Problem]:
    low, high = QUOTA_SERVICES_RANGE
    problems = []
    if not low <= quota.max_services <= high:
        problems.append(Problem("invalid", "quota.max_services",
                                f"max_services {quota.max_services} is out of range; choose {low} to {high}"))
    limits = [("quota.total", quota.total)]
    for scope, named, offered in (("engines", quota.engines, ENGINES), ("pops", quota.pops, POPS)):
        for key, limit in named.items():
            if key not in offered:
                problems.append(Problem("invalid", f"quota.{scope}",
                                        f'{scope} has "{_shown(key)}", which is not offered; choose from: {", ".join(offered)}'))
            limits.append((f"quota.{scope}.{_shown(key)}", limit))
    for where, limit in limits:
        for name in ("cpu", "memory_gb", "storage_gb"):
            value = getattr(limit, name)
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(_not_finite(f"{where}.{name}", value, f"0 to {QUOTA_RESOURCE_MAX}"))
            elif not (isinstance(value, (int, float)) and 0 <= value <= QUOTA_RESOURCE_MAX):
                problems.append(Problem("invalid", f"{where}.{name}",
                                        f"{where}.{name} {value} is out of range; choose 0 to {QUOTA_RESOURCE_MAX}"))
    return problems


def _slot(value: str | None) -> Problem | None:
    if value is None:
        return None
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return Problem("invalid", "slot", f"slot {_shown(value)!r} is not an RFC 3339 time")
    return None


def _cron(value: str | None) -> Problem | None:
    """A five-field cron expression (UTC), or None for no schedule."""
    if value is None:
        return None
    from croniter import croniter

    if len(value.split()) == 5 and value.isprintable() and croniter.is_valid(value):
        return None
    return Problem("invalid", "schedule", f"schedule {_shown(value)!r} is not a five-field cron expression "
                   "(minute hour day-of-month month day-of-week, UTC), e.g. \"0 3 * * *\" for 03:00 daily")


def _whole(field: str, value: int, high: int) -> Problem | None:
    if isinstance(value, int) and 0 <= value <= high:
        return None
    return Problem("invalid", field, f"{field} {value!r} is out of range; choose 0 (no limit) to {high}")


def _restore_point(backup_id: str | None, to_time: datetime | None) -> Problem | None:
    if (backup_id is None) == (to_time is None):
        return Problem("invalid", "backup_id", "give exactly one of backup_id (restore that backup) or to_time "
                       "(restore to that point in time)")
    if backup_id is not None:
        return _uuid("backup_id", backup_id)
    return None


def _creation_problems(command: CreateService) -> list[Problem]:
    return _collect(
        _uuid("service_id", command.service_id),
        _service_name(command.name),
        _choice("engine", command.engine, ENGINES),
        _engine_version(command),
        _choice("pop", command.pop, POPS),
        engine_in_pop(command.engine, command.pop),
        _choice("size", command.size, SIZES),
        *(_in_range(name, getattr(command, name)) for name in RESOURCE_FIELDS),
        *_labels(command.labels),
    )


def _well_formed_creation(c: CreateService) -> bool:
    """Whether `_creation_problems` finds nothing in `c`, for a creation without labels (False for
    one with labels): the same checks at once, without a Problem considered per field (tested to
    agree). False sends it through those checks, which say what is wrong."""
    if c.labels or (c.engine_version is not None and VERSION.fullmatch(c.engine_version) is None):
        return False
    for name in RESOURCE_FIELDS:
        value = getattr(c, name)
        if value is not None:
            low, high = LIMITS[name]
            if not low <= value <= high:
                return False
    return (c.pop in POPS and c.engine in ENGINES and c.engine in POP_ENGINES[c.pop] and c.size in SIZES
            and len(c.name) <= SERVICE_NAME_MAX and DNS_LABEL.fullmatch(c.name) is not None
            and _CANONICAL_UUID.fullmatch(c.service_id) is not None)


def _collect(*problems: Problem | None) -> list[Problem]:
    return [p for p in problems if p is not None]


def _something_to_scale(given: list[str]) -> Problem | None:
    if given:
        return None
    return Problem("invalid", None, f"nothing to scale: give at least one of {', '.join(RESOURCE_FIELDS)}")


def _sealed(value: str) -> Problem | None:
    """A sealed password (`runtime.sealing`: `v1.<key id>.<base64url>`); never a password in clear."""
    if SEALED.fullmatch(value):
        return None
    return Problem("invalid", "sealed_password", "sealed_password is not a password sealed to the subscription "
                   "saga's key (v1.<key id>.<data>): send what the gateway or `runtime.sealing.seal` makes, "
                   "never the password itself")


def _dns_label(field: str, value: str) -> Problem | None:
    if DNS_LABEL.fullmatch(value):
        return None
    return Problem("invalid", field, f'{field} "{_shown(value)}" is not a valid name: {DNS_LABEL_RULE}')


def _service_name(value: str) -> Problem | None:
    if problem := _dns_label("name", value):
        return problem
    if len(value) <= SERVICE_NAME_MAX:
        return None
    return Problem("invalid", "name", f"name has {len(value)} characters; use at most {SERVICE_NAME_MAX} "
                   "(a service is deployed as a Helm release of that name)")


def _shown(value: str) -> str:
    """`value` as a message may repeat it: control characters escaped (a NUL would make the
    rejection itself unstorable in PostgreSQL) and cut to `SHOWN_MAX` characters."""
    if len(value) <= SHOWN_MAX and value.isprintable():
        return value
    cut = value[:SHOWN_MAX]
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in cut)
    return shown + (f"… ({len(value)} characters)" if len(value) > SHOWN_MAX else "")


def _display_name(value: str) -> Problem | None:
    if not value.strip():
        return Problem(
            "invalid", "display_name", "display_name is blank; give the organization a name people read"
        )
    if len(value) > DISPLAY_NAME_MAX:
        return Problem(
            "invalid",
            "display_name",
            f"display_name has {len(value)} characters; use at most {DISPLAY_NAME_MAX}",
        )
    if not value.isprintable():
        return Problem("invalid", "display_name",
                       f'display_name "{_shown(value)}" holds control characters (such as NUL, tab or '
                       "a line break); use printable characters only")
    return None


# What `str(uuid.UUID(value)) == value` accepts (the canonical form), without building a UUID.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _uuid(field: str, value: str) -> Problem | None:
    if _CANONICAL_UUID.fullmatch(value):
        return None
    return Problem(
        "invalid",
        field,
        f'{field} "{_shown(value)}" is not a UUID in canonical form '
        "(8-4-4-4-12 lowercase hex digits); the publisher generates it",
    )


def _choice(field: str, value: str, allowed: tuple[str, ...]) -> Problem | None:
    if value in allowed:
        return None
    return Problem("invalid", field, f'{field} "{_shown(value)}" is not offered; choose one of: {", ".join(allowed)}')


def engine_in_pop(engine: str, pop: str) -> Problem | None:
    if engine not in ENGINES or pop not in POPS or engine in POP_ENGINES[pop]:
        return None
    offering = [p for p, engines in POP_ENGINES.items() if engine in engines]
    return Problem(
        "unsupported",
        "pop",
        f'engine "{engine}" is not offered in pop "{pop}"; pops that offer {engine}: {", ".join(offering)}',
    )


def _engine_version(command: CreateService) -> Problem | None:
    if command.engine_version is None or VERSION.fullmatch(command.engine_version):
        return None
    default = DEFAULT_ENGINE_VERSIONS.get(command.engine)
    hint = f" (default for {command.engine}: {default})" if default else ""
    return Problem(
        "invalid",
        "engine_version",
        f'engine_version "{_shown(command.engine_version)}" is not a version: use up to 64 letters, '
        f"digits, '.', '_' and '-', starting with a letter or digit, or leave it null for the "
        f"default{hint}",
    )


def _in_range(field: str, value: float | None) -> Problem | None:
    low, high = LIMITS[field]
    if value is None or low <= value <= high:
        return None
    bounds = f"from {format_number(low)} to {format_number(high)}"
    if isinstance(value, float) and not math.isfinite(value):
        return _not_finite(field, value, bounds)
    return Problem(
        "invalid", field, f"{field} {format_number(value)} is out of range; choose a value {bounds}"
    )


def _not_finite(field: str, value: float, bounds: str) -> Problem:
    what = "not a number (NaN)" if math.isnan(value) else "infinite"
    return Problem("invalid", field, f"{field} is {what}; give a finite number {bounds}")


def format_number(value: float) -> str:
    """2.0 -> '2', 0.5 -> '0.5': numbers as people write them."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _labels(labels: dict[str, str]) -> list[Problem]:
    if len(labels) > LABELS_MAX:
        return [Problem("invalid", "labels", f"a service has {len(labels)} labels; give at most {LABELS_MAX}")]
    problems = []
    for key, value in labels.items():
        if not LABEL_PART.fullmatch(key):
            problems.append(Problem("invalid", "labels", f'label key "{_shown(key)}" is not valid: '
                                    f"{_label_length(key)}{LABEL_RULE}"))
        if value and not LABEL_PART.fullmatch(value):
            problems.append(
                Problem(
                    "invalid",
                    "labels",
                    f'label "{_shown(key)}" has value "{_shown(value)}", which is not valid: '
                    f"{_label_length(value)}{LABEL_RULE}, or empty",
                )
            )
    return problems


def _label_length(part: str) -> str:
    return f"it has {len(part)} characters; " if len(part) > LABEL_PART_MAX else ""
