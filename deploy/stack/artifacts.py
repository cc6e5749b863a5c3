"""Resolve the JVM parts of the platform from Maven Central, once, into an ignored cache.

``deploy/stack/pom.xml`` lists Kafka (broker, Connect, tools), its logging binding, the
Debezium connector plugins and the Apicurio Registry bundle. The cache folder is keyed by a
hash of the pom, so changing a version resolves again and an unchanged pom never does.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

POM = Path(__file__).with_name("pom.xml")


class ArtifactError(Exception):
    """The JVM artifacts could not be resolved; the message says why and what to do."""


@dataclass(frozen=True)
class Artifacts:
    root: Path

    @property
    def kafka_classpath(self) -> str:
        return str(self.root / "lib" / "*")

    @property
    def plugin_path(self) -> Path:
        return self.root / "plugins"

    @property
    def registry_jar(self) -> Path:
        return self.root / "registry" / "quarkus-run.jar"


def _key() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()[:12]


def ensure(cache: Path, say: Callable[[str], None] = print) -> Artifacts:
    """Return the resolved artifacts, running Maven first when they are not in the cache."""
    root = cache / _key()
    done = root / ".complete"
    if done.exists():
        _converter_manifest(root)
        return Artifacts(root)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ArtifactError("Maven is needed once to fetch Kafka, Debezium and the schema registry: "
                            "install it (apt-get install -y maven) and run again")
    work = cache / "work"
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(POM, work / "pom.xml")
    if root.exists():
        shutil.rmtree(root)
    say("resolving Kafka, Kafka Connect, Debezium plugins and Apicurio Registry with Maven "
        "(first run only, ~300 MB)…")
    proc = subprocess.run(
        [mvn, "-B", "-q", "-f", str(work / "pom.xml"), "package", f"-Dstack.out={root}"],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ArtifactError(
            "Maven could not resolve the platform's JVM artifacts (is Maven Central reachable? "
            f"is the disk full?). Last lines of its output:\n{tail}")
    for needed in (root / "lib", root / "plugins" / "debezium-connector-postgres",
                   root / "plugins" / "apicurio-converter", root / "plugins" / "debezium-connector-mariadb",
                   root / "registry" / "quarkus-run.jar"):
        if not needed.exists():
            raise ArtifactError(f"Maven finished but {needed} is missing; delete {cache} and run again")
    _converter_manifest(root)
    done.write_text(_key() + "\n")
    say(f"artifacts ready in {root}")
    return Artifacts(root)


# Connect finds plugins through their ServiceLoader manifests (`plugin.discovery=service_load`,
# which keeps its start-up short); Apicurio's converter jar ships none, so the plugin gets one
# of its own: a jar holding only `META-INF/services/org.apache.kafka.connect.storage.Converter`.
CONVERTER_MANIFEST = "dbaas-converter-manifest.jar"
CONVERTERS = ("io.apicurio.registry.utils.converter.AvroConverter",)


def _converter_manifest(root: Path) -> None:
    import zipfile

    folder = root / "plugins" / "apicurio-converter"
    target = folder / CONVERTER_MANIFEST
    if not folder.is_dir() or target.exists():
        return
    partial = target.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w") as jar:
        jar.writestr("META-INF/services/org.apache.kafka.connect.storage.Converter", "\n".join(CONVERTERS) + "\n")
    partial.rename(target)
