"""Test helper: validate rendered Kubernetes objects against real CRD openAPIV3Schemas.

Role: load CustomResourceDefinitions (apiextensions.k8s.io/v1, and v1beta1 for legacy files),
index them by (group, version, kind), convert each version's ``openAPIV3Schema`` into a
JSON Schema (Draft 2020-12) for the ``jsonschema`` package, and report every violation of a
custom resource with its path. Used by tests/gitops only; imports nothing from the project.

The conversion follows what the API server does with a structural schema, as closely as a
plain JSON Schema can:

- ``nullable: true`` adds ``null`` to the type; without it ``null`` is a type error.
- ``x-kubernetes-int-or-string: true`` accepts an integer or a string.
- ``x-kubernetes-preserve-unknown-fields: true`` keeps unknown fields; everywhere else an
  object's fields are closed (``additionalProperties: false``): the API server would prune an
  unknown field silently, so a misspelled field is an error here. An object schema that lists
  no properties and no ``additionalProperties`` is closed too (the server prunes all of it).
- ``x-kubernetes-embedded-resource: true`` allows ``apiVersion``, ``kind`` and ``metadata``.
- Inside ``allOf``/``anyOf``/``oneOf``/``not`` nothing is closed: structural schemas use those
  only for value validation (e.g. "one of these fields is required").
- OpenAPI 3.0's boolean ``exclusiveMinimum``/``exclusiveMaximum`` become numeric bounds.
- The root ``metadata`` is checked as ObjectMeta: name (DNS-1123, at most 63 characters, the
  limit our charts promise), namespace, labels and annotations (label keys and values per the
  Kubernetes rules). Unlisted ObjectMeta fields are rejected.

Not covered: CEL rules (``x-kubernetes-validations``), ``x-kubernetes-list-type`` uniqueness,
defaulting and ``format`` checks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A qualified label key: optional DNS-1123 subdomain prefix, then a name of at most 63 chars.
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# libyaml parses the 3.5 MB of upstream CRDs ~10x faster than the pure-Python loader.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_DROPPED_KEYS = frozenset(
    {
        "description",
        "default",
        "example",
        "externalDocs",
        "format",
        "x-kubernetes-validations",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
        "x-kubernetes-embedded-resource",
        "nullable",
    }
)
_SUBSCHEMA_LIST_KEYS = ("allOf", "anyOf", "oneOf")
_COPIED_KEYS = frozenset(
    {
        "type",
        "enum",
        "required",
        "pattern",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minProperties",
        "maxProperties",
        "multipleOf",
    }
)


# Where the CRDs live: ours in deploy/crds, upstream copies in ../shared/crds (overridable).
REPO = Path(__file__).resolve().parents[2]
PLATFORM_CRDS = REPO / "deploy" / "crds"


def upstream_crds_dir() -> Path:
    return Path(os.environ.get("DBAAS_UPSTREAM_CRDS", REPO.parent / "shared" / "crds")).resolve()


def upstream_crd_files(*, legacy: bool = False) -> list[Path]:
    """The upstream CRD files (never examples): current ones, or with ``legacy`` the superseded
    ``legacy*`` copies (e.g. Strimzi 0.51 still serving kafka.strimzi.io/v1beta2). Empty when the
    folder is missing."""
    root = upstream_crds_dir()
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.rglob("*.yaml")
        if "examples" not in p.relative_to(root).parts
        and any(part.startswith("legacy") for part in p.relative_to(root).parts) == legacy
    )


def upstream_example_files() -> list[Path]:
    """The upstream example CRs (and their companion Secrets/PVCs)."""
    root = upstream_crds_dir()
    return sorted(root.rglob("examples/*.yaml")) if root.is_dir() else []


class CrdSchemaError(Exception):
    """Base error of this helper."""


class CrdFileError(CrdSchemaError):
    """A CRD file could not be read or holds an unsupported/duplicate definition."""


class UnknownKindError(CrdSchemaError):
    """No loaded CRD serves the object's apiVersion and kind."""


class SchemaViolation(CrdSchemaError):
    """An object does not validate against its CRD schema; ``errors`` lists each problem."""

    def __init__(self, ref: str, errors: list[str]) -> None:
        super().__init__(f"{ref} violates its CRD schema:\n  " + "\n  ".join(errors))
        self.ref = ref
        self.errors = errors


