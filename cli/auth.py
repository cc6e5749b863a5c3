"""`dbaas auth login|whoami|logout`: the token the CLI sends.

`login --dev` signs a token with the development issuer of a local platform (its key is in the
platform's `secrets.json`, so this works only on the machine that runs it) — DEVELOPMENT ONLY; a
real deployment's users bring a token from their identity provider (`login --token`, or
`$DBAAS_TOKEN`). Tokens are stored per platform instance, keyed by its API URL, in
`$DBAAS_CONFIG_DIR/tokens/` (default `~/.config/dbaas`), readable by their owner only: two
platforms on one machine keep their own sign-ins.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cli.client import ApiError, Client, api_url
from cli.tokens import store, token_file
from deploy.stack import config as stack_config
from runtime import devissuer


def _dev_key(home: str | None) -> str:
    base = Path(home) if home else Path(os.environ.get("DBAAS_STACK_HOME") or stack_config.default_home())
    secrets = base / "secrets.json"
    if not secrets.exists():
        raise ApiError(f"no local platform at {base} (no secrets.json): start it with `make up`, or pass --home")
    key = json.loads(secrets.read_text()).get(devissuer.SECRET_NAME)
    if not key:
        raise ApiError(f"the platform at {base} has no development issuer key yet: run `make up` again")
    sign_in = stack_config.resolve(base).sign_in
    if not sign_in.development:
        raise ApiError(f"the platform at {base} does not trust the development issuer (it trusts "
                       f"{', '.join(sign_in.issuer_names) or 'no issuer'}): sign in with --token from your "
                       "identity provider, or start it with `dbaas stack up --dev-issuer` (DEVELOPMENT ONLY)")
    return key


def login(args) -> int:
    if args.dev == bool(args.token):
        raise ApiError("choose one: --dev (a local platform's development issuer) or --token TOKEN")
    if args.dev:
        if not args.user:
            raise ApiError("--dev needs --user (the subject the token names)")
        orgs: dict[str, list[str]] = {}
        for org in args.org or []:
            orgs.setdefault(org, []).extend(args.role or [])
        if args.role and not args.org:
            raise ApiError("--role grants a role in an organization: give --org too")
        token = devissuer.mint(_dev_key(args.home), args.user, orgs, ttl_seconds=int(args.ttl_hours * 3600))
        print("development token: for a local platform only", file=sys.stderr)
    else:
        token = args.token.strip()
    if args.print_token:
        print(token)
        return 0
    path = store(api_url(args.api_url, args.home), token)
    print(f"signed in as {args.user or 'the token subject'}; token stored in {path}", file=sys.stderr)
    return 0


def whoami(args) -> int:
    me = Client(args.api_url).get("/users/me")
    if args.json:
        print(json.dumps(me, indent=2))
    else:
        print(f"{me['subject']} ({me['issuer']}{', development token' if me['development_token'] else ''})")
        for m in me["organizations"]:
            print(f"  {m['organization']}: {', '.join(m['roles'])}")
    return 0


def logout(args) -> int:
    url = api_url(args.api_url, args.home)
    token_file(url).unlink(missing_ok=True)
    print(f"signed out of {url}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    auth = sub.add_parser("auth", help="sign in: the token the CLI sends").add_subparsers(dest="action", required=True)
    p = auth.add_parser("login", help="store a token (--dev: from the local platform's development issuer)")
    p.add_argument("--dev", action="store_true", help="DEVELOPMENT ONLY: sign with the local platform's dev issuer")
    p.add_argument("--user", help="the subject (sub) of the token")
    p.add_argument("--org", action="append", help="organization the token grants --role in (repeatable)")
    p.add_argument("--role", action="append", help="role granted in each --org (repeatable)")
    p.add_argument("--ttl-hours", type=float, default=8.0)
    p.add_argument("--home", help="the local platform's folder (default: $DBAAS_STACK_HOME or .data/stack)")
    p.add_argument("--token", help="a token from your identity provider")
    p.add_argument("--print-token", action="store_true", help="print the token instead of storing it")
    p.add_argument("--api-url", help="the API the token is for (default: $DBAAS_API_URL, or the API of --home); "
                                     "each API keeps its own token")
    p.set_defaults(func=login)
    p = auth.add_parser("whoami", help="who the API says you are, and your organizations")
    p.add_argument("--api-url")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=whoami)
    p = auth.add_parser("logout", help="forget the token stored for this API")
    p.add_argument("--api-url")
    p.add_argument("--home", help="the local platform's folder (default: $DBAAS_STACK_HOME or .data/stack)")
    p.set_defaults(func=logout)
