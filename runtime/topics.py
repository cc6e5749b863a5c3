"""Apply ``deploy/topics.yaml`` to a Kafka cluster: create what is missing, report drift.

Applying twice changes nothing. Drift (fewer partitions, a config that differs) is reported;
with ``fix=True`` configs are altered and partition counts raised (they cannot be lowered).
Per-tenant topics come from patterns via :func:`topic_for`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from runtime.kafka import KafkaAccess, admin_config

SPEC = Path(__file__).resolve().parents[1] / "deploy" / "topics.yaml"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class TopicSpecError(Exception):
    """The spec or a pattern argument is invalid."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    drift: dict[str, list[str]] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)


def load(profile: str = "local", path: Path = SPEC) -> tuple[list[TopicSpec], dict[str, dict], int]:
    """Fixed topics, patterns by template, and the replication factor of ``profile``."""
    spec = yaml.safe_load(path.read_text())
    prof = spec["profiles"][profile]
    base = {**spec.get("defaults", {}), "min.insync.replicas": str(prof["min_insync_replicas"])}
    fixed = [TopicSpec(t["name"], t["partitions"], {**base, **t.get("config", {})}) for t in spec["topics"]]
    patterns = {p["pattern"]: {"partitions": p["partitions"], "config": {**base, **p.get("config", {})}}
                for p in spec["patterns"]}
    return fixed, patterns, prof["replication_factor"]


def topic_for(pattern: str, profile: str = "local", **parts: str) -> TopicSpec:
    """The concrete topic of a pattern, e.g. ``topic_for("dbaas.audit.{tenant}", tenant="acme")``."""
    _, patterns, _ = load(profile)
    if pattern not in patterns:
        raise TopicSpecError(f"unknown topic pattern {pattern!r}; known: {', '.join(patterns)}")
    for key, value in parts.items():
        if not _NAME.match(value):
            raise TopicSpecError(f"{key} {value!r} cannot be part of a topic name: use lowercase letters, "
                                 "digits, '-' or '_' (at most 63)")
    try:
        name = pattern.format(**parts)
    except KeyError as missing:
        raise TopicSpecError(f"pattern {pattern} needs {missing.args[0]}") from None
    p = patterns[pattern]
    return TopicSpec(name, p["partitions"], dict(p["config"]))


def apply(admin: AdminClient, topics: list[TopicSpec], replication_factor: int, fix: bool = False,
          timeout: float = 30.0) -> ApplyReport:
    report = ApplyReport()
    existing = admin.list_topics(timeout=timeout).topics
    missing = [t for t in topics if t.name not in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(t.name, t.partitions, replication_factor, config=t.config) for t in missing],
            operation_timeout=timeout)
        for name, fut in futures.items():
            try:
                fut.result()
                report.created.append(name)
            except Exception as exc:  # another applier created it first: compare below instead
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    present = [t for t in topics if t.name not in report.created]
    if not present:
        return report
    meta = admin.list_topics(timeout=timeout).topics
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t.name) for t in present]
    configs = {res.name: fut.result() for res, fut in admin.describe_configs(resources).items()}
    for t in present:
        problems = []
        have_parts = len(meta[t.name].partitions)
        if have_parts != t.partitions:
            problems.append(f"partitions {have_parts} != {t.partitions}")
        for key, want in t.config.items():
            have = configs[t.name].get(key)
            if have is None or str(have.value) != str(want):
                problems.append(f"{key} {getattr(have, 'value', None)} != {want}")
        if not problems:
            report.unchanged.append(t.name)
            continue
        report.drift[t.name] = problems
        if fix:
            _fix(admin, t, have_parts, timeout)
            report.fixed.append(t.name)
    return report


def apply_spec(bootstrap: KafkaAccess | str, profile: str = "local", fix: bool = False) -> ApplyReport:
    """Apply the fixed topics of `deploy/topics.yaml` to the cluster at `bootstrap`."""
    fixed, _, rf = load(profile)
    return apply(AdminClient(admin_config(bootstrap, log_level=3)), fixed, rf, fix=fix)


def _fix(admin: AdminClient, t: TopicSpec, have_parts: int, timeout: float) -> None:
    if have_parts < t.partitions:
        admin.create_partitions([NewPartitions(t.name, t.partitions)],
                                operation_timeout=timeout)[t.name].result()
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in t.config.items()]
    res = ConfigResource(ConfigResource.Type.TOPIC, t.name, incremental_configs=entries)
    admin.incremental_alter_configs([res])[res].result()
