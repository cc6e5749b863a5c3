"""How the service saga tells an operation's own permanent failure (fail it, move on) from a
transient one (retry) and from a fault of the platform itself (stop, as before), and the reason
it gives a person. Pure: no Kafka, no git; the helm cases run the real chart."""
from __future__ import annotations

import subprocess

import pytest
from confluent_kafka import KafkaException

from events import OperationStarted, Resources
from gitops import helm
from gitops.errors import (
    GitOpsError,
    InvalidChange,
    InvalidPath,
    PermanentGitOpsError,
    PushConflict,
    RemoteRejected,
    TransientGitOpsError,
    WorkdirMismatch,
)
from gitops.helm import HelmNotFoundError, HelmTimeoutError, RenderError
from gitops.manifests import ManifestError
from processors.saga import chart_values
from processors.sagas.errors import REASON_MAX, Verdict, classify, error_name, refusal_reason

RETRY, FAIL, HALT = Verdict.RETRY, Verdict.FAIL, Verdict.HALT
CHART = "deploy/charts/dbaas-service"

CASES = [
    # (error, step, verdict, reason)
    (RenderError("release name too long", chart=CHART), "render", FAIL, "helm refused the values: same event, same refusal"),
    (subprocess.CalledProcessError(1, ["helm"], stderr=b"Error: bad"), "render", FAIL, "helm exiting non-zero is deterministic"),
    (ManifestError("document 2 has no kind"), "render", FAIL, "the chart printed something that is not manifests"),
    (InvalidPath("name 'X' is not a DNS-1123 label"), "render", FAIL, "the event's name makes no repository path"),
    (ValueError("could not convert"), "render", FAIL, "building the claim's values from the event failed"),
    (KeyError("labels"), "render", FAIL, "a render is a pure function of the event: any error repeats"),
    (HelmTimeoutError("helm template did not finish within 120s"), "render", RETRY, "an overloaded host may finish later"),
    (OSError("no space left on device"), "render", RETRY, "the host's trouble, not the event's"),
    (HelmNotFoundError("no Helm v3 binary found"), "render", HALT, "every operation would fail: the platform is broken"),
    (InvalidChange("cannot write 'tenants/a/b.yaml': a folder of that name exists"), "commit", FAIL,
     "git refuses this operation's change as such"),
    (InvalidPath("repository path is not allowed"), "commit", FAIL, "this operation's path is refused"),
    (PushConflict("others kept moving main", attempts=5), "commit", RETRY, "a race: retried with backoff"),
    (TransientGitOpsError("push failed: connection reset"), "commit", RETRY, "network trouble"),
    (OSError("connection refused"), "commit", RETRY, "network trouble"),
    (RemoteRejected("the remote refused the push: hook declined"), "commit", HALT, "refuses every push: the platform's fault"),
    (WorkdirMismatch("workdir is a clone of another remote"), "commit", HALT, "the saga's own setup is wrong"),
    (PermanentGitOpsError("git is not installed", reason="GitNotFound"), "commit", HALT,
     "not known to be the operation's: stop as before rather than fail every operation"),
    (ValueError("unexpected"), "commit", HALT, "outside the render, an unknown error is not known to be the event's"),
    (KafkaException("broker down"), "commit", HALT, "Kafka trouble keeps today's behaviour (restart, re-read)"),
]


@pytest.mark.parametrize("error, step, verdict, why", CASES, ids=[c[3] for c in CASES])
def test_classify(error, step, verdict, why):
    assert classify(error, step) is verdict, why


def test_error_names_are_stable_for_metrics():
    assert error_name(RenderError("x", chart=CHART)) == "RenderFailed"
    assert error_name(InvalidChange("x")) == "InvalidChange"
    assert error_name(GitOpsError("x")) == "GitOpsError"
    assert error_name(ValueError("x")) == "ValueError"


def started(name: str, **labels: str) -> OperationStarted:
    return OperationStarted("8c0f5a52-6c1e-4f11-9a3b-0c8f3f2c9d10", "0d9b8a4e-5f7c-4c1e-9d2a-1b3c5d7e9f01",
                            "apply", name, "yugabyte", "2024.2.0.0-b145", "frankfurt", "small",
                            Resources(1.0, 2, 10, 1), False, labels)


def refused_render(e: OperationStarted) -> RenderError:
    with pytest.raises(RenderError) as refused:
        helm.render(helm.SERVICE_CHART, chart_values(e, "acme"), release_name=e.name, namespace="tenant-acme")
    return refused.value


def test_a_name_helm_refuses_gives_a_reason_saying_what_and_what_to_do():
    error = refused_render(started("n" * 60))
    assert classify(error, "render") is FAIL
    reason = refusal_reason(error, "render")
    assert reason.startswith("the service's manifests could not be rendered: release name")
    assert "at most 53 characters" in reason and reason.endswith("values the service chart accepts")


def test_a_chart_refusal_gives_helms_words_without_its_debugging_hint():
    error = refused_render(started("orders", **{f"k{i}": "v" for i in range(33)}))
    reason = refusal_reason(error, "render")
    assert "labels" in reason and "32" in reason, reason
    assert "--debug" not in reason and "\n" not in reason
    assert reason == refusal_reason(error, "render")  # reported again, it is the same command


def test_a_long_tool_message_is_cut_for_the_reason():
    error = RenderError("x", chart=CHART, stderr="Error: " + "v" * 5000)
    assert len(refusal_reason(error, "render")) < REASON_MAX + 200


def test_a_commit_refusal_says_the_repository_must_be_corrected():
    reason = refusal_reason(InvalidChange("cannot write 'tenants/a/f/db.yaml': a folder of that name exists"),
                            "commit")
    assert reason.startswith("the service's manifests could not be committed to GitOps: cannot write")
    assert "GitOps repository must be corrected" in reason

