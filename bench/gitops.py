"""`python -m bench.gitops [-n 1000]`: N service creations in PoP frankfurt until all are committed
to the GitOps repository (through gateway-less command publishing, the command processor, the
saga with Helm's rendering and real git: one long-lived renderer, one commit + push per batch of
operations), against raw git commits of the same files measured in the same run (render once,
then one commit + push per file)."""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from bench.common import command, operations, org, platform, progress, wait_visible
from commands import CreateService
from gitops import helm, manifests


def committed(dsn: str, ids: list[str], show) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            done = conn.execute("select count(*) from operations where id = any(%s) and done_steps >= 2",
                                (ids,)).fetchone()[0]
            show(done, len(ids))
            if done == len(ids):
                return
            time.sleep(0.2)


def raw_git(n: int, tenant: str) -> float:
    values = {"tenant": tenant, "serviceId": str(uuid.uuid4()), "name": "svc", "engine": "scylla",
              "engineVersion": "2026.2.4", "pop": "frankfurt", "cpu": 1, "memoryGi": 2, "storageGi": 10,
              "replicas": 1}
    text = manifests.dump_all(helm.render(helm.SERVICE_CHART, values, release_name="svc",
                                          namespace=f"tenant-{tenant}"))
    with tempfile.TemporaryDirectory() as tmp:
        remote, work = Path(tmp, "remote.git"), Path(tmp, "work")
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
        subprocess.run(["git", "clone", "-q", str(remote), str(work)], check=True, capture_output=True)
        git = ["git", "-C", str(work), "-c", "user.name=bench", "-c", "user.email=bench@local"]
        started = time.perf_counter()
        for i in range(n):
            path = work / "tenants" / tenant / "frankfurt" / f"svc-{i}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text.replace("svc", f"svc-{i}"))
            subprocess.run([*git, "add", "-A"], check=True)
            subprocess.run([*git, "commit", "-q", "-m", f"svc-{i}"], check=True)
            subprocess.run([*git, "push", "-q", "origin", "HEAD:main"], check=True, capture_output=True)
        return n / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.gitops")
    parser.add_argument("-n", type=int, default=1000)
    args = parser.parse_args()
    ep = platform(name="bench-gitops", offset=2500)
    pub = ep.publisher()  # signed as the gateway: the command processor refuses unsigned commands
    tenant = f"gitops-{uuid.uuid4().hex[:8]}"
    first = org(tenant)
    for c in first:
        pub.publish(c)
    wait_visible(ep.dsn, operations(first))
    cmds = [command(tenant, CreateService(str(uuid.uuid4()), f"svc-{i}", "scylla", "frankfurt", "small"))
            for i in range(args.n)]
    print(f"{args.n} service creations in PoP frankfurt until committed to GitOps")
    started = time.perf_counter()
    for c in cmds:
        pub.publish_async(c)
    pub.producer.flush(60)
    committed(ep.dsn, operations(cmds), progress("committed"))
    elapsed = time.perf_counter() - started
    pub.close()
    ours = args.n / elapsed
    raw = raw_git(min(args.n, 300), tenant)
    print(f"    control plane: {elapsed:7.1f} s, {ours:6.1f} operations/s committed (render, grouped commit + push, "
          "2 step commands each)")
    print(f"    raw git      : {raw:6.1f} commits/s (add + commit + push of the same files, {min(args.n, 300)} files)")
    print(f"    ratio        : {ours / raw:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
