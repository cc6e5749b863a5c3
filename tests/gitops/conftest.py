"""Fixtures for the Helm chart and CRD tests: one real Helm binary and one CRD index per session.

``helm_bin`` runs deploy/scripts/ensure-helm.sh once (it builds Helm with Go the first time, a
few minutes; afterwards it answers in well under a second). ``crd_index`` loads the upstream CRDs
(``$DBAAS_UPSTREAM_CRDS``, default ``../shared/crds`` next to the repository) plus deploy/crds.
Shared helpers live in crdschema.py, not here: test modules never import conftest.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from crdschema import PLATFORM_CRDS, REPO, CrdIndex, upstream_crd_files

ENSURE_HELM = REPO / "deploy" / "scripts" / "ensure-helm.sh"

_timings: dict[str, float] = {}


@pytest.fixture(scope="session")
def helm_bin() -> str:
    started = time.monotonic()
    result = subprocess.run([str(ENSURE_HELM)], capture_output=True, text=True, timeout=1800, check=False)
    _timings["ensure-helm.sh"] = time.monotonic() - started
    if result.returncode != 0:
        pytest.fail(f"{ENSURE_HELM} failed (exit {result.returncode}):\n{result.stderr}")
    return result.stdout.strip()


@pytest.fixture(scope="session")
def crd_index() -> CrdIndex:
    started = time.monotonic()
    root = upstream_crd_files()
    if not root:
        pytest.fail("no upstream CRDs found; set DBAAS_UPSTREAM_CRDS to the folder holding them")
    index = CrdIndex.from_files(
        [*root, *sorted(PLATFORM_CRDS.glob("*.yaml"))],
        fallback=upstream_crd_files(legacy=True),
    )
    _timings["load CRDs"] = time.monotonic() - started
    return index


@pytest.fixture(scope="session")
def timings() -> dict[str, float]:
    """Label -> seconds; shown in the terminal summary, so slow renders are noticed."""
    return _timings


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _timings:
        terminalreporter.write_sep("-", "gitops timings")
        for label, seconds in _timings.items():
            terminalreporter.write_line(f"{label}: {seconds:.2f}s")
