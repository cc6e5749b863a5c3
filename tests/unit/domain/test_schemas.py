"""The committed `.avsc` files: loadable, registrable, and BACKWARD compatible with their previous commit."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import fastavro
import pytest

from schemas import SCHEMA_DIR, SUBJECTS, SchemaError, load_schema, schema_names, schema_str
from schemas.compat import check_backward

REPO = Path(__file__).resolve().parents[3]
AVSC = sorted(SCHEMA_DIR.glob("*.avsc"))


def test_every_subject_has_its_schema() -> None:
    assert set(SUBJECTS.values()) <= set(schema_names())
    assert set(SUBJECTS) == {"dbaas.commands-value", "dbaas.events-value", "dbaas.pop.status-value",
                             "dbaas.audit-value", "dbaas.alerts-value", "dbaas.metrics-value"}


@pytest.mark.parametrize("name", schema_names())
def test_schema_text_is_compact_and_complete(name: str) -> None:
    text = schema_str(name)

    assert json.loads(text) == load_schema(name)
    assert "\n" not in text and len(text) < len((SCHEMA_DIR / f"{name}.avsc").read_text(encoding="utf-8"))
    assert text == schema_str(name)
    fastavro.parse_schema(json.loads(text))  # self-contained: no name it does not define


def test_an_unknown_schema_name_lists_the_known_ones() -> None:
    with pytest.raises(SchemaError, match="no schema named 'nope'; known: alert, audit_record, command_envelope, event_envelope"):
        load_schema("nope")


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)


def previous_version(path: Path) -> str | None:
    """The newest committed text of `path` that differs from the working copy, else HEAD's, else None."""
    assert git("rev-parse", "--git-dir").returncode == 0, f"{REPO} is not a git repository"
    if git("rev-parse", "--verify", "--quiet", "HEAD").returncode != 0:
        return None  # no commits yet
    rel = path.relative_to(REPO).as_posix()
    current = path.read_text(encoding="utf-8")
    committed = [
        git("show", f"{commit}:{rel}")
        for commit in ["HEAD", *git("log", "--format=%H", "--", rel).stdout.split()]
    ]
    texts = [shown.stdout for shown in committed if shown.returncode == 0]
    return next((text for text in texts if text != current), texts[0] if texts else None)


@pytest.mark.parametrize("path", AVSC, ids=[p.name for p in AVSC])
def test_schemas_backward_compatible_with_previous_commit(path: Path) -> None:
    old = previous_version(path)
    if old is None:
        pytest.skip(f"{path.name} has no committed earlier version")

    assert check_backward(json.loads(path.read_text(encoding="utf-8")), json.loads(old)) == []
