"""Tenant-facing commands: `dbaas org|service|operation …` (each with `--json` for scripts)."""
from __future__ import annotations

import argparse
import json
from urllib.parse import quote, urlencode
import sys
import time

from cli.client import ApiError, Client

TERMINAL = {"Succeeded", "Failed", "Cancelled"}


def _out(args, doc: dict, human: str) -> None:
    print(json.dumps(doc, indent=2, default=str) if args.json else human)


def _client(args) -> Client:
    return Client(args.api_url)


def _wait(client: Client, op_id: str, states: set[str], timeout: float, progress: bool) -> dict:
    """Poll the operation until it reaches one of ``states`` (or a terminal state)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            op = client.get(f"/operations/{op_id}")
        except ApiError as exc:
            if exc.status != 404:  # not projected yet: keep polling
                raise
            op = {"id": op_id, "state": "Pending", "done_steps": 0, "total_steps": 0}
        line = f"operation {op_id}: {op['state']} ({op.get('done_steps', 0)}/{op.get('total_steps', 0)} steps)"
        if progress and line != last:
            print(line, file=sys.stderr, flush=True)
            last = line
        if op["state"] in states or op["state"] in TERMINAL:
            return op
        if time.monotonic() > deadline:
            raise ApiError(f"operation {op_id} still {op['state']} after {timeout:.0f}s")
        time.sleep(0.2)


def _judged(client: Client, accepted: dict, args) -> dict:
    """Wait until the command was judged; a rejection becomes an error with its reason."""
    if args.no_wait:
        return accepted
    op = _wait(client, accepted["operation_id"], {"Accepted", "Running"}, args.timeout, progress=not args.json)
    if op["state"] == "Failed":
        raise ApiError(f"refused ({op.get('reason_code')}): {op.get('message')}")
    return {**accepted, "state": op["state"]}


def _service_by_name(client: Client, org: str, name: str) -> dict:
    items = client.get("/services", org=org, name=name)["items"]
    live = [s for s in items if s["status"] != "Deleted"]
    if not live:
        raise ApiError(f"organization {org!r} has no service named {name!r} (see `dbaas service list --org {org}`)")
    return live[0]


def org_create(args) -> int:
    c = _client(args)
    accepted = _judged(c, c.post("/organizations", {"slug": args.slug, "display_name": args.display_name}), args)
    _out(args, accepted, f"organization {args.slug}: {accepted.get('state', 'submitted')} "
                         f"(operation {accepted['operation_id']})")
    return 0


def service_create(args) -> int:
    c = _client(args)
    body = {"org": args.org, "name": args.name, "engine": args.engine, "pop": args.pop, "size": args.size,
            "engine_version": args.version, "cpu": args.cpu, "memory_gb": args.memory_gb,
            "storage_gb": args.storage_gb, "replicas": args.replicas,
            "deletion_protection": args.deletion_protection}
    accepted = _judged(c, c.post("/services", {k: v for k, v in body.items() if v is not None}), args)
    _out(args, accepted, f"service {args.name} ({accepted['service_id']}): {accepted.get('state', 'submitted')} "
                         f"(operation {accepted['operation_id']})")
    return 0


def service_list(args) -> int:
    items = _client(args).get("/services", org=args.org, limit=500)["items"]
    if args.json:
        print(json.dumps(items, indent=2, default=str))
    else:
        for s in items:
            print(f"{s['name']:<24} {s['engine']:<10} {s['pop']:<13} {s['status']:<10} {s['id']}")
    return 0


def service_get(args) -> int:
    svc = _service_by_name(_client(args), args.org, args.name)
    _out(args, svc, "\n".join(f"{k}: {v}" for k, v in svc.items()))
    return 0


def service_scale(args) -> int:
    c = _client(args)
    svc = _service_by_name(c, args.org, args.name)
    body = {k: v for k, v in {"cpu": args.cpu, "memory_gb": args.memory_gb, "storage_gb": args.storage_gb,
                              "replicas": args.replicas}.items() if v is not None}
    accepted = _judged(c, c.post(f"/services/{svc['id']}/scale", body), args)
    _out(args, accepted, f"scaling {args.name}: {accepted.get('state', 'submitted')} "
                         f"(operation {accepted['operation_id']})")
    return 0


def service_protection(args) -> int:
    c = _client(args)
    svc = _service_by_name(c, args.org, args.name)
    enabled = args.setting == "on"
    accepted = _judged(c, c.put(f"/services/{svc['id']}/deletion-protection", {"enabled": enabled}), args)
    _out(args, accepted, f"deletion protection of {args.name} {args.setting}: {accepted.get('state', 'submitted')} "
                         f"(operation {accepted['operation_id']})")
    return 0


def service_delete(args) -> int:
    c = _client(args)
    svc = _service_by_name(c, args.org, args.name)
    accepted = _judged(c, c.delete(f"/services/{svc['id']}"), args)
    _out(args, accepted, f"deleting {args.name}: {accepted.get('state', 'submitted')} "
                         f"(operation {accepted['operation_id']})")
    return 0


def service_credentials(args) -> int:
    c = _client(args)
    svc = _service_by_name(c, args.org, args.name)
    creds = c.get(f"/services/{svc['id']}/credentials")
    _out(args, creds, creds["uri"])
    return 0


def operation_get(args) -> int:
    op = _client(args).get(f"/operations/{args.id}")
    _out(args, op, "\n".join(f"{k}: {v}" for k, v in op.items()))
    return 0


def operation_wait(args) -> int:
    states = {s.strip() for s in args.until.split(",")} if args.until else set()
    op = _wait(_client(args), args.id, states, args.timeout, progress=not args.json)
    _out(args, op, f"operation {args.id}: {op['state']}"
                   + (f" — {op.get('reason_code')}: {op.get('message')}" if op["state"] == "Failed" else ""))
    return 1 if op["state"] in {"Failed", "Cancelled"} else 0


def operation_trace(args) -> int:
    from cli import traces

    op = _client(args).get(f"/operations/{args.id}")
    trace, url = traces.operation_trace(op, args.tracing_url)
    _out(args, traces.as_json(trace, url), traces.render(trace, url))
    return 0


def operation_cancel(args) -> int:
    c = _client(args)
    accepted = _judged(c, c.post(f"/operations/{args.id}/cancel"), args)
    if not args.no_wait:
        op = _wait(c, args.id, {"Cancelled"}, args.timeout, progress=not args.json)
        accepted = {**accepted, "cancelled": op}
    _out(args, accepted, f"operation {args.id}: cancelled"
                         + (" (its GitOps change is being reverted)" if (accepted.get("cancelled") or {})
                            .get("compensation") else ""))
    return 0


def quota_get(args) -> int:
    q = _client(args).get(f"/organizations/{args.org}/quotas")
    if args.json:
        print(json.dumps(q, indent=2))
        return 0
    quota, used = q["quota"], q["usage"]
    print(f"organization {args.org}{' (platform default quota)' if q['default'] else ''}")
    print(f"  services: {used['services']} of {quota['max_services']}")
    rows = [("total", quota["total"], used["total"])]
    rows += [(f"engine {k}", v, used["engines"].get(k)) for k, v in quota["engines"].items()]
    rows += [(f"pop {k}", v, used["pops"].get(k)) for k, v in quota["pops"].items()]
    for label, limit, use in rows:
        use = use or {"cpu": 0, "memory_gb": 0, "storage_gb": 0}
        print(f"  {label:<18} vCPU {use['cpu']:g}/{limit['cpu']:g}  memory {use['memory_gb']}/{limit['memory_gb']} GiB"
              f"  storage {use['storage_gb']}/{limit['storage_gb']} GiB")
    return 0


def _limits(text: str | None, what: str) -> dict:
    """`mongodb=8:32:1000,scylla=4:16:500` -> {name: {cpu, memory_gb, storage_gb}}."""
    out = {}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        name, _, spec = item.partition("=")
        parts = spec.split(":")
        if not name or len(parts) != 3:
            raise ApiError(f"--{what} {item!r}: write NAME=CPU:MEMORY_GB:STORAGE_GB, e.g. mongodb=8:32:1000")
        try:
            out[name] = {"cpu": float(parts[0]), "memory_gb": int(parts[1]), "storage_gb": int(parts[2])}
        except ValueError:
            raise ApiError(f"--{what} {item!r}: CPU is a number, MEMORY_GB and STORAGE_GB whole numbers") from None
    return out


def quota_set(args) -> int:
    c = _client(args)
    current = c.get(f"/organizations/{args.org}/quotas")["quota"]
    total = dict(current["total"])
    for key, value in (("cpu", args.cpu), ("memory_gb", args.memory_gb), ("storage_gb", args.storage_gb)):
        if value is not None:
            total[key] = value
    body = {"max_services": args.max_services if args.max_services is not None else current["max_services"],
            "total": total,
            "engines": _limits(args.engines, "engines") if args.engines is not None else current["engines"],
            "pops": _limits(args.pops, "pops") if args.pops is not None else current["pops"]}
    accepted = _judged(c, c.put(f"/organizations/{args.org}/quotas", body), args)
    _out(args, accepted, f"quota of {args.org}: {accepted.get('state', 'submitted')} "
                         f"(operation {accepted['operation_id']})")
    return 0


def member_list(args) -> int:
    items = _client(args).get(f"/organizations/{args.org}/members")
    if args.json:
        print(json.dumps(items, indent=2))
    else:
        for m in items:
            issuer = m.get("issuer") or "-"
            print(f"{m['subject']:<32} {m['role']:<16} {issuer}")
    return 0


def member_change(args) -> int:
    c = _client(args)
    path = f"/organizations/{args.org}/members"
    member = f"{path}/{quote(args.subject, safe='')}" + (f"?{urlencode({'issuer': args.issuer})}" if args.issuer else "")
    match args.action:
        case "add":
            accepted = c.post(path, {"subject": args.subject, "issuer": args.issuer, "role": args.role})
        case "set-role":
            accepted = c.put(member, {"role": args.role})
        case _:
            accepted = c.delete(member)
    accepted = _judged(c, accepted, args)
    _out(args, accepted, f"member {args.subject} of {args.org}: {args.action} {accepted.get('state', 'submitted')}")
    return 0


def register(sub: argparse._SubParsersAction) -> dict[str, argparse._SubParsersAction]:
    """The tenant-facing groups; answers their subcommand sets, for groups other modules extend."""
    def common(p, wait: bool = False):
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--api-url", help="control plane API (default: the local platform, or $DBAAS_API_URL)")
        if wait:
            p.add_argument("--no-wait", action="store_true", help="return once published, before judgement")
            p.add_argument("--timeout", type=float, default=60.0)

    def resources(p):
        p.add_argument("--cpu", type=float)
        p.add_argument("--memory-gb", type=int)
        p.add_argument("--storage-gb", type=int)
        p.add_argument("--replicas", type=int)

    org = sub.add_parser("org", help="organizations").add_subparsers(dest="action", required=True)
    p = org.add_parser("create", help="create an organization (you become its owner)")
    p.add_argument("slug")
    p.add_argument("--display-name")
    common(p, wait=True)
    p.set_defaults(func=org_create)

    p = org.add_parser("quota", help="an organization's quota and usage; --set… to change it (org-owner)")
    p.add_argument("org")
    p.add_argument("--max-services", type=int)
    p.add_argument("--cpu", type=float, help="vCPU in total (cpu per replica times replicas)")
    p.add_argument("--memory-gb", type=int)
    p.add_argument("--storage-gb", type=int)
    p.add_argument("--engines", help="per-engine limits: NAME=CPU:MEMORY_GB:STORAGE_GB,… ('' clears them)")
    p.add_argument("--pops", help="per-PoP limits: NAME=CPU:MEMORY_GB:STORAGE_GB,… ('' clears them)")
    common(p, wait=True)
    p.set_defaults(func=lambda a: quota_set(a) if any(
        v is not None for v in (a.max_services, a.cpu, a.memory_gb, a.storage_gb, a.engines, a.pops))
        else quota_get(a))

    svc = sub.add_parser("service", help="database services").add_subparsers(dest="action", required=True)
    p = svc.add_parser("create", help="request a new database service")
    p.add_argument("name")
    p.add_argument("--org", required=True)
    p.add_argument("--engine", required=True, help="yugabyte, vitess, scylla, dragonfly, aerospike, mongodb")
    p.add_argument("--pop", required=True, help="lagos, johannesburg, frankfurt, ashburn, singapore, local")
    p.add_argument("--size", default="small", help="small, medium or large")
    p.add_argument("--version", help="engine version (default: the engine's current one)")
    p.add_argument("--deletion-protection", action="store_true", default=None)
    resources(p)
    common(p, wait=True)
    p.set_defaults(func=service_create)
    p = svc.add_parser("list", help="services of an organization")
    p.add_argument("--org", required=True)
    common(p)
    p.set_defaults(func=service_list)
    for action, func, helptext in (("get", service_get, "one service"), ("delete", service_delete, "delete a service"),
                                   ("scale", service_scale, "change a service's resources"),
                                   ("deletion-protection", service_protection,
                                    "turn deletion protection on or off (deleting needs it off)"),
                                   ("credentials", service_credentials, "connection URI and credentials")):
        p = svc.add_parser(action, help=helptext)
        p.add_argument("name")
        p.add_argument("--org", required=True)
        if action == "scale":
            resources(p)
        if action == "deletion-protection":
            p.add_argument("setting", choices=("on", "off"))
        common(p, wait=action not in ("get", "credentials"))
        p.set_defaults(func=func)

    mem = sub.add_parser("member", help="members of an organization and their roles").add_subparsers(
        dest="action", required=True)
    p = mem.add_parser("list", help="members and roles")
    p.add_argument("--org", required=True)
    common(p)
    p.set_defaults(func=member_list)
    for action, helptext in (("add", "add (invite) a user by their identity provider subject"),
                             ("set-role", "change a member's role"), ("remove", "remove a member")):
        p = mem.add_parser(action, help=helptext)
        p.add_argument("subject")
        p.add_argument("--org", required=True)
        p.add_argument("--issuer", help="the subject's identity provider (default: the API's default issuer)")
        if action != "remove":
            p.add_argument("--role", required=True,
                           help="org-owner, org-admin, org-member, service-admin or service-viewer")
        common(p, wait=True)
        p.set_defaults(func=member_change)

    op = sub.add_parser("operation", help="operations").add_subparsers(dest="action", required=True)
    p = op.add_parser("get", help="an operation's state, progress and steps")
    p.add_argument("id")
    common(p)
    p.set_defaults(func=operation_get)
    p = op.add_parser("wait", help="wait for an operation to finish (exit 1 when it fails)")
    p.add_argument("id")
    p.add_argument("--until", help="also stop at these states, comma-separated (e.g. Accepted)")
    p.add_argument("--timeout", type=float, default=600.0)
    common(p)
    p.set_defaults(func=operation_wait)
    p = op.add_parser("trace", help="the operation's trace (Jaeger): every span from the request to the PoP, "
                                    "as a tree with timings")
    p.add_argument("id")
    p.add_argument("--tracing-url", help="Jaeger (default: $DBAAS_TRACING_URL, the operation's trace link, or "
                                         "the local platform's)")
    common(p)
    p.set_defaults(func=operation_trace)
    p = op.add_parser("cancel", help="cancel a queued operation, or one awaiting its PoP (its commit is reverted)")
    p.add_argument("id")
    common(p, wait=True)
    p.set_defaults(func=operation_cancel)
    return {"org": org, "service": svc, "member": mem, "operation": op}


ERRORS = (ApiError,)
