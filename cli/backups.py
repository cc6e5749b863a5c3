"""Backups and restores on the command line: `dbaas backup create|list|get|delete|policy …` and
`dbaas service recovery-window|restore …` (each with `--json` for scripts).

Writes wait until the command was judged (a rejection is an error with its reason), printing the
operation's progress on stderr; `--wait` follows the operation to its end (a backup Completed, a
restored service Ready) and exits 1 when it fails.
"""
from __future__ import annotations

import argparse
import json
import sys

from cli.client import ApiError, Client
from cli.tenant import _judged, _out, _service_by_name, _wait

JUDGED_TIMEOUT = 60.0
FINISHED_TIMEOUT = 900.0  # a backup or a restore waits for its PoP: minutes, not seconds


def _client(args) -> Client:
    return Client(args.api_url)


def _finish(client: Client, accepted: dict, args) -> tuple[dict, int]:
    """Judged (unless --no-wait), then followed to its end with --wait; the answer and the exit code."""
    given = args.timeout
    args.timeout = given if given is not None else JUDGED_TIMEOUT
    accepted = _judged(client, accepted, args)
    if args.no_wait or not getattr(args, "wait", False):
        return accepted, 0
    op = _wait(client, accepted["operation_id"], set(), given if given is not None else FINISHED_TIMEOUT,
               progress=not args.json)
    done = {**accepted, "state": op["state"], "operation": op}
    if op["state"] != "Succeeded":
        print(f"operation {op['id']}: {op['state']} — {op.get('reason_code')}: {op.get('message')}",
              file=sys.stderr)
        return done, 1
    return done, 0


def _source(client: Client, org: str, name: str) -> dict:
    """The service named `name`: the live one, else the last one deleted (its backups and its
    recovery window outlive it)."""
    try:
        return _service_by_name(client, org, name)
    except ApiError:
        gone = client.get("/services", org=org, name=name, limit=500)["items"]
        if not gone:
            raise
        return gone[-1]


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} TiB"


def backup_create(args) -> int:
    c = _client(args)
    svc = _service_by_name(c, args.org, args.name)
    done, code = _finish(c, c.post(f"/services/{svc['id']}/backups", {}), args)
    if code == 0 and done.get("state") == "Succeeded":
        done["backup"] = c.get(f"/backups/{done['backup_id']}")
    _out(args, done, f"backup {done['backup_id']} of {args.name}: {done.get('state', 'submitted')} "
                     f"(operation {done['operation_id']})")
    return code


def backup_list(args) -> int:
    c = _client(args)
    svc = _source(c, args.org, args.name)
    items = c.get(f"/services/{svc['id']}/backups", status=args.status, limit=500)["items"]
    if args.json:
        print(json.dumps(items, indent=2, default=str))
        return 0
    if not items:
        print(f"service {args.name} has no backups" + (f" {args.status}" if args.status else ""))
        return 0
    print(f"{'BACKUP ID':<36}  {'STATUS':<9}  {'TAKEN (OR REQUESTED) AT':<32}  {'SIZE':>10}  KIND")
    for b in items:
        when = b["taken_at"] or b["requested_at"]
        kind = f"scheduled {b['slot']}" if b["slot"] else "on demand"
        if b["pitr"]:
            kind += ", PITR base"
        print(f"{b['backup_id']:<36}  {b['status']:<9}  {when:<32}  {_size(b['size_bytes']):>10}  {kind}"
              + (f"  ({b['reason']})" if b["reason"] else ""))
    return 0


def backup_get(args) -> int:
    b = _client(args).get(f"/backups/{args.id}")
    _out(args, b, "\n".join(f"{k}: {v}" for k, v in b.items()))
    return 0


def backup_delete(args) -> int:
    c = _client(args)
    done, code = _finish(c, c.delete(f"/backups/{args.id}"), args)
    _out(args, done, f"deleting backup {args.id}: {done.get('state', 'submitted')} "
                     f"(operation {done['operation_id']})")
    return code


def _show_policy(args, p: dict) -> None:
    if args.json:
        print(json.dumps(p, indent=2))
        return
    retain = [f"{p['retain_count']} backups" if p["retain_count"] else "",
              f"{p['retain_days']} days" if p["retain_days"] else ""]
    pitr = "on" if p["pitr"] else "off"
    if not p["pitr_supported"]:
        pitr += f" (engine {p['engine']} restores backup instants only)"
    print(f"backup policy of {args.name} ({p['engine']})")
    print(f"  schedule:  {p['schedule'] + ' (UTC)' if p['schedule'] else 'none (on demand only)'}")
    print(f"  retention: {', '.join(r for r in retain if r) or 'no limit'}")
    print(f"  pitr:      {pitr}")
    print(f"  set at:    {p['set_at'] or 'never'}")


def backup_policy(args) -> int:
    c = _client(args)
    svc = _service_by_name(c, args.org, args.name)
    path = f"/services/{svc['id']}/backup-policy"
    current = c.get(path)
    changes = {"schedule": args.schedule, "retain_count": args.retain_count, "retain_days": args.retain_days,
               "pitr": args.pitr}
    if not args.no_schedule and all(v is None for v in changes.values()):
        _show_policy(args, current)
        return 0
    body = {k: current[k] for k in ("schedule", "retain_count", "retain_days", "pitr")}
    body.update({k: v for k, v in changes.items() if v is not None})
    if args.no_schedule:
        body["schedule"] = None
    done, code = _finish(c, c.put(path, body), args)
    _out(args, {**done, "policy": body}, f"backup policy of {args.name}: {done.get('state', 'submitted')} "
                                         f"(operation {done['operation_id']})")
    return code


