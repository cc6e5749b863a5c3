"""`runtime.settings.read`: one reader for every process's settings."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from processors.audit import AuditSettings
from processors.saga import SagaSettings
from processors.settings import ProcessorSettings
from runtime.settings import SettingsError, env, read
from runtime.signing import Signer


@dataclass(frozen=True)
class Example:
    kafka: str = env("X_KAFKA")
    port: int = env("X_PORT", 0)
    ratio: float = env("X_RATIO", 0.5)
    home: Path = env("X_HOME", Path("/tmp/x"))
    secret: str | None = env("X_SECRET", None, parse=str, required=True, repr=False)
    tags: dict = env("X_TAGS", {"a": 1}, parse=lambda raw: dict.fromkeys(raw.split(","), 1))
    fixed: int = 7  # not from the environment


def test_values_are_parsed_by_the_type_of_their_default_and_empty_counts_as_unset():
    s = read(Example, {"X_KAFKA": "k:9092", "X_PORT": "9400", "X_RATIO": "0.25", "X_HOME": "/data",
                       "X_SECRET": "s", "X_TAGS": " "})
    assert (s.kafka, s.port, s.ratio, s.home, s.secret, s.tags, s.fixed) == (
        "k:9092", 9400, 0.25, Path("/data"), "s", {"a": 1}, 7)
    assert read(Example, {"X_KAFKA": "k", "X_SECRET": "s"}, port=1).port == 1  # overrides win


def test_every_missing_and_malformed_variable_is_named_in_one_message_and_secrets_never_shown():
    with pytest.raises(SettingsError) as exc:
        read(Example, {"X_PORT": "nine", "X_RATIO": "x"})
    message = str(exc.value)
    assert message.startswith("Example: set X_KAFKA, X_SECRET")
    assert "X_PORT='nine' is not an integer" in message and "X_RATIO='x' is not a number" in message
    assert read(Example, {"X_KAFKA": "k", "X_SECRET": "s", "X_TAGS": "a,b"}).tags == {"a": 1, "b": 1}


def test_the_processes_read_their_settings_through_it():
    signer = Signer.generate("platform")
    environ = {"DBAAS_KAFKA_BOOTSTRAP": "k:9092", "DBAAS_REGISTRY_URL": "http://r", "DBAAS_KEYRING": "/k.json",
               "DBAAS_GITOPS_REMOTE": "file:///g.git", "DBAAS_STATE_DIR": "/state",
               "DBAAS_SIGNING_KEY_ID": "platform", "DBAAS_SIGNING_KEY": signer.private_text(),
               "DBAAS_SAGA_STEP_TIMEOUTS": "render=5", "DBAAS_METRICS_PORT": "9402"}
    saga = read(SagaSettings, environ)
    assert (saga.workdir, saga.keyring, saga.timeouts["render"], saga.metrics_port) == (
        Path("/state/gitops-work"), Path("/k.json"), 5, 9402)
    assert saga.signer.public_text() == signer.public_text()
    assert read(ProcessorSettings, environ).keyring == Path("/k.json")
    assert read(AuditSettings, environ).group_id == "dbaas-audit"
    with pytest.raises(SettingsError, match="DBAAS_SAGA_STEP_TIMEOUTS") as exc:
        read(SagaSettings, {**environ, "DBAAS_SAGA_STEP_TIMEOUTS": "nope=1", "DBAAS_SIGNING_KEY": "bad"})
    assert signer.private_text() not in str(exc.value) and "DBAAS_SIGNING_KEY" in str(exc.value)
