"""One way every process reads its settings from the environment.

A process's settings are a frozen dataclass; each field read from the environment names its
variable with `env(...)`:

    @dataclass(frozen=True)
    class AuditSettings:
        kafka: KafkaAccess = env("DBAAS_KAFKA_BOOTSTRAP", compose=access_from_env)  # required
        group_id: str = env("DBAAS_AUDIT_GROUP", "dbaas-audit")
        metrics_port: int = env("DBAAS_METRICS_PORT", 0)

    settings = read(AuditSettings)                                 # or read(AuditSettings, environ)

A value is parsed by the type of its default (int, float, Path, str) or by `parse=`; `compose=`
builds a value from the whole environment (a key and its id, say). An empty variable counts as
unset. What is missing or malformed raises `SettingsError` naming every variable at fault, so a
process says in one line what to fix (`runtime.process.main` ends it with exit code 2).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_MISSING = dataclasses.MISSING


class SettingsError(ValueError):
    """Settings missing or malformed; the message names the variables."""


@dataclasses.dataclass(frozen=True)
class _Env:
    name: str
    parse: Callable[[str], Any] | None
    compose: Callable[[Mapping[str, str]], Any] | None
    hint: str
    required: bool


def env(name: str, default: Any = _MISSING, *, parse: Callable[[str], Any] | None = None,
        compose: Callable[[Mapping[str, str]], Any] | None = None, hint: str = "",
        required: bool = False, repr: bool = True) -> Any:  # noqa: A002 - the dataclass field's own name
    """A dataclass field read from variable `name`: required when there is no default, or when
    `required` (a default then serves only code that builds the settings itself, e.g. tests)."""
    meta = {"env": _Env(name, parse, compose, hint, required or default is _MISSING)}
    if isinstance(default, (dict, list, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta, repr=repr)
    return dataclasses.field(default=default, metadata=meta, repr=repr)


def read(cls: type[T], environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """An instance of settings dataclass `cls` from `environ` (default: the process environment)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    missing: list[str] = []
    wrong: list[str] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        spec: _Env | None = f.metadata.get("env")
        if spec is None or f.name in overrides:
            continue
        try:
            value = _value(spec, f, environ)
        except (ValueError, TypeError) as exc:
            # a secret (a field kept out of repr) is never printed
            shown = f"={environ.get(spec.name, '')!r}" if f.repr else ""
            why = str(exc) if spec.parse or spec.compose else f"is not {_kind(f)}"
            wrong.append(why if why.startswith(spec.name) else f"{spec.name}{shown} {why}")
            continue
        if value is not None:
            values[f.name] = value
        elif spec.required:
            missing.append(spec.name + (f" ({spec.hint})" if spec.hint else ""))
    problems = ([f"set {', '.join(missing)}"] if missing else []) + wrong
    if problems:
        raise SettingsError(f"{cls.__name__}: {'; '.join(problems)}")
    return cls(**values, **overrides)


def _value(spec: _Env, f: dataclasses.Field, environ: Mapping[str, str]) -> Any:
    """The field's value from the environment, or None when its variable is unset (or empty)."""
    if spec.compose is not None:
        return spec.compose(environ)
    raw = (environ.get(spec.name) or "").strip()
    return (spec.parse or _parser(f))(raw) if raw else None


def _parser(f: dataclasses.Field) -> Callable[[str], Any]:
    default = f.default if f.default is not _MISSING else None
    if isinstance(default, bool):
        return lambda raw: raw.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    if isinstance(default, Path) or "Path" in str(f.type):
        return Path
    return str


def _kind(f: dataclasses.Field) -> str:
    parse = _parser(f)
    return {int: "an integer", float: "a number"}.get(parse, "valid")  # type: ignore[call-overload]