def recovery_window(args) -> int:
    c = _client(args)
    svc = _source(c, args.org, args.name)
    w = c.get(f"/services/{svc['id']}/recovery-window")
    if args.json:
        print(json.dumps(w, indent=2))
        return 0
    print(f"recovery window of {args.name} ({w['engine']}) as of {w['as_of']}")
    if w["pitr"]:
        print(f"  any time from {w['earliest']} to {w['latest']}")
    else:
        print(f"  {w['reason']}")
    print(f"  backup instants: {len(w['instants']) or 'none'}")
    for i in w["instants"]:
        print(f"    {i['taken_at']}  {i['backup_id']}")
    if w["gaps"]:
        print(f"  failed scheduled backups: {len(w['gaps'])}")
        for g in w["gaps"]:
            print(f"    {g['slot']}  {g['backup_id']}  {g['reason'] or ''}")
    return 0


def service_restore(args) -> int:
    c = _client(args)
    svc = _source(c, args.org, args.name)
    body = {"name": args.new_name, "backup_id": args.backup, "to_time": args.to_time, "pop": args.pop,
            "size": args.size, "deletion_protection": args.deletion_protection}
    accepted = c.post(f"/services/{svc['id']}/restore", {k: v for k, v in body.items() if v is not None})
    done, code = _finish(c, accepted, args)
    source = f"backup {args.backup}" if args.backup else args.to_time
    _out(args, done, f"service {args.new_name} ({done['service_id']}) restored from {args.name} at {source}: "
                     f"{done.get('state', 'submitted')} (operation {done['operation_id']})")
    return code


def _common(p: argparse.ArgumentParser, *, write: bool = False, follow: bool = False) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--api-url", help="control plane API (default: the local platform, or $DBAAS_API_URL)")
    if write:
        p.add_argument("--no-wait", action="store_true", help="return once published, before judgement")
        p.add_argument("--timeout", type=float, default=None,
                       help=f"seconds to wait (default {JUDGED_TIMEOUT:.0f}, with --wait {FINISHED_TIMEOUT:.0f})")
    if follow:
        p.add_argument("--wait", action="store_true", help="follow the operation to its end, showing progress")


def register(sub: argparse._SubParsersAction, service: argparse._SubParsersAction) -> None:
    """`dbaas backup …`, and `recovery-window` and `restore` under `dbaas service` (`service`)."""
    bk = sub.add_parser("backup", help="backups of database services").add_subparsers(dest="action", required=True)
    p = bk.add_parser("create", help="back a service up now")
    p.add_argument("name", help="the service")
    p.add_argument("--org", required=True)
    _common(p, write=True, follow=True)
    p.set_defaults(func=backup_create)

    p = bk.add_parser("list", help="a service's backups, newest first (deleted ones with --status Deleted)")
    p.add_argument("name", help="the service")
    p.add_argument("--org", required=True)
    p.add_argument("--status", choices=("Requested", "Running", "Completed", "Failed", "Deleting", "Deleted"))
    _common(p)
    p.set_defaults(func=backup_list)

    p = bk.add_parser("get", help="one backup and its manifest")
    p.add_argument("id", help="the backup id")
    _common(p)
    p.set_defaults(func=backup_get)

    p = bk.add_parser("delete", help="delete a completed backup (the PoP deletes its stored objects)")
    p.add_argument("id", help="the backup id")
    _common(p, write=True, follow=True)
    p.set_defaults(func=backup_delete)

    p = bk.add_parser("policy", help="a service's backup policy; options change it")
    p.add_argument("name", help="the service")
    p.add_argument("--org", required=True)
    schedule = p.add_mutually_exclusive_group()
    schedule.add_argument("--schedule", metavar="CRON", help='five-field cron in UTC, e.g. "0 3 * * *" (03:00 daily)')
    schedule.add_argument("--no-schedule", action="store_true", help="no scheduled backups (on demand only)")
    p.add_argument("--retain-count", type=int, metavar="N", help="backups kept (0: no limit by count)")
    p.add_argument("--retain-days", type=int, metavar="D", help="days a backup is kept (0: no limit by age)")
    p.add_argument("--pitr", action=argparse.BooleanOptionalAction, default=None,
                   help="archive the log for point-in-time recovery (yugabyte, vitess)")
    _common(p, write=True)
    p.set_defaults(func=backup_policy)

    p = service.add_parser("recovery-window", help="the backups and the span of time a service restores to")
    p.add_argument("name")
    p.add_argument("--org", required=True)
    _common(p)
    p.set_defaults(func=recovery_window)

    p = service.add_parser("restore", help="create a new service from a backup or a point in time of NAME")
    p.add_argument("name", help="the service whose data is restored")
    p.add_argument("--org", required=True)
    point = p.add_mutually_exclusive_group(required=True)
    point.add_argument("--to-time", metavar="T", help="a time of its recovery window (RFC 3339, with a zone)")
    point.add_argument("--backup", metavar="ID", help="one of its completed backups")
    p.add_argument("--name", dest="new_name", metavar="NEW", required=True, help="the new service's name")
    p.add_argument("--pop", help="default: the source's PoP")
    p.add_argument("--size", help="small, medium or large (default: the source's)")
    p.add_argument("--deletion-protection", action="store_true", default=None)
    _common(p, write=True, follow=True)
    p.set_defaults(func=service_restore)


ERRORS = (ApiError,)
