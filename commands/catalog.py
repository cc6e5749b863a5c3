"""What the platform offers and who may ask for it, as data: engines, PoPs, size plans, limits, roles.

Owns the tables that validation and `decide` read; change the offer here, not in code.
Engines, PoPs and sizes are named in `schemas.catalog`; this module adds what they cost and who
may ask. Imports `events` (for `Resources`) and `schemas.catalog`.
"""

from __future__ import annotations

from events import Quota, ResourceLimit, Resources
from schemas.catalog import SIZES

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
}

# Commands that report a step of an operation already running: they start no operation of their own.
STEP_REPORTS = ("RecordServiceClaimRendered", "RecordServiceClaimCommitted", "RecordPopReport",
                "RecordStepTimedOut", "RecordStepFailed", "RecordServiceClaimReverted",
                "RecordBackupRendered", "RecordBackupCommitted", "RecordBackupReport", "RecordBackupStepFailed",
                "RecordBackupReverted")
# The steps the saga itself carries out, so the ones it can report as failed (the PoP's report is
# the PoP's to fail).
SAGA_STEPS = ("render", "commit")
POP_REPORT_PHASES = ("Ready", "Failed", "Deleted")
BACKUP_REPORT_PHASES = ("Completed", "Failed", "Deleted")
BACKUP_STEP_CODES = ("failed", "timed_out")

# Engines whose log is archived, so that a service restores to any time of its recovery window
# (PostgreSQL WAL for yugabyte, binlog for vitess); the others restore backup instants only.
PITR_ENGINES = ("yugabyte", "vitess")
# Retention bounds of a backup policy (0 = no limit of that kind).
RETAIN_COUNT_MAX = 1000
RETAIN_DAYS_MAX = 3650
