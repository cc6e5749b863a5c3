"""Entry point of the ``dbaas`` console command."""
from __future__ import annotations

import argparse
import sys

from cli import audit, auth, backups, cdc, keys, readmodels, stack, subscriptions, telemetry, tenant


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbaas", description="Control plane for a multi-engine DBaaS")
    sub = parser.add_subparsers(dest="group", required=True)
    stack.register(sub)
    groups = tenant.register(sub)
    backups.register(sub, groups["service"])
    telemetry.register(sub, groups["service"])
    cdc.register(sub)
    auth.register(sub)
    audit.register(sub)
    readmodels.register(sub)
    keys.register(sub)
    subscriptions.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except stack.ERRORS + tenant.ERRORS + keys.ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
