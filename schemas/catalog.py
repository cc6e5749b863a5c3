"""The platform's vocabulary of places and engines, at the bottom layer: every part that names an
engine, a PoP or a size (validation, the GitOps layout, the local PoP, the gateway, the CLI) reads
it from here. Avro keeps these as strings (an unknown value still decodes and is rejected with a
reason); Python code uses the names below. Imports nothing of the project.
"""
from __future__ import annotations

ENGINES: tuple[str, ...] = ("yugabyte", "vitess", "scylla", "dragonfly", "aerospike", "mongodb")

# The version each engine gets when CreateService leaves engine_version null, in the form its
# operator's CR takes (from the upstream example CRs in ../shared/crds/*/examples; Dragonfly's
# samples name no version, so its operator's default image tag is used).
DEFAULT_ENGINE_VERSIONS: dict[str, str] = {
    "yugabyte": "2024.2.0.0-b145",  # YBUniverse spec.ybSoftwareVersion
    "vitess": "v24.0.0-rc1-mysql80",  # vitess/lite image tag
    "scylla": "2026.2.4",  # ScyllaCluster spec.version
    "dragonfly": "v1.36.0",  # docker.dragonflydb.io/dragonflydb/dragonfly image tag
    "aerospike": "8.1.2.0",  # aerospike-server-enterprise image tag
    "mongodb": "6.0.5",  # MongoDBCommunity spec.version
}

# Regional PoPs are Kubernetes clusters synced by Argo CD; `local` is one machine, synced by the
# local PoP agent, and runs only engines with a local protocol-compatible server.
KUBERNETES_POPS: tuple[str, ...] = ("lagos", "johannesburg", "frankfurt", "ashburn", "singapore")
LOCAL_POP = "local"
LOCAL_ENGINES: tuple[str, ...] = ("yugabyte", "vitess", "dragonfly")
POP_ENGINES: dict[str, tuple[str, ...]] = {**{pop: ENGINES for pop in KUBERNETES_POPS}, LOCAL_POP: LOCAL_ENGINES}
POPS: tuple[str, ...] = tuple(POP_ENGINES)

SIZES: tuple[str, ...] = ("small", "medium", "large")