def object_meta_schema() -> dict[str, Any]:
    """JSON Schema for the ObjectMeta fields a rendered manifest may carry."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "maxLength": 63, "pattern": DNS1123_LABEL},
            "namespace": {"type": "string", "maxLength": 63, "pattern": DNS1123_LABEL},
            "labels": {
                "type": "object",
                "propertyNames": {"pattern": _LABEL_KEY.pattern, "maxLength": 317},
                "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE},
            },
            "annotations": {
                "type": "object",
                "propertyNames": {"pattern": _LABEL_KEY.pattern, "maxLength": 317},
                "additionalProperties": {"type": "string"},
            },
            "finalizers": {"type": "array", "items": {"type": "string"}},
            "generateName": {"type": "string"},
            "ownerReferences": {"type": "array", "items": {"type": "object"}},
        },
    }


def convert(schema: Mapping[str, Any], *, closed: bool = True) -> dict[str, Any]:
    """Convert one OpenAPI v3 (Kubernetes structural) schema node to JSON Schema.

    ``closed`` is False inside junctors (allOf/anyOf/oneOf/not), where properties only restate
    fields of the enclosing schema and must not reject the others.
    """
    out: dict[str, Any] = {k: v for k, v in schema.items() if k in _COPIED_KEYS}
    preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))

    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["type"] = ["integer", "string"]
    if schema.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]

    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if schema.get(flag) is True and bound in schema:
            out.pop(bound, None)
            out[flag] = schema[bound]

    properties = dict(schema.get("properties") or {})
    if schema.get("x-kubernetes-embedded-resource"):
        for field in ("apiVersion", "kind"):
            properties.setdefault(field, {"type": "string"})
        properties.setdefault("metadata", {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    if properties:
        out["properties"] = {name: convert(sub) for name, sub in properties.items()}

    if "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        out["additionalProperties"] = extra if isinstance(extra, bool) else convert(extra)
    elif closed and not preserve and _is_object_schema(schema):
        out["additionalProperties"] = False

    if "items" in schema:
        items = schema["items"]
        if isinstance(items, list):  # tuple form is not structural, but be liberal
            out["prefixItems"] = [convert(i) for i in items]
        else:
            out["items"] = convert(items)

    for key in _SUBSCHEMA_LIST_KEYS:
        if key in schema:
            out[key] = [convert(sub, closed=False) for sub in schema[key]]
    if "not" in schema:
        out["not"] = convert(schema["not"], closed=False)

    unknown = (
        set(schema)
        - _COPIED_KEYS
        - _DROPPED_KEYS
        - {
            "properties",
            "additionalProperties",
            "items",
            "not",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "$ref",
            "title",
            *_SUBSCHEMA_LIST_KEYS,
        }
    )
    if unknown:
        raise CrdFileError(f"unsupported OpenAPI keywords in CRD schema: {sorted(unknown)}")
    return out


def _is_object_schema(schema: Mapping[str, Any]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return False
    return schema.get("type") == "object" or ("type" not in schema and "properties" in schema)


def resource_schema(openapi: Mapping[str, Any]) -> dict[str, Any]:
    """JSON Schema for a whole custom resource: the converted CRD schema with strict ObjectMeta."""
    root = convert(openapi)
    root.setdefault("properties", {})
    root["properties"]["metadata"] = object_meta_schema()
    root["properties"].setdefault("apiVersion", {"type": "string"})
    root["properties"].setdefault("kind", {"type": "string"})
    root["required"] = sorted({*root.get("required", []), "apiVersion", "kind", "metadata"})
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return root


@dataclass(frozen=True)
class CrdVersion:
    """One served version of one CRD, with the file it came from."""

    group: str
    version: str
    kind: str
    source: Path
    openapi: Mapping[str, Any]


def iter_crd_versions(path: Path) -> Iterator[CrdVersion]:
    """Yield every version schema of every CRD document in ``path`` (multi-document aware)."""
    try:
        docs = list(yaml.load_all(path.read_text(), Loader=_LOADER))
    except (OSError, yaml.YAMLError) as exc:
        raise CrdFileError(f"cannot read CRD file {path}: {exc}") from exc
    for doc in docs:
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        group, kind = spec["group"], spec["names"]["kind"]
        shared = (spec.get("validation") or {}).get("openAPIV3Schema")  # apiextensions v1beta1
        versions = spec.get("versions") or [{"name": spec.get("version"), "served": True}]
        for entry in versions:
            if not entry.get("served", True):
                continue
            openapi = (entry.get("schema") or {}).get("openAPIV3Schema") or shared
            if openapi is None:
                raise CrdFileError(f"{path}: {kind} {group}/{entry['name']} has no openAPIV3Schema")
            yield CrdVersion(group, entry["name"], kind, path, openapi)


class CrdIndex:
    """CRD schemas by (apiVersion, kind), each compiled once into a jsonschema validator."""

    def __init__(self, versions: Iterable[CrdVersion]) -> None:
        self._versions: dict[tuple[str, str], CrdVersion] = {}
        self._validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
        for v in versions:
            key = (f"{v.group}/{v.version}", v.kind)
            if key in self._versions:
                raise CrdFileError(
                    f"{key[1]} {key[0]} is defined twice: {self._versions[key].source} and {v.source}"
                )
            self._versions[key] = v

    @classmethod
    def from_files(cls, paths: Iterable[Path], fallback: Iterable[Path] = ()) -> CrdIndex:
        """Index ``paths`` (a kind defined twice is an error); ``fallback`` files only add
        versions ``paths`` lack, e.g. an older CRD still serving a removed API version."""
        index = cls(v for p in paths for v in iter_crd_versions(Path(p)))
        for version in (v for p in fallback for v in iter_crd_versions(Path(p))):
            index._versions.setdefault((f"{version.group}/{version.version}", version.kind), version)
        return index

    def kinds(self) -> list[tuple[str, str]]:
        return sorted(self._versions)

    def source(self, api_version: str, kind: str) -> Path:
        return self._lookup(api_version, kind).source

    def _lookup(self, api_version: str, kind: str) -> CrdVersion:
        try:
            return self._versions[(api_version, kind)]
        except KeyError:
            raise UnknownKindError(f"no CRD loaded for kind {kind!r} in apiVersion {api_version!r}") from None

    def validator(self, api_version: str, kind: str) -> jsonschema.protocols.Validator:
        key = (api_version, kind)
        if key not in self._validators:
            schema = resource_schema(self._lookup(api_version, kind).openapi)
            # No check_schema(): meta-validating the 1.3 MB Aerospike schema takes ~10 s, and the
            # converter only emits a handful of plain keywords.
            self._validators[key] = jsonschema.Draft202012Validator(schema)
        return self._validators[key]

    def errors(self, obj: Mapping[str, Any]) -> list[str]:
        """Every schema violation of ``obj``, as ``path: message`` lines, in document order."""
        validator = self.validator(str(obj.get("apiVersion")), str(obj.get("kind")))
        found = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
        return [f"{_json_path(e.absolute_path)}: {_message(e)}" for e in found]

    def validate(self, obj: Mapping[str, Any]) -> None:
        """Raise SchemaViolation listing every problem of ``obj``; return quietly if it is valid."""
        problems = self.errors(obj)
        if problems:
            ref = f"{obj.get('kind')} {(obj.get('metadata') or {}).get('name')!r} ({obj.get('apiVersion')})"
            raise SchemaViolation(ref, problems)


def _json_path(path: Iterable[Any]) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _message(error: jsonschema.ValidationError) -> str:
    if error.context:  # anyOf/oneOf: the closest sub-error says more than "is not valid under any"
        best = jsonschema.exceptions.best_match(error.context)
        return f"{error.message} (closest: {_json_path(best.relative_path)}: {best.message})"
    return error.message


def structural_problems(openapi: Mapping[str, Any]) -> list[str]:
    """Where ``openapi`` breaks the Kubernetes structural-schema rules an API server enforces
    for apiextensions.k8s.io/v1 CRDs (a subset: the rules a hand-written CRD tends to break).

    - every node states a ``type`` (unless it is int-or-string or preserves unknown fields);
    - ``properties`` and ``additionalProperties`` are not both set;
    - inside allOf/anyOf/oneOf/not there is no type, additionalProperties, default, nullable or
      description-carrying structure, except the int-or-string ``anyOf: [integer, string]``;
    - root ``metadata`` restricts at most ``name`` and ``generateName``;
    - list-map keys are required (or defaulted) fields of the list items.
    """
    problems: list[str] = []

    def node(schema: Mapping[str, Any], path: str, root: bool = False) -> None:
        int_or_string = bool(schema.get("x-kubernetes-int-or-string"))
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        if "type" not in schema and not int_or_string and not preserve:
            problems.append(f"{path}: no type")
        if "properties" in schema and "additionalProperties" in schema:
            problems.append(f"{path}: both properties and additionalProperties")
        for key in _SUBSCHEMA_LIST_KEYS:
            for i, sub in enumerate(schema.get(key, [])):
                junctor(sub, f"{path}.{key}[{i}]", int_or_string and key == "anyOf")
        if "not" in schema:
            junctor(schema["not"], f"{path}.not", False)
        if schema.get("x-kubernetes-list-type") == "map":
            items = schema.get("items") or {}
            for key in schema.get("x-kubernetes-list-map-keys", []):
                defaulted = "default" in ((items.get("properties") or {}).get(key) or {})
                if key not in items.get("required", []) and not defaulted:
                    problems.append(f"{path}: list-map key {key!r} is neither required nor defaulted")
        for name, sub in (schema.get("properties") or {}).items():
            if root and name == "metadata":
                extra = set(sub.get("properties") or {}) - {"name", "generateName"}
                if extra:
                    problems.append(f"{path}.metadata: restricts {sorted(extra)}")
                continue
            node(sub, f"{path}.{name}")
        if isinstance(schema.get("additionalProperties"), Mapping):
            node(schema["additionalProperties"], f"{path}.*")
        if isinstance(schema.get("items"), Mapping):
            node(schema["items"], f"{path}[]")

    def junctor(schema: Mapping[str, Any], path: str, int_or_string_anyof: bool) -> None:
        if int_or_string_anyof and set(schema) == {"type"} and schema["type"] in ("integer", "string"):
            return
        banned = {
            "type",
            "additionalProperties",
            "default",
            "nullable",
            "x-kubernetes-preserve-unknown-fields",
        }
        for key in sorted(banned & set(schema)):
            problems.append(f"{path}: {key} is not allowed inside a junctor")
        for name, sub in (schema.get("properties") or {}).items():
            junctor(sub, f"{path}.{name}", False)

    node(openapi, "$", root=True)
    return problems
