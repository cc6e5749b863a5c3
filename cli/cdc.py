"""Change data capture on the command line: `dbaas cdc enable|disable|status NAME --org ORG`
(each with `--json`).

Writes wait until the command was judged (a refusal — an engine without a change-data-capture
source, a service not ready — is an error with its reason), printing the operation's progress on
stderr; `--wait` follows the operation until the connector runs (or is removed) and exits 1 when
it fails. `status` shows the stream and the topics to consume.
"""
from __future__ import annotations

import argparse

from cli.backups import _client, _common, _finish
from cli.tenant import _out, _service_by_name


def cdc_enable(args) -> int:
    c = _client(args)
    svc = _service_by_name(c, args.org, args.name)
    done, code = _finish(c, c.post(f"/services/{svc['id']}/cdc", {"tables": args.table or []}), args)
    _out(args, done, f"CDC of {args.name}: {done.get('state', 'submitted')} (operation {done['operation_id']})")
    return code


def cdc_disable(args) -> int:
    c = _client(args)
    svc = _service_by_name(c, args.org, args.name)
    done, code = _finish(c, c.delete(f"/services/{svc['id']}/cdc"), args)
    _out(args, done, f"CDC of {args.name} off: {done.get('state', 'submitted')} (operation {done['operation_id']})")
    return code


def cdc_status(args) -> int:
    svc = _service_by_name(_client(args), args.org, args.name)
    stream = svc.get("cdc")
    if stream is None:
        _out(args, {"service": args.name, "cdc": None}, f"CDC was never enabled on {args.name}")
        return 0
    tables = ", ".join(stream["tables"]) or "every table"
    text = [f"CDC of {args.name} ({svc['engine']}): {stream['status']}",
            f"  connector:  {stream['connector']}",
            f"  tables:     {tables}",
            f"  topics:     {stream['topic_prefix']}.<table>" + (
                "  (vitess: <keyspace>.<table>)" if svc["engine"] == "vitess" else ""),
            f"  operation:  {stream['operation_id']}"]
    if stream.get("reason"):
        text.append(f"  reason:     {stream['reason']}")
    _out(args, {"service": args.name, "service_id": svc["id"], "cdc": stream}, "\n".join(text))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    cdc = sub.add_parser("cdc", help="change data capture of database services").add_subparsers(
        dest="action", required=True)
    p = cdc.add_parser("enable", help="stream a service's changes to its CDC topics (Avro, schema registry)")
    p.add_argument("name", help="the service")
    p.add_argument("--org", required=True)
    p.add_argument("--table", action="append", metavar="TABLE",
                   help="a table to capture (repeatable; default: every table)")
    _common(p, write=True, follow=True)
    p.set_defaults(func=cdc_enable)

    p = cdc.add_parser("disable", help="stop a service's change stream (connector, slot and publication go)")
    p.add_argument("name", help="the service")
    p.add_argument("--org", required=True)
    _common(p, write=True, follow=True)
    p.set_defaults(func=cdc_disable)

    p = cdc.add_parser("status", help="a service's change stream and its topics")
    p.add_argument("name", help="the service")
    p.add_argument("--org", required=True)
    _common(p)
    p.set_defaults(func=cdc_status)
