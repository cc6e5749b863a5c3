"""The ids `decide` derives (events, operations, rejections of a reused or refused command) are the
RFC 4122 version-5 UUIDs they always were: ids already in the event log must keep matching."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from commands import event_id, operation_id, refused_operation_id, reuse_operation_id
from commands.decide import (
    EVENT_ID_NAMESPACE,
    OPERATION_NAMESPACE,
    REFUSED_NAMESPACE,
    REUSE_NAMESPACE,
)


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text(), st.text(), st.integers(min_value=1, max_value=2**40))
def test_derived_ids_are_uuid5_of_their_names(tenant, command_id, text, sequence):
    assert event_id(tenant, "service", text, sequence) == str(
        uuid.uuid5(EVENT_ID_NAMESPACE, f"{tenant}/service/{text}/{sequence}"))
    assert operation_id(tenant, command_id) == str(uuid.uuid5(OPERATION_NAMESPACE, f"{tenant}/{command_id}"))
    assert reuse_operation_id(command_id, text) == str(uuid.uuid5(REUSE_NAMESPACE, f"{command_id}/{text}"))
    assert refused_operation_id(tenant, command_id, text) == str(
        uuid.uuid5(REFUSED_NAMESPACE, f"{tenant}/{command_id}/{text}"))


def test_a_known_operation_id_stays_the_same():
    assert operation_id("acme", "c1") == str(uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, "urn:dbaas:operation"),
                                                       "acme/c1"))
