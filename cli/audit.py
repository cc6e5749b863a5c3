"""`dbaas audit tail|replay`: an organization's audit trail, and its state at a past moment."""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timedelta, timezone

from cli.client import ApiError, Client


def _line(r: dict) -> str:
    what = f"{r['action']} {r['outcome']}" if r["kind"] == "command" else r["action"]
    why = f" — {r['reason_code']}: {r['message']}" if r.get("reason_code") else ""
    return (f"{r['occurred_at']}  {r['actor'] or '-':<20} {what:<36} {r['aggregate_type']} "
            f"{r['aggregate_id']}  corr={r['correlation_id']}{why}")


def _moment(text: str, option: str = "--since") -> datetime:
    """`10m`, `2h`, `3d` ago, or an ISO 8601 moment (UTC when it names no zone)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].isdigit():
        return datetime.now(timezone.utc) - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(f"{option} {text!r}: give a duration (10m, 2h, 3d) or an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def tail(args) -> int:
    c = Client(args.api_url)
    since, seen = _moment(args.since), set()
    while True:
        page = c.get(f"/organizations/{args.org}/audit", since=since.isoformat(), limit=1000,
                     actor=args.actor, action=args.action_filter, outcome=args.outcome)
        fresh = [r for r in page["items"] if r["audit_id"] not in seen]
        if args.json and not args.follow:
            print(json.dumps(fresh, indent=2))
        else:
            for r in fresh:
                print(json.dumps(r) if args.json else _line(r), flush=True)
        seen.update(r["audit_id"] for r in fresh)
        if page["items"]:
            since = datetime.fromisoformat(page["items"][-1]["occurred_at"])
        if not args.follow and not page["next_since"]:
            return 0
        if not page["next_since"]:
            time.sleep(1.0)  # following: the next poll of the trail


def replay(args) -> int:
    until = _moment(args.until, "--until")
    print(f"replaying the event log of {args.org} up to {until.isoformat()}…", file=sys.stderr)
    doc = Client(args.api_url).get(f"/organizations/{args.org}/replay", until=until.isoformat())
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{args.org} as of {doc['until']} ({doc['events']} events)")
    for s in doc["read_models"]["services"]:
        print(f"  service {s['name']:<20} {s['engine']:<10} {s['pop']:<13} {s['status']:<12} "
              f"cpu {s['cpu']:g} mem {s['memory_gb']} GiB storage {s['storage_gb']} GiB x{s['replicas']}")
    for m in doc["read_models"]["members"]:
        if m["role"]:
            print(f"  member  {m['subject']:<20} {m['role']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="an organization's audit trail and its past").add_subparsers(
        dest="action", required=True)
    p = audit.add_parser("tail", help="audit records (every judged command and event), oldest first")
    p.add_argument("--org", required=True)
    p.add_argument("--since", default="24h", help="duration ago (10m, 2h, 3d) or ISO 8601 time")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    p.add_argument("--actor")
    p.add_argument("--action", dest="action_filter")
    p.add_argument("--outcome", choices=["accepted", "rejected"])
    p.add_argument("--json", action="store_true")
    p.add_argument("--api-url")
    p.set_defaults(func=tail)
    p = audit.add_parser("replay", help="the organization's state as of a moment, from the event log")
    p.add_argument("--org", required=True)
    p.add_argument("--until", required=True, help="ISO 8601 time (or a duration ago: 10m, 2h)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--api-url")
    p.set_defaults(func=replay)
