"""Who may do what on the platform's broker: its principals, their ACLs, and the broker's own
security settings (SASL/SCRAM-SHA-512 for clients, the KRaft `StandardAuthorizer`).

Every platform process authenticates as a principal of its own (`dbaas-<process>`), whose SCRAM
password is generated per instance into `secrets.json` (`kafka_password_<process>`) and handed
only to that process. The ACL table below grants each exactly the topics, consumer groups and
transactional ids it uses (prefixes where a family of names is its own); nothing is allowed
where no ACL says so. Two principals are super users: `dbaas-admin` (the launcher, `dbaas topics`,
the test suite and the benchmarks) and `controller` (the broker's own connection to its KRaft
controller, SASL/PLAIN on the loopback controller listener: SCRAM credentials live in the
metadata the controller serves, so the controller cannot check them).

`up` makes the broker match the table: missing SCRAM credentials are created and the table's
ACLs added (both idempotent). ACLs of principals the table does not name (tenants' subscriptions)
are never touched here.
"""
from __future__ import annotations

from dataclasses import dataclass

ADMIN = "dbaas-admin"
CONTROLLER = "controller"
SCRAM_ITERATIONS = 8192
MECHANISM = "SCRAM-SHA-512"

COMMANDS, EVENTS = "dbaas.commands", "dbaas.events"
COMMANDS_DLQ, EVENTS_DLQ = "dbaas.commands.dlq", "dbaas.events.dlq"
POP_STATUS, POP_STATUS_DLQ = "dbaas.pop.status", "dbaas.pop.status.dlq"
AUDIT, METRICS, ALERTS, CDC = "dbaas.audit.", "dbaas.metrics.", "dbaas.alerts.", "dbaas.cdc."
CDC_HISTORY = "dbaas.cdc-history."  # a MariaDB connector's schema history (`gitops.cdc.schema_history_topic`)
KUBERNETES_POPS = ("lagos", "johannesburg", "frankfurt", "ashburn", "singapore")  # schemas.catalog's


@dataclass(frozen=True)
class Grant:
    """Operations allowed on a resource: `kind` topic | group | transactional_id | cluster;
    `prefixed` matches every name starting with `name`."""

    kind: str
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False


def topic(name: str, *ops: str) -> Grant:
    return Grant("topic", name, ops)


def topics(prefix: str, *ops: str) -> Grant:
    return Grant("topic", prefix, ops, prefixed=True)


def groups(prefix: str) -> Grant:
    return Grant("group", prefix, ("READ",), prefixed=True)


def transactional_ids(prefix: str) -> Grant:
    return Grant("transactional_id", prefix, ("WRITE",), prefixed=True)


# READ and WRITE imply DESCRIBE; creating a topic from a pattern needs CREATE, and comparing it
# with the topic spec DESCRIBE_CONFIGS.
CREATES = ("WRITE", "CREATE", "DESCRIBE_CONFIGS")

