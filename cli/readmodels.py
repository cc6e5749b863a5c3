"""`dbaas projections rebuild [NAME ...]`: replay the event log into fresh read-model tables and
swap them in atomically (progress on stderr)."""
from __future__ import annotations

import argparse
import os

from deploy.stack import config as stack_config
from deploy.stack.components import kafka_access
from deploy.stack.launcher import Launcher


def rebuild(args) -> int:
    from projections import rebuild as rebuild_mod

    if not os.environ.get("DBAAS_DATABASE_URL"):
        launcher = Launcher(stack_config.resolve(args.home), say=lambda _m: None)
        by_name = {s.name: s.endpoint for s in launcher.status()}
        projector = kafka_access(launcher.ctx, "projector")  # what the projector may read, as it
        os.environ.update({"DBAAS_KAFKA_BOOTSTRAP": by_name["kafka"] or "",
                           "DBAAS_KAFKA_USERNAME": projector.username or "",
                           "DBAAS_KAFKA_PASSWORD": projector.password or "",
                           "DBAAS_REGISTRY_URL": by_name["registry"] or "",
                           "DBAAS_DATABASE_URL": by_name["postgres"] or ""})
    return rebuild_mod.main(args.names)


def register(sub: argparse._SubParsersAction) -> None:
    proj = sub.add_parser("projections", help="read models").add_subparsers(dest="action", required=True)
    p = proj.add_parser("rebuild", help="rebuild read models from the event log and swap them in")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="organizations, services, operations, members, backups (default all)")
    p.add_argument("--home", help="platform instance (default .data/stack); ignored when DBAAS_DATABASE_URL is set")
    p.set_defaults(func=rebuild)
