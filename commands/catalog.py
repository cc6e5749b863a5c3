"""What the platform offers and who may ask for it, as data: engines, PoPs, size plans, limits, roles.

Owns the tables that validation and `decide` read; change the offer here, not in code.
Engines, PoPs and sizes are named in `schemas.catalog`; this module adds what they cost and who
may ask. Imports `events` (for `Resources`) and `schemas.catalog`.
"""

from __future__ import annotations

from events import Quota, ResourceLimit, Resources
from schemas.catalog import ENGINES, SIZES

SIZE_PLANS = dict(zip(SIZES, (
    Resources(cpu=1.0, memory_gb=2, storage_gb=10, replicas=1),
    Resources(cpu=2.0, memory_gb=8, storage_gb=100, replicas=3),
    Resources(cpu=4.0, memory_gb=16, storage_gb=500, replicas=3),
), strict=True))

# Resource field -> inclusive (min, max).
LIMITS: dict[str, tuple[float, float]] = {
    "cpu": (0.5, 64),
    "memory_gb": (1, 512),
    "storage_gb": (1, 16384),
    "replicas": (1, 9),
}
RESOURCE_FIELDS = tuple(LIMITS)

# Every organization starts with this quota; its org-owner replaces it with SetQuota. Usage counts
# each live service's cpu, memory and storage times its replicas (a service whose creation failed
# counts nothing); engines and PoPs without their own limit are bounded by the total only.
DEFAULT_QUOTA = Quota(max_services=25, total=ResourceLimit(cpu=64.0, memory_gb=256, storage_gb=10240))
QUOTA_SERVICES_RANGE = (0, 10000)
QUOTA_RESOURCE_MAX = 1_000_000

# A command is a few hundred bytes; a request body or an encoded command over this is a mistake or
# an attack: the gateway answers 413, the command processor dead-letters it (`oversized`).
MAX_COMMAND_BYTES = 64 * 1024

# The roles a member of an organization holds (one per member). What each may do is below (commands)
# and in `READ_PERMISSIONS` (the gateway's reads).
ORG_ROLES = ("org-owner", "org-admin", "org-member", "service-admin", "service-viewer")
MEMBER_ADMIN_ROLES = ("org-owner", "org-admin")
SUBSCRIPTION_ADMIN_ROLES = ("org-owner", "org-admin")  # who creates and revokes tenant subscriptions
SERVICE_ROLES = ("org-owner", "org-admin", "service-admin")
# Read -> roles of which the caller needs one in the organization.
READ_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "organization": ORG_ROLES,
    "services": ORG_ROLES,
    "operations": ORG_ROLES,
    "credentials": SERVICE_ROLES,
    "members": ORG_ROLES,
    "quotas": ("org-owner", "org-admin"),
    "audit": ("org-owner", "org-admin"),
    "backups": ORG_ROLES,
    "metrics": ORG_ROLES,
    "alerts": ORG_ROLES,
    "subscriptions": ORG_ROLES,
}
SYSTEM_ROLE = "system"
ANY_SUBJECT: tuple[str, ...] = ()

# Command type -> roles of which the actor needs one; ANY_SUBJECT = any signed-in subject.
PERMISSIONS: dict[str, tuple[str, ...]] = {
    "CreateOrganization": ANY_SUBJECT,
    "CreateService": SERVICE_ROLES,
    "ScaleService": SERVICE_ROLES,
    "DeleteService": SERVICE_ROLES,
    "SetDeletionProtection": SERVICE_ROLES,
    "CancelOperation": SERVICE_ROLES,
    "SetQuota": ("org-owner",),
    "AddMember": MEMBER_ADMIN_ROLES,
    "ChangeMemberRole": MEMBER_ADMIN_ROLES,
    "RemoveMember": MEMBER_ADMIN_ROLES,
    # the scheduler (a platform process) starts scheduled backups and deletes expired ones
    "BackupService": (*SERVICE_ROLES, SYSTEM_ROLE),
    "SetBackupPolicy": SERVICE_ROLES,
    "DeleteBackup": (*SERVICE_ROLES, SYSTEM_ROLE),
    "RestoreService": SERVICE_ROLES,
    # Reports of the platform's own processes (sagas, PoP status bridge): never a tenant's.
    "RecordServiceClaimRendered": (SYSTEM_ROLE,),
    "RecordServiceClaimCommitted": (SYSTEM_ROLE,),
    "RecordPopReport": (SYSTEM_ROLE,),
    "RecordStepTimedOut": (SYSTEM_ROLE,),
    "RecordStepFailed": (SYSTEM_ROLE,),
    "RecordServiceClaimReverted": (SYSTEM_ROLE,),
    "RecordBackupRendered": (SYSTEM_ROLE,),
    "RecordBackupCommitted": (SYSTEM_ROLE,),
    "RecordBackupReport": (SYSTEM_ROLE,),
    "RecordBackupStepFailed": (SYSTEM_ROLE,),
    "RecordBackupReverted": (SYSTEM_ROLE,),
    # change data capture: the service's admins (its connector reads every row of the service)
    "EnableCdc": SERVICE_ROLES,
    "DisableCdc": SERVICE_ROLES,
    "RecordCdcRendered": (SYSTEM_ROLE,),
    "RecordCdcCommitted": (SYSTEM_ROLE,),
    "RecordCdcReport": (SYSTEM_ROLE,),
    "RecordCdcStepFailed": (SYSTEM_ROLE,),
    # tenant subscriptions to the organization's streams (Kafka credentials): its administrators
    "CreateSubscription": SUBSCRIPTION_ADMIN_ROLES,
    "RevokeSubscription": SUBSCRIPTION_ADMIN_ROLES,
    "RecordSubscriptionGranted": (SYSTEM_ROLE,),
    "RecordSubscriptionRevoked": (SYSTEM_ROLE,),
    "RecordSubscriptionFailed": (SYSTEM_ROLE,),
}