# process name (the launcher's component) -> what its principal may do
PLATFORM_ACLS: dict[str, tuple[Grant, ...]] = {
    # signs users' commands; reads the log for time travel and the tenants' audit topics
    "api": (topic(COMMANDS, "WRITE"), topic(EVENTS, "READ"), topics(AUDIT, "READ"),
            groups("dbaas-time-travel"), groups("dbaas-audit-reader")),
    # the only writer of the event log
    "command-processor": (topic(COMMANDS, "READ"), topic(EVENTS, "READ", "WRITE"), topic(COMMANDS_DLQ, "WRITE"),
                          groups("dbaas-command-processor"), transactional_ids("dbaas-command-processor")),
    "projector": (topic(EVENTS, "READ"), topic(EVENTS_DLQ, "WRITE"), topics(METRICS, "READ"),
                  topics(ALERTS, "READ"), groups("dbaas-projections"), groups("dbaas-telemetry")),
    # system commands (the platform key) from events and PoP reports
    "saga": (topic(EVENTS, "READ"), topic(POP_STATUS, "READ"), topic(COMMANDS, "WRITE"), topic(EVENTS_DLQ, "WRITE"),
             topic(POP_STATUS_DLQ, "WRITE"), groups("dbaas-service-saga")),
    "audit": (topic(EVENTS, "READ"), topic(EVENTS_DLQ, "WRITE"), topics(AUDIT, *CREATES), groups("dbaas-audit"),
              transactional_ids("dbaas-audit")),
    # its MariaDB connectors' schema history clients run in Connect as the agent (it gives them its
    # credentials when it registers them), and it deletes the history with the connector
    "localpop-agent": (topic(POP_STATUS, "WRITE"), topics(METRICS, *CREATES),
                       topics(CDC_HISTORY, "READ", "DELETE", *CREATES), groups("cdc-")),
    "scheduler": (topic(EVENTS, "READ"), topic(COMMANDS, "WRITE"), topics(ALERTS, *CREATES),
                  groups("dbaas-backup-scheduler")),
    # Faust: its internal topics (changelogs, facts, assignor) are named after its application id
    "alerts": (topic(EVENTS, "READ"), topics(METRICS, "READ"), topics(ALERTS, *CREATES),
               topics("dbaas-alerts", "READ", *CREATES), groups("dbaas-alerts"), transactional_ids("dbaas-alerts")),
    # Kafka Connect: its internal topics and group, and the change data capture topics it writes
    "connect": (topics("dbaas.connect.", "READ", *CREATES), topics(CDC, *CREATES), groups("dbaas-connect"),
                Grant("cluster", "kafka-cluster", ("DESCRIBE",))),
    # tenant subscriptions: the only process that changes credentials and ACLs (ALTER on the
    # cluster: AlterUserScramCredentials, CreateAcls, DeleteAcls), from the log's events
    "subscriptions": (topic(EVENTS, "READ"), topic(COMMANDS, "WRITE"), groups("dbaas-subscriptions"),
                      Grant("cluster", "kafka-cluster", ("ALTER", "DESCRIBE"))),
    # each Kubernetes PoP's operator reports on dbaas.pop.status as its PoP (locally: `--kube-pop`)
    **{f"pop-{pop}": (topic(POP_STATUS, "WRITE"),) for pop in KUBERNETES_POPS},
}


def principal(process: str) -> str:
    """The Kafka user name of platform process `process`."""
    return ADMIN if process == "admin" else f"dbaas-{process}"


def secret_name(process: str) -> str:
    return f"kafka_password_{process}"


# every SCRAM password the instance generates (the admin's and each process's) and the controller's
SECRET_NAMES = (secret_name("admin"), *(secret_name(p) for p in PLATFORM_ACLS), "kafka_controller_password")


def acl_bindings(user: str, grants: tuple[Grant, ...]) -> list:
    """`grants` of Kafka user `user` as confluent-kafka `AclBinding`s (ALLOW, any host)."""
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    kinds = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP, "cluster": ResourceType.BROKER,
             "transactional_id": ResourceType.TRANSACTIONAL_ID}
    return [AclBinding(kinds[g.kind], g.name,
                       ResourcePatternType.PREFIXED if g.prefixed else ResourcePatternType.LITERAL,
                       f"User:{user}", "*", AclOperation[op], AclPermissionType.ALLOW)
            for g in grants for op in g.operations]


def server_properties(admin_password: str, controller_password: str) -> str:
    """The broker's security settings (appended to its server.properties)."""
    scram = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" '
             f'password="{admin_password}";')
    plain = (f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{CONTROLLER}" '
             f'password="{controller_password}" user_{CONTROLLER}="{controller_password}";')
    return f"""\
sasl.enabled.mechanisms={MECHANISM}
sasl.mechanism.inter.broker.protocol={MECHANISM}
sasl.mechanism.controller.protocol=PLAIN
listener.name.client.sasl.enabled.mechanisms={MECHANISM}
listener.name.client.scram-sha-512.sasl.jaas.config={scram}
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config={plain}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:{ADMIN};User:{CONTROLLER}
allow.everyone.if.no.acl.found=false
"""


def apply(admin, passwords: dict[str, str], timeout: float = 30.0, acls: bool = True) -> tuple[list[str], int]:
    """Create the SCRAM credentials the broker lacks (`passwords`: Kafka user -> password) and add
    the platform's ACLs (unless not `acls`). Returns the users created and the number of ACL bindings."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    try:
        described = admin.describe_user_scram_credentials(request_timeout=timeout).result()
        have = set(described)
    except KafkaException:
        have = set()
    missing = [u for u in passwords if u not in have]
    if missing:
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
        futures = admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(u, info, passwords[u].encode()) for u in missing], request_timeout=timeout)
        for fut in futures.values():
            fut.result()
    if not acls:
        return missing, 0
    bindings = [b for process, grants in PLATFORM_ACLS.items() for b in acl_bindings(principal(process), grants)]
    for fut in admin.create_acls(bindings, request_timeout=timeout).values():
        fut.result()
    return missing, len(bindings)
