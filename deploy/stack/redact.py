"""Secrets kept off screens: what the launcher prints, ``stack status`` and the logs it shows
carry DSNs with ``***`` for the password, and the instance's generated secrets as ``***``.

Owns: the redaction rules. Imports nothing of the project. Callers that need the real values (a
script's ``--show-secrets``, the processes' environment) simply do not call these functions.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

# scheme://user:password@host — the password is whatever lies between the first ":" after the
# user and the "@" (URL-encoded passwords contain neither "@" nor "/").
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)(?P<password>[^@\s/]+)(?P<tail>@)")
# key=value connection strings and JDBC-style properties: password=…
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<password>'[^']*'|[^\s&;,]+)", re.IGNORECASE)
# Shorter values could be ordinary words: generated secrets are far longer.
MIN_SECRET_LENGTH = 12


def redact_dsn(dsn: str | None) -> str | None:
    """``postgresql://dbaas:s3cret@127.0.0.1:15432/dbaas`` → ``postgresql://dbaas:***@127.0.0.1:15432/dbaas``."""
    if not dsn:
        return dsn
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", dsn)
    return _KV_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every DSN password and every occurrence of one of ``secrets`` masked."""
    text = redact_dsn(text) or text
    for value in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text
