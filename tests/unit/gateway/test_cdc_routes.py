"""The CDC routes over an in-memory read port and a fake publisher: who may enable and disable a
service's change stream (roles, 404 for strangers), the commands they publish, and validation
(422 for a table that cannot name a topic, nothing published)."""
from __future__ import annotations

import pytest

from commands import DisableCdc, EnableCdc
from tests.unit.gateway.test_access import as_
from tests.unit.gateway.test_backups import ORDERS, api, reads  # noqa: F401  (the fixtures)

ACCESS = [
    # (reason, caller, method, path, body, status, text)
    ("a service-admin enables it", "sam", "POST", f"/services/{ORDERS}/cdc", {"tables": ["orders"]}, 202,
     "operation_id"),
    ("every table without a body", "olivia", "POST", f"/services/{ORDERS}/cdc", None, 202, "operation_id"),
    ("a service-viewer may not", "vera", "POST", f"/services/{ORDERS}/cdc", {}, 403,
     "EnableCdc needs one of the roles org-owner, org-admin, service-admin"),
    ("another organization's service does not exist for the caller", "gus", "POST",
     f"/services/{ORDERS}/cdc", {}, 404, f"no service {ORDERS}"),
    ("a table that cannot name a topic", "sam", "POST", f"/services/{ORDERS}/cdc", {"tables": ["Or ders"]}, 422,
     "cannot name a CDC topic"),
    ("a service-admin disables it", "sam", "DELETE", f"/services/{ORDERS}/cdc", None, 202, "operation_id"),
    ("a service-viewer may not disable it", "vera", "DELETE", f"/services/{ORDERS}/cdc", None, 403, "DisableCdc"),
]


@pytest.mark.parametrize("reason, caller, method, path, body, status, text", ACCESS, ids=[a[0] for a in ACCESS])
def test_cdc_routes_are_decided_by_roles(api, reason, caller, method, path, body, status, text):  # noqa: F811
    answer = api.request(method, f"/api/v1{path}", headers=as_(caller), json=body)

    assert answer.status_code == status, (reason, answer.text)
    assert text in answer.text, reason
    if status != 202:
        assert api.publisher.published == [], reason


def test_enabling_and_disabling_publish_their_commands(api):  # noqa: F811
    api.post(f"/api/v1/services/{ORDERS}/cdc", headers=as_("sam"), json={"tables": ["orders", "public.items"]})
    api.delete(f"/api/v1/services/{ORDERS}/cdc", headers=as_("sam"))

    [enable, disable] = [e.payload for e in api.publisher.published]
    assert enable == EnableCdc(ORDERS, ("orders", "public.items"))
    assert disable == DisableCdc(ORDERS)
