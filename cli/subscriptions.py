"""`dbaas subscription create|list|revoke`: Kafka credentials that read an organization's own
streams (change data capture, audit, alerts, metrics). `create` prints a ready client configuration
once — the password is kept nowhere to show again."""
from __future__ import annotations

import argparse
import json

from cli.client import ApiError, Client
from cli.tenant import _judged, _wait


def client_properties(client: dict) -> str:
    """The configuration as properties (librdkafka and Java clients read these names)."""
    return "\n".join([
        f"bootstrap.servers={client['bootstrap_servers']}",
        f"security.protocol={client['security_protocol']}",
        f"sasl.mechanism={client['sasl_mechanism']}",
        f"sasl.username={client['sasl_username']}",
        f"sasl.password={client['sasl_password']}",
        f"# consumer groups must start with: {client['group_id_prefix']}",
        f"group.id={client['group_id_prefix']}consumer-1",
        "# topics it may read (a trailing * is a prefix):",
        *(f"#   {t}" for t in client["topics"]),
    ])


def create(args) -> int:
    c = Client(args.api_url)
    created = c.post(f"/organizations/{args.org}/subscriptions", {"name": args.name})
    if not args.no_wait:
        op = _wait(c, created["operation_id"], set(), args.timeout, progress=not args.json)
        if op["state"] != "Succeeded":
            raise ApiError(f"subscription {args.name} was not granted: {op.get('message') or op['state']}")
    if args.json:
        print(json.dumps(created, indent=2))
    else:
        print(f"# subscription {args.name} of {args.org} ({created['subscription_id']}); "
              "the password is shown this once")
        print(client_properties(created["client"]))
    return 0


def list_(args) -> int:
    items = Client(args.api_url).get(f"/organizations/{args.org}/subscriptions")
    if args.json:
        print(json.dumps(items, indent=2))
    else:
        for s in items:
            print(f"{s['name']:<24} {s['status']:<9} {s['principal']:<40} {s['subscription_id']}")
    return 0


def revoke(args) -> int:
    c = Client(args.api_url)
    match = [s for s in c.get(f"/organizations/{args.org}/subscriptions")
             if args.subscription in (s["name"], s["subscription_id"]) and s["status"] not in ("Revoked", "Failed")]
    if not match:
        raise ApiError(f"organization {args.org} has no subscription {args.subscription} in use")
    accepted = c.delete(f"/organizations/{args.org}/subscriptions/{match[0]['subscription_id']}")
    if not args.no_wait:
        op = _wait(c, accepted["operation_id"], set(), args.timeout, progress=not args.json)
        accepted = {**accepted, "state": op["state"]}
    else:
        accepted = _judged(c, accepted, args)
    print(json.dumps(accepted, indent=2) if args.json else
          f"subscription {match[0]['name']} of {args.org}: revoke {accepted.get('state', 'submitted')}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    def common(p, wait: bool = False):
        p.add_argument("--org", required=True)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--api-url", help="control plane API (default: the local platform, or $DBAAS_API_URL)")
        if wait:
            p.add_argument("--no-wait", action="store_true", help="return once published, before it is granted")
            p.add_argument("--timeout", type=float, default=60.0)

    group = sub.add_parser("subscription", help="Kafka credentials reading an organization's streams")
    actions = group.add_subparsers(dest="action", required=True)
    p = actions.add_parser("create", help="create one and print its client configuration (org-owner, org-admin)")
    p.add_argument("name", help="a DNS label")
    common(p, wait=True)
    p.set_defaults(func=create)
    p = actions.add_parser("list", help="the organization's subscriptions (any member)")
    common(p)
    p.set_defaults(func=list_)
    p = actions.add_parser("revoke", help="take one's credential and ACLs away (org-owner, org-admin)")
    p.add_argument("subscription", help="its name or id")
    common(p, wait=True)
    p.set_defaults(func=revoke)
