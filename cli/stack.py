"""``dbaas stack up|down|status|logs|reset`` and ``dbaas topics apply``."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace

from deploy.stack import config as stack_config
from deploy.stack import kube
from deploy.stack.artifacts import ArtifactError
from deploy.stack.base import StackError
from deploy.stack.components import kube_pop_components, replica_components
from deploy.stack.components import kafka_access
from deploy.stack.launcher import Launcher
from deploy.stack.tracing import otlp_endpoint
from runtime import topics
from runtime.kafka import SASL_MECHANISM, SECURITY_PROTOCOL


def _launcher(args, quiet: bool = False, sign_in: bool = False) -> Launcher:
    """The instance's launcher; with ``sign_in``, its sign-in settings changed as ``up`` asks."""
    offset = getattr(args, "port_offset", None)
    cfg = stack_config.resolve(args.home, offset)
    if sign_in:
        cfg = replace(cfg, sign_in=stack_config.change_sign_in(
            cfg.sign_in, issuers=args.oidc_issuer, clear_issuers=args.no_oidc_issuers,
            dev_issuer=args.dev_issuer, default_issuer=args.default_issuer))
        asked = [*(args.kube_pop or []), *os.environ.get("DBAAS_KUBE_POPS", "").split(",")]
        kept = () if args.no_kube_pops else cfg.kube_pops
        cfg = replace(cfg, kube_pops=kube.check_pops([*kept, *asked]))
        replicas = args.replicas or os.environ.get("DBAAS_STACK_REPLICAS", "").strip()
        if replicas:
            cfg = replace(cfg, replicas=int(replicas))  # the launcher refuses a count outside 1 … partitions
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if quiet else (lambda msg: print(msg, flush=True))
    return Launcher(cfg, say=say)


def endpoints(launcher: Launcher, show_secrets: bool = False) -> dict[str, str | None]:
    by_name = {s.name: s for s in launcher.status(show_secrets=show_secrets)}

    def ep(name: str) -> str | None:
        return by_name[name].endpoint if name in by_name else None

    admin = kafka_access(launcher.ctx) if launcher.config.secrets_file.exists() else None
    return {"kafka_bootstrap": ep("kafka"),
            # the broker takes SASL/SCRAM only: the platform's administrator principal (a super user)
            "kafka_security_protocol": SECURITY_PROTOCOL, "kafka_sasl_mechanism": SASL_MECHANISM,
            "kafka_username": admin.username if admin else None,
            "kafka_password": (admin.password if show_secrets else "***") if admin else None,
            "schema_registry_url": ep("registry"),
            "connect_url": ep("connect"), "postgres_dsn": ep("postgres"), "gitops_remote": ep("gitops"),
            "api_url": ep("api"), "s3_endpoint": ep("s3"), "prometheus_url": ep("prometheus"),
            "tracing_url": ep("tracing"),
            "otlp_endpoint": otlp_endpoint(launcher.ctx) if by_name.get("tracing") and by_name["tracing"].endpoint
            else None}


def _status_doc(launcher: Launcher, show_secrets: bool = False) -> dict:
    """States and endpoints; DSN passwords are ``***`` unless ``show_secrets``."""
    comps = launcher.status(show_secrets=show_secrets)
    sign_in = launcher.config.sign_in
    return {"home": str(launcher.config.home), "ports": launcher.config.ports,
            "healthy": all(c.state == "healthy" for c in comps),
            "sign_in": {"oidc_issuers": sign_in.issuer_names, "default_issuer": sign_in.default_issuer,
                        "development_issuer": sign_in.development},
            "components": {c.name: {k: v for k, v in asdict(c).items() if k != "name"} for c in comps},
            "endpoints": endpoints(launcher, show_secrets),
            "kube_pops": kube_pops(launcher, comps)}


def kube_pops(launcher: Launcher, comps) -> dict[str, dict]:
    """Each Kubernetes PoP the instance runs: its API server, the administrator's kubeconfig, and
    whether its API server, sync and operator are healthy."""
    by_name = {c.name: c for c in comps}
    doc = {}
    for pop in launcher.config.kube_pops:
        p = kube.KubePop(launcher.ctx, pop)
        parts = [f"etcd-{pop}", f"kube-apiserver-{pop}", f"kube-sync-{pop}", f"pop-operator-{pop}"]
        doc[pop] = {"server": p.server, "kubeconfig": str(p.kubeconfig()),
                    "healthy": all(n in by_name and by_name[n].state == "healthy" for n in parts),
                    "components": {n: by_name[n].state if n in by_name else "left out" for n in parts}}
    return doc


def cmd_up(args) -> int:
    launcher = _launcher(args, quiet=args.json, sign_in=True)
    before = stack_config.resolve(launcher.config.home) if launcher.config.state_file.exists() else None
    dropped = [pop for pop in (before.kube_pops if before else ()) if pop not in launcher.config.kube_pops]
    if dropped:  # Kubernetes PoPs no longer asked for: stop what ran for them
        Launcher(before, say=launcher.say).stop([c.name for c in kube_pop_components(dropped)])
    if before and before.replicas > launcher.config.replicas:  # fewer instances asked for: stop the rest
        kept = {c.name for c in replica_components(launcher.config.replicas)}
        Launcher(before, say=launcher.say).stop([c.name for c in replica_components(before.replicas)
                                                 if c.name not in kept])
    launcher.up()
    report = launcher.ctx.topic_report
    if args.json:
        print(json.dumps(_status_doc(launcher, args.show_secrets), indent=2))
    else:
        print(f"topics: {len(report.created)} created, {len(report.unchanged)} unchanged, "
              f"{len(report.drift)} drifted")
    return 0


