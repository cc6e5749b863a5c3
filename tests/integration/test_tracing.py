"""One causal trace per operation, on the test platform with its Jaeger: a dragonfly service created
in PoP `local` through the API yields one trace holding the gateway's request, the command
processor's judgements, the saga's render and commit, the local PoP agent's provisioning and
report, the saga's relay of that report and the projector's writes; the GitOps commit names it in
its `Trace-Id:` trailer; the operation links to it; `dbaas operation trace` prints it. A command
published straight onto the topic with a `traceparent` continues the publisher's trace."""
from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from commands import Actor, CommandEnvelope, CreateOrganization
from runtime import tracing
from tests.conftest import wait_for
from tests.integration.conftest import operation

# (service, span name) that the trace of a local creation must hold, and the step they record
EXPECTED = {
    ("gateway", "POST /api/v1/services"): "request",
    ("command-processor", "judge CreateService"): "judge",
    ("saga", "render"): "render",
    ("saga", "commit"): "commit",
    ("command-processor", "judge RecordServiceClaimCommitted"): "judge",
    ("localpop-agent", "provision"): "provision",
    ("localpop-agent", "report Ready"): "report",
    ("saga", "send RecordPopReport"): "relay",
    ("command-processor", "judge RecordPopReport"): "judge",
}


@pytest.fixture
def jaeger(stack) -> str:
    url = stack.status["endpoints"].get("tracing_url")
    assert url, "the test platform runs without Jaeger (DBAAS_STACK_WITHOUT=tracing?)"
    assert stack.status["endpoints"]["otlp_endpoint"].startswith("http://127.0.0.1:")
    return url


def spans_of(jaeger: str, trace_id: str) -> list[dict]:
    """The trace's spans as Jaeger holds them now, each with its service name."""
    resp = httpx.get(f"{jaeger}/api/traces/{trace_id}", timeout=10)
    if resp.status_code != 200 or not resp.json().get("data"):
        return []
    data = resp.json()["data"][0]
    services = {pid: p["serviceName"] for pid, p in data["processes"].items()}
    return [{**s, "service": services[s["processID"]], "attrs": {t["key"]: t["value"] for t in s["tags"]}}
            for s in data["spans"]]


def test_a_local_creation_is_one_trace_from_the_request_to_the_pop_and_back(stack, api, org, jaeger):
    accepted = api.post("/services", json={"org": org, "name": "cache", "engine": "dragonfly", "pop": "local"})
    assert accepted.status_code == 202, accepted.text
    op_id = accepted.json()["operation_id"]
    done = operation(api, op_id, lambda o: o["state"] in ("Succeeded", "Failed"), "the creation to end", 180)
    assert done["state"] == "Succeeded", done

    # the operation links to its trace
    trace = done["trace"]
    assert trace and len(trace["trace_id"]) == 32
    assert trace["url"] == f"{jaeger}/trace/{trace['trace_id']}"

    # one trace holds every process's part, each span with the operation, tenant and step
    def complete():
        spans = spans_of(jaeger, trace["trace_id"])
        found = {(s["service"], s["operationName"]) for s in spans}
        projected = any(s["service"] == "projector" for s in spans)
        return spans if set(EXPECTED) <= found and projected else None

    spans = wait_for(complete, timeout=60, interval=1, what=f"the trace of {op_id} in Jaeger")
    for span in spans:
        if (span["service"], span["operationName"]) in EXPECTED or span["service"] == "projector":
            assert span["attrs"]["dbaas.operation_id"] == op_id, span
            assert span["attrs"]["dbaas.tenant"] == org, span
            expected_step = EXPECTED.get((span["service"], span["operationName"]), "project")
            assert span["attrs"]["dbaas.step"] == expected_step, span
    by_id = {s["spanID"]: s for s in spans}

    def parent(span) -> dict | None:
        ref = next((r for r in span["references"] if r["refType"] == "CHILD_OF"), None)
        return by_id.get(ref["spanID"]) if ref else None

    named = {(s["service"], s["operationName"]): s for s in spans}
    root = named[("gateway", "POST /api/v1/services")]
    assert parent(root) is None
    assert parent(named[("command-processor", "judge CreateService")]) is root
    assert parent(named[("saga", "commit")])["operationName"] == "judge CreateService"
    assert parent(named[("localpop-agent", "provision")]) is named[("saga", "commit")]  # through the trailer
    assert parent(named[("localpop-agent", "report Ready")]) is named[("localpop-agent", "provision")]
    assert parent(named[("saga", "send RecordPopReport")]) is named[("localpop-agent", "report Ready")]
    assert parent(named[("command-processor", "judge RecordPopReport")]) is named[("saga", "send RecordPopReport")]

    # the GitOps commit carries the trace beside the operation
    commit = subprocess.run(["git", "--git-dir", stack.gitops_remote.removeprefix("file://"), "log", "-1",
                             "--format=%B", f"--grep=Operation-Id: {op_id}"], capture_output=True, text=True,
                            check=True).stdout
    commit_span = named[("saga", "commit")]
    assert f"Trace-Id: 00-{trace['trace_id']}-{commit_span['spanID']}-01" in commit

    # and the CLI prints the tree, following the operation's link to Jaeger
    out = stack.dbaas("operation", "trace", op_id)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"trace {trace['trace_id']}: ") and lines[1] == trace["url"]
    for service, name in EXPECTED:
        assert any(line.rstrip().endswith(f"{service}: {name}") or f"{service}: {name}  [" in line
                   for line in lines), (service, name, out.stdout)
    root_line = next(line for line in lines if "gateway: POST /api/v1/services" in line)
    judge_line = next(line for line in lines if "command-processor: judge CreateService" in line)
    assert judge_line.index("command-processor") == root_line.index("gateway") + 2  # indented under it


def test_a_command_published_with_a_traceparent_continues_the_publishers_trace(stack, api, jaeger):
    exporter = InMemorySpanExporter()  # the test process traces too, exporting nowhere
    tracing.configure("test-publisher", {}, exporter=exporter, roots=1.0)
    slug = f"org-{uuid.uuid4().hex[:8]}"
    command = CommandEnvelope(command_id=str(uuid.uuid4()), tenant_id=slug, actor=Actor(stack.principal("alice"), ()),
                              issued_at=datetime.now(UTC), correlation_id=str(uuid.uuid4()),
                              payload=CreateOrganization(slug, slug))
    publisher = stack.publisher()
    try:
        with tracing.span("publish CreateOrganization"):
            published = tracing.trace_id(tracing.current_traceparent())
            publisher.publish(command)
    finally:
        publisher.close()
        tracing.shutdown()
    from commands import operation_id

    op_id = operation_id(slug, command.command_id)
    done = operation(api, op_id, lambda o: o["state"] == "Succeeded", "the organization's creation")
    assert done["trace"]["trace_id"] == published

    def judged():
        return [s for s in spans_of(jaeger, published) if s["operationName"] == "judge CreateOrganization"]

    [span] = wait_for(judged, timeout=60, interval=1, what="the judgement in the publisher's trace")
    [publisher_span] = exporter.get_finished_spans()
    assert span["references"][0]["spanID"] == f"{publisher_span.context.span_id:016x}"
    assert span["attrs"]["dbaas.operation_id"] == op_id and span["attrs"]["dbaas.tenant"] == slug
