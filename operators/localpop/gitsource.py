"""The local PoP agent's read-only view of the GitOps remote: a bare mirror in the agent's state
folder, fetched on every sync, from which it lists the PoP's ServiceClaim files at the tip, reads
them, and finds the commits (with their trailers) that last touched or deleted each one.

Never commits or pushes. History is read incrementally: after the first full walk only the
commits since the previous tip are read (a full walk again if the branch was rewritten). File
contents are parsed once per blob.
May import: GitPython, structlog, the standard library and ``operators.localpop.claims``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git
import structlog

from operators.localpop.claims import (
    LOG_FORMAT,
    BackupClaim,
    Claim,
    History,
    InvalidClaim,
    parse_backup_claim,
    parse_claim,
    parse_history,
    pop_backup_path,
    pop_backup_pathspec,
    pop_cdc_path,
    pop_cdc_pathspec,
    pop_claim_path,
    pop_pathspec,
)

log = structlog.get_logger("operators.localpop.git")
REMOTE = "origin"


class GitUnavailable(Exception):
    """The GitOps remote could not be fetched or read: transient, the next sync tries again."""


@dataclass(frozen=True)
class Snapshot:
    """The PoP's claim files at ``tip``: path → Claim, or the reason the file cannot be read;
    path → the tenant folder it sits in; and the history of every claim path."""

    tip: str
    claims: dict[str, Claim | str]
    tenants: dict[str, str]
    history: History
    backups: dict[str, BackupClaim | str] | None = None  # path -> DatabaseBackup, or why unreadable
    connectors: dict[str, Any] | None = None  # path -> ConnectorClaim (a KafkaConnector), or why unreadable


class GitSource:
    def __init__(self, remote_url: str, mirror_dir: Path, pop: str, branch: str = "main"):
        self.remote_url = remote_url
        self.mirror_dir = Path(mirror_dir)
        self.pop = pop
        self.branch = branch
        self._repo: git.Repo | None = None
        self._claims: dict[str, Claim | str] = {}  # blob sha -> parsed claim or why it is unreadable
        self._history: History | None = None
        self._history_tip: str | None = None

    def snapshot(self) -> Snapshot | None:
        """Fetch and read the tip; None while the remote has no such branch yet."""
        try:
            tip = self._fetch()
            if tip is None:
                return None
            return self._read(tip)
        except git.GitCommandError as exc:
            raise GitUnavailable(f"the GitOps remote {self.remote_url} cannot be read: "
                                 f"{_stderr(exc)}") from None
        except (git.GitError, OSError, ValueError) as exc:
            raise GitUnavailable(f"the GitOps mirror {self.mirror_dir} cannot be used: {exc}") from None

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    # -- steps -------------------------------------------------------------------------------
    def _open(self) -> git.Repo:
        if self._repo is None:
            if (self.mirror_dir / "HEAD").exists():
                repo = git.Repo(self.mirror_dir)
            else:
                self.mirror_dir.mkdir(parents=True, exist_ok=True)
                repo = git.Repo.init(self.mirror_dir, bare=True)
            urls = [r.url for r in repo.remotes if r.name == REMOTE]
            if not urls:
                repo.create_remote(REMOTE, self.remote_url)
            elif urls[0] != self.remote_url:
                repo.remote(REMOTE).set_url(self.remote_url)
            self._repo = repo
        return self._repo

    def _fetch(self) -> str | None:
        repo = self._open()
        ref = f"refs/remotes/{REMOTE}/{self.branch}"
        try:
            repo.git.fetch("--quiet", "--no-tags", REMOTE, f"+refs/heads/{self.branch}:{ref}",
                           env={"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"})
        except git.GitCommandError as exc:
            if "couldn't find remote ref" in _stderr(exc).lower():
                return None
            raise
        return repo.git.rev_parse("--verify", f"{ref}^{{commit}}")

    def _read(self, tip: str) -> Snapshot:
        repo = self._open()
        listing = repo.git.ls_tree("-r", "--full-tree", tip, "--", "tenants/")
        blobs: dict[str, str] = {}
        backup_blobs: dict[str, str] = {}
        cdc_blobs: dict[str, str] = {}
        tenants: dict[str, str] = {}
        for line in listing.splitlines():
            meta, _, path = line.partition("\t")
            parts = meta.split()
            if len(parts) != 3 or parts[1] != "blob":
                continue
            if (where := pop_claim_path(path, self.pop)) is not None:
                blobs[path] = parts[2]
                tenants[path] = where[0]
            elif (where := pop_backup_path(path, self.pop)) is not None:
                backup_blobs[path] = parts[2]
                tenants[path] = where[0]
            elif (where := pop_cdc_path(path, self.pop)) is not None:
                cdc_blobs[path] = parts[2]
                tenants[path] = where[0]
        claims = {path: self._claim(repo, path, blob) for path, blob in blobs.items()}
        backups = {path: self._claim(repo, path, blob, parse_backup_claim) for path, blob in backup_blobs.items()}
        connectors = {path: self._claim(repo, path, blob, _parse_connector) for path, blob in cdc_blobs.items()}
        kept = {*blobs.values(), *backup_blobs.values(), *cdc_blobs.values()}
        self._claims = {blob: self._claims[blob] for blob in kept if blob in self._claims}
        return Snapshot(tip, claims, tenants, self._history_at(repo, tip), backups, connectors)

    def _claim(self, repo: git.Repo, path: str, blob: str, parse=parse_claim) -> Claim | str:
        if blob not in self._claims:
            text = repo.git.cat_file("blob", blob, strip_newline_in_stdout=False)
            try:
                self._claims[blob] = parse(text, path)
            except InvalidClaim as exc:  # the agent logs it and leaves what it applied alone
                self._claims[blob] = str(exc)
        return self._claims[blob]

    def _history_at(self, repo: git.Repo, tip: str) -> History:
        if self._history is not None and self._history_tip == tip:
            return self._history
        since = self._history_tip if self._history is not None else None
        if since is not None and not self._is_ancestor(repo, since, tip):
            log.warning("the GitOps branch was rewritten: reading its whole history again", old_tip=since, tip=tip)
            since = None
        output = repo.git.log("--no-renames", "--name-status", LOG_FORMAT,
                              f"{since}..{tip}" if since else tip, "--", pop_pathspec(self.pop),
                              pop_backup_pathspec(self.pop), pop_cdc_pathspec(self.pop))
        newer = parse_history(output)
        self._history = self._history.then(newer) if since and self._history else newer
        self._history_tip = tip
        return self._history

    @staticmethod
    def _is_ancestor(repo: git.Repo, older: str, newer: str) -> bool:
        try:
            repo.git.merge_base("--is-ancestor", older, newer)
            return True
        except git.GitCommandError:
            return False


def _stderr(exc: git.GitCommandError) -> str:
    text = (exc.stderr or str(exc)).strip()
    text = text.removeprefix("stderr:").strip().strip("'").strip()
    return " ".join(text.split())


def _parse_connector(text: str, path: str):
    from operators.localpop.cdc import InvalidConnector, parse_connector

    try:
        return parse_connector(text, path)
    except InvalidConnector as exc:
        raise InvalidClaim(str(exc)) from None