def cmd_down(args) -> int:
    stopped = _launcher(args).down()
    if not stopped:
        print("nothing was running")
    return 0


def cmd_status(args) -> int:
    launcher = _launcher(args)
    doc = _status_doc(launcher, args.show_secrets)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        for name, c in doc["components"].items():
            print(f"{name:<20} {c['state']:<10} {c['endpoint'] or ''}")
        print(launcher.config.sign_in.describe())
    return 0 if doc["healthy"] else 3


def cmd_logs(args) -> int:
    launcher = _launcher(args)
    if not args.follow:
        print(launcher.logs(args.component, args.lines))
        return 0
    path = launcher.log_path(args.component or "kafka")
    print(launcher.logs(args.component or "kafka", args.lines))
    with open(path, errors="replace") as fh:
        fh.seek(0, 2)
        try:
            while True:
                line = fh.readline()
                if line:
                    sys.stdout.write(launcher.redact(line))
                    sys.stdout.flush()
                else:
                    time.sleep(0.3)
        except KeyboardInterrupt:
            return 0


def cmd_reset(args) -> int:
    launcher = _launcher(args)
    if not args.yes:
        if not sys.stdin.isatty():
            print("refusing to wipe without confirmation: pass --yes", file=sys.stderr)
            return 2
        answer = input(f"This deletes every event, topic and database under {launcher.config.home}. "
                       "Type 'reset' to go on: ")
        if answer.strip() != "reset":
            print("nothing removed")
            return 1
    launcher.reset()
    return 0


def cmd_topics_apply(args) -> int:
    launcher = _launcher(args)
    report = topics.apply_spec(kafka_access(launcher.ctx), fix=args.fix)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        for name in report.created:
            print(f"created   {name}")
        for name, problems in report.drift.items():
            print(f"{'fixed' if name in report.fixed else 'DRIFT':<9} {name}: {'; '.join(problems)}")
        print(f"{len(report.unchanged)} unchanged")
    return 1 if report.drift and not args.fix else 0


def register(sub: argparse._SubParsersAction) -> None:
    def common(p: argparse.ArgumentParser, offset: bool = False) -> None:
        p.add_argument("--home", help="instance folder (default .data/stack or $DBAAS_STACK_HOME)")
        if offset:
            p.add_argument("--port-offset", type=int, default=None,
                           help="shift every default port by N (or $DBAAS_PORT_OFFSET)")

    def show_secrets(p: argparse.ArgumentParser) -> None:
        p.add_argument("--show-secrets", action="store_true",
                       help="print endpoints with their passwords (for scripts); by default they are ***")

    stack = sub.add_parser("stack", help="run the local platform").add_subparsers(dest="action", required=True)
    p = stack.add_parser("up", help="start every component (idempotent)")
    common(p, offset=True)
    p.add_argument("--json", action="store_true")
    show_secrets(p)
    p.add_argument("--oidc-issuer", action="append", metavar="JSON",
                   help='an OIDC issuer the API trusts: {"issuer", "audience", "jwks_uri" or "jwks", '
                        '"client_id"?} (or a list, or @FILE); repeatable; replaces the stored ones and is '
                        "kept for later `up`s ($DBAAS_OIDC_ISSUERS when not given)")
    p.add_argument("--no-oidc-issuers", action="store_true", help="forget the configured issuers")
    p.add_argument("--dev-issuer", action=argparse.BooleanOptionalAction, default=None,
                   help="trust the instance's development token issuer (DEVELOPMENT ONLY; default: on only "
                        "when no issuer is configured; $DBAAS_DEV_ISSUER=1/0); kept for later `up`s")
    p.add_argument("--default-issuer", metavar="ISSUER",
                   help="issuer of members named without one ($DBAAS_DEFAULT_ISSUER; '' for the first trusted)")
    p.add_argument("--kube-pop", action="append", metavar="POP",
                   help="also run Kubernetes PoP POP locally: a real kube-apiserver and etcd (built once from the "
                        "Go module proxy), the GitOps sync and the PoP operator; repeatable, kept for later `up`s "
                        "($DBAAS_KUBE_POPS=frankfurt,singapore)")
    p.add_argument("--no-kube-pops", action="store_true", help="stop running the Kubernetes PoPs kept so far")
    p.add_argument("--replicas", type=int, metavar="N",
                   help="run N instances each of the command processor, projector and saga, sharing the event "
                        "log's partitions (1-12; $DBAAS_STACK_REPLICAS); kept for later `up`s")
    p.set_defaults(func=cmd_up)
    p = stack.add_parser("down", help="stop what `up` started (data is kept)")
    common(p)
    p.set_defaults(func=cmd_down)
    p = stack.add_parser("status", help="each component's state and endpoint")
    common(p)
    p.add_argument("--json", action="store_true")
    show_secrets(p)
    p.set_defaults(func=cmd_status)
    p = stack.add_parser("logs", help="show a component's log")
    common(p)
    p.add_argument("component", nargs="?")
    p.add_argument("-n", "--lines", type=int, default=50)
    p.add_argument("-f", "--follow", action="store_true")
    p.set_defaults(func=cmd_logs)
    p = stack.add_parser("reset", help="stop and delete all data")
    common(p)
    p.add_argument("--yes", action="store_true", help="do not ask")
    p.set_defaults(func=cmd_reset)

    tp = sub.add_parser("topics", help="the platform's topics").add_subparsers(dest="action", required=True)
    p = tp.add_parser("apply", help="create missing topics from deploy/topics.yaml, report drift")
    common(p)
    p.add_argument("--fix", action="store_true", help="also correct drifted configs and partitions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_topics_apply)


ERRORS = (StackError, ArtifactError, stack_config.ConfigError, topics.TopicSpecError)
