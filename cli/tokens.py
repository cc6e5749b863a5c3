"""Where the CLI keeps its sign-ins: one token per platform instance, keyed by its API URL, in
`$DBAAS_CONFIG_DIR/tokens/` (default `~/.config/dbaas`), readable by their owner only; `$DBAAS_TOKEN`
overrides them. Used by `cli.auth` (which writes them) and `cli.client` (which sends them).
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path


def config_dir() -> Path:
    return Path(os.environ.get("DBAAS_CONFIG_DIR") or Path.home() / ".config" / "dbaas")


def token_file(url: str) -> Path:
    """Where the token for the API at ``url`` is kept: one file per instance."""
    name = re.sub(r"[^A-Za-z0-9.-]+", "_", url.rstrip("/").split("://", 1)[-1]).strip("_")
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:8]  # names that map to one file differ
    return config_dir() / "tokens" / f"{name}-{digest}"


def stored_token(url: str) -> str | None:
    if os.environ.get("DBAAS_TOKEN"):
        return os.environ["DBAAS_TOKEN"].strip()
    path = token_file(url)
    return path.read_text().strip() if path.exists() else None


def store(url: str, token: str) -> Path:
    path = token_file(url)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    os.replace(path.with_suffix(".tmp"), path)
    return path
