"""The Kafka Admin API side of tenant subscriptions: create a subscription's SCRAM credential and
ACLs, and take both away (`processors.sagas.subscription` says which ACLs).

Every call is safe to repeat: upserting a credential with the same password changes nothing a
client notices, creating an existing ACL binding is a no-op, deleting what is gone deletes
nothing. Revocation deletes the ACLs first, then the credential: a client already connected is
refused from its next request (the authorizer reads the ACLs per request), and cannot
authenticate again.

Imports confluent-kafka and `processors.sagas.subscription` only.
"""
from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from processors.sagas.subscription import TenantGrant

SCRAM_ITERATIONS = 8192
_KINDS = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}


class AccessError(Exception):
    """The broker refused or did not answer an access change."""


def bindings(user: str, grants: list[TenantGrant]) -> list[AclBinding]:
    return [AclBinding(_KINDS[g.kind], g.name, ResourcePatternType.PREFIXED if g.prefixed else ResourcePatternType.LITERAL,
                       f"User:{user}", "*", AclOperation[op], AclPermissionType.ALLOW)
            for g in grants for op in g.operations]


class KafkaTenantAccess:
    """`admin` is an AdminClient of a principal allowed ALTER and DESCRIBE on the cluster."""

    def __init__(self, admin: AdminClient, timeout: float = 30.0):
        self.admin = admin
        self.timeout = timeout

    def grant(self, user: str, password: bytes, grants: list[TenantGrant]) -> None:
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
        self._wait(self.admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(user, info, password)], request_timeout=self.timeout))
        self._wait(self.admin.create_acls(bindings(user, grants), request_timeout=self.timeout))

    def revoke(self, user: str) -> None:
        everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{user}", None,
                                      AclOperation.ANY, AclPermissionType.ANY)
        self._wait(self.admin.delete_acls([everything], request_timeout=self.timeout))
        futures = self.admin.alter_user_scram_credentials(
            [UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)], request_timeout=self.timeout)
        for fut in futures.values():
            try:
                fut.result()
            except KafkaException as exc:  # already gone: revoked before
                if exc.args[0].code() != KafkaError.RESOURCE_NOT_FOUND:
                    raise AccessError(f"the credential of {user} was not deleted: {exc}") from exc

    def acls(self, user: str) -> list[AclBinding]:
        mine = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{user}", None,
                                AclOperation.ANY, AclPermissionType.ANY)
        return list(self.admin.describe_acls(mine, request_timeout=self.timeout).result())

    def _wait(self, futures) -> None:
        for fut in futures.values():
            try:
                fut.result()
            except KafkaException as exc:
                raise AccessError(str(exc)) from exc
