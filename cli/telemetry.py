"""`dbaas service metrics NAME --org O` (a small terminal chart of a service's metrics) and
`dbaas alerts list|tail --org O` (an organization's alerts; `tail` follows new ones by polling)."""
from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone

from cli.client import Client
from cli.tenant import _service_by_name

BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None], top: float | None = None) -> str:
    """One character per value, its height against `top` (default: the largest value); a space for
    None (a bucket without a sample)."""
    known = [v for v in values if v is not None]
    ceiling = top if top else (max(known) if known else 0)
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif ceiling <= 0:
            out.append(BLOCKS[0])
        else:
            level = min(max(v / ceiling, 0.0), 1.0)
            out.append(BLOCKS[min(len(BLOCKS) - 1, int(level * len(BLOCKS)))])
    return "".join(out)


def bar(fraction: float, width: int = 30) -> str:
    """A horizontal bar: `fraction` of `width` filled (over 1 is drawn full)."""
    filled = round(min(max(fraction, 0.0), 1.0) * width)
    return "█" * filled + "░" * (width - filled)


def size(n: float | None) -> str:
    if n is None:
        return "?"
    value, unit = float(n), "B"
    for name in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, name
    return f"{value:.0f} {unit}" if unit == "B" or value >= 10 else f"{value:.1f} {unit}"


def _number(x: float | None) -> str:
    return "?" if x is None else f"{x:.1f}".rstrip("0").rstrip(".")


def chart(doc: dict) -> str:
    """The answer of `GET /services/{id}/metrics` as a few lines of text."""
    points, latest = doc["points"], doc["latest"]
    step = doc["step_seconds"]
    head = (f"service {doc['name'] or doc['service_id']} ({doc['engine']}): {len(points)} point(s), one per "
            f"{_duration(step)}, from {doc['since'][:19]}Z to {doc['until'][:19]}Z")
    if latest is None:
        return head + "\nno samples in this range yet (the PoP samples its services every 15 s by default)"
    lines = [head, f"latest sample {latest['sampled_at']}"]
    limit = latest["storage_limit_bytes"]
    storage = [p["storage_bytes"]["max"] for p in points]
    used = latest["storage_used"]
    tail = f"{size(latest['storage_bytes'])} of {size(limit)}" if limit else f"{size(latest['storage_bytes'])}"
    if used is not None:
        tail += f"  {used:.0%}  {bar(used)}"
    estimated = " (estimated)" if latest["storage_estimated"] else ""
    lines.append(f"storage      {sparkline(storage, limit)}  {tail}{estimated}")
    conns = [p["connections"]["max"] for p in points]
    most = latest["max_connections"]
    peak = max((c for c in conns if c is not None), default=0)
    lines.append(f"connections  {sparkline(conns, most)}  {latest['connections']} now, {int(peak)} at most"
                 + (f", of {most}" if most else ""))
    for key, label in (("transactions_per_s", "tx/s"), ("ops_per_s", "ops/s")):
        values = [p[key]["avg"] for p in points]
        if any(v is not None for v in values) or latest[key] is not None:
            peak_rate = max((p[key]["max"] for p in points if p[key]["max"] is not None), default=None)
            lines.append(f"{label:<12} {sparkline(values)}  {_number(latest[key])} now, {_number(peak_rate)} at most")
    return "\n".join(lines)


def _duration(seconds: int) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % n == 0:
            return f"{seconds // n}{unit}"
    return f"{seconds}s"


def service_metrics(args) -> int:
    c = Client(args.api_url)
    service = _service_by_name(c, args.org, args.name)
    doc = c.get(f"/services/{service['id']}/metrics", since=args.since, until=args.until, step=args.step)
    print(json.dumps(doc, indent=2) if args.json else chart(doc))
    return 0


def alert_line(a: dict) -> str:
    when = a["raised_at"][:19] + "Z"
    state = "RAISED" if a["state"] == "raised" else "resolved"
    ended = f" (resolved {a['resolved_at'][:19]}Z)" if a.get("resolved_at") else ""
    return f"{state:<8} {when}  {a['severity']:<8} {a['kind']:<18} {a['message']}{ended}"


def alerts_list(args) -> int:
    page = Client(args.api_url).get(f"/organizations/{args.org}/alerts", state="open" if args.open else "all",
                                    limit=args.limit)
    if args.json:
        print(json.dumps(page["items"], indent=2))
        return 0
    if not page["items"]:
        print(f"no {'open ' if args.open else ''}alerts in organization {args.org}")
    for a in page["items"]:
        print(alert_line(a))
    return 0


def alerts_tail(args) -> int:
    """Print the organization's alerts raised or resolved since `--since`, then every new one and
    every change of state, polling the API."""
    from cli.audit import _moment

    c = Client(args.api_url)
    since = _moment(args.since)
    seen: set[tuple[str, str]] = set()
    while True:
        items = c.get(f"/organizations/{args.org}/alerts", state="all", limit=1000)["items"]
        fresh = [a for a in reversed(items) if (a["alert_id"], a["state"]) not in seen
                 and _changed_at(a) >= since]
        for a in fresh:
            print(json.dumps(a) if args.json else alert_line(a), flush=True)
        seen.update((a["alert_id"], a["state"]) for a in items)
        if args.once:
            return 0
        time.sleep(args.interval)


def _changed_at(a: dict) -> datetime:
    text = a.get("resolved_at") or a["raised_at"]
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def register(sub: argparse._SubParsersAction, service: argparse._SubParsersAction) -> None:
    """`dbaas alerts …`, and `metrics` under `dbaas service` (`service`)."""
    def common(p) -> None:
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--api-url", help="control plane API (default: the local platform, or $DBAAS_API_URL)")

    p = service.add_parser("metrics", help="a service's storage against its size, connections and tx/s, as a chart")
    p.add_argument("name")
    p.add_argument("--org", required=True)
    p.add_argument("--since", default="1h", help="duration ago (15m, 6h, 2d) or RFC 3339 time; default 1h")
    p.add_argument("--until", help="duration ago or RFC 3339 time; default now")
    p.add_argument("--step", help="one point per this long (60, 30s, 5m, 1h); default: up to 120 points")
    common(p)
    p.set_defaults(func=service_metrics)

    alerts = sub.add_parser("alerts", help="an organization's alerts").add_subparsers(dest="action", required=True)
    p = alerts.add_parser("list", help="alerts, newest first (open ones, and those resolved in the last 30 days)")
    p.add_argument("--org", required=True)
    p.add_argument("--open", action="store_true", help="only alerts not resolved")
    p.add_argument("--limit", type=int, default=100)
    common(p)
    p.set_defaults(func=alerts_list)
    p = alerts.add_parser("tail", help="print alerts as they are raised and resolved (polls the API)")
    p.add_argument("--org", required=True)
    p.add_argument("--since", default="1h", help="first print those raised or resolved since (duration or time)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between two polls")
    p.add_argument("--once", action="store_true", help="print what there is and stop")
    common(p)
    p.set_defaults(func=alerts_tail)