# Command type -> steps its operation has after acceptance (0 = done once accepted).
# Provisioning, scaling, deletion: render the ServiceClaim, commit it to GitOps, see the PoP report.
OPERATION_STEPS = {
    "CreateOrganization": 0,
    "CreateService": 3,
    "ScaleService": 3,
    "DeleteService": 3,
    "SetDeletionProtection": 3,
    "CancelOperation": 0,
    "SetQuota": 0,
    "AddMember": 0,
    "ChangeMemberRole": 0,
    "RemoveMember": 0,
    # Backups and their deletion: render the DatabaseBackup claim, commit it (or its removal), see
    # the PoP report. A restore is a creation. A policy holds once accepted.
    "BackupService": 3,
    "DeleteBackup": 3,
    "RestoreService": 3,
    "SetBackupPolicy": 0,
    # CDC on and off: render the KafkaConnector, commit it (or its removal), see the PoP report.
    "EnableCdc": 3,
    "DisableCdc": 3,
    # the subscription saga grants (or revokes) the credential and ACLs on the broker
    "CreateSubscription": 1,
    "RevokeSubscription": 1,
}

# Commands that report a step of an operation already running: they start no operation of their own.
STEP_REPORTS = ("RecordServiceClaimRendered", "RecordServiceClaimCommitted", "RecordPopReport",
                "RecordStepTimedOut", "RecordStepFailed", "RecordServiceClaimReverted",
                "RecordBackupRendered", "RecordBackupCommitted", "RecordBackupReport", "RecordBackupStepFailed",
                "RecordBackupReverted", "RecordCdcRendered", "RecordCdcCommitted", "RecordCdcReport",
                "RecordCdcStepFailed", "RecordSubscriptionGranted", "RecordSubscriptionRevoked",
                "RecordSubscriptionFailed")
# The steps the saga itself carries out, so the ones it can report as failed (the PoP's report is
# the PoP's to fail).
SAGA_STEPS = ("render", "commit")
POP_REPORT_PHASES = ("Ready", "Failed", "Deleted")
BACKUP_REPORT_PHASES = ("Completed", "Failed", "Deleted")
BACKUP_STEP_CODES = ("failed", "timed_out")
CDC_REPORT_PHASES = ("Running", "Failed", "Removed")
# Engines with a Debezium source connector, and the local servers that stand in for them in PoP
# local (yugabyte: PostgreSQL's pgoutput; vitess: MariaDB's binlog). DragonflyDB and Aerospike have
# none: CDC on them is refused as unsupported rather than imitated.
CDC_ENGINES = ("yugabyte", "vitess", "scylla", "mongodb")
CDC_TABLES_MAX = 100

# Engines whose log is archived, so that a service restores to any time of its recovery window
# (PostgreSQL WAL for yugabyte, binlog for vitess); the others restore backup instants only.
PITR_ENGINES = ("yugabyte", "vitess")
# Retention bounds of a backup policy (0 = no limit of that kind).
RETAIN_COUNT_MAX = 1000
RETAIN_DAYS_MAX = 3650


def subscription_principal(tenant: str, name: str) -> str:
    """The Kafka user of subscription `name` of organization `tenant`: slugs and names are DNS
    labels (no dots), so the dots make it unique per (tenant, name)."""
    return f"sub.{tenant}.{name}"


def subscription_group_prefix(tenant: str, name: str) -> str:
    """The consumer groups the subscription may use start with this (its principal and a dot, so
    no other subscription's groups share it)."""
    return f"{subscription_principal(tenant, name)}."


# What a subscription reads: its organization's topics of these patterns (literal names) and its
# change data capture topics, one prefix per engine (`dbaas.cdc.<engine>.<tenant>.`).
SUBSCRIPTION_TENANT_TOPICS = ("dbaas.audit.{tenant}", "dbaas.alerts.{tenant}", "dbaas.metrics.{tenant}")
SUBSCRIPTION_SEAL_KEY_ID = "subscriptions"  # the subscription saga's sealing key


def subscription_cdc_prefixes(tenant: str) -> list[str]:
    """One topic prefix per engine's CDC pattern; the trailing dot keeps `acme` off `acme-2`'s topics."""
    return [f"dbaas.cdc.{engine}.{tenant}." for engine in ENGINES]


def subscription_topics(tenant: str) -> list[str]:
    """The topics (and, with `*`, topic prefixes) a subscription of `tenant` may read."""
    return [*(pattern.format(tenant=tenant) for pattern in SUBSCRIPTION_TENANT_TOPICS),
            *(f"{prefix}*" for prefix in subscription_cdc_prefixes(tenant))]


def subscription_seal_context(subscription_id: str) -> bytes:
    """What a subscription's sealed password is bound to: its own id, so it opens for no other."""
    return f"dbaas.subscription\0{subscription_id}".encode()

