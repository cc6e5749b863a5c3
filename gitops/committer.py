"""The GitOps committer: writes files into the GitOps repository, one commit per real change.

Role: owns every write to the GitOps remote. A saga hands it ``{path: text | None}`` plus the
operation and correlation ids; it makes the remote's ``main`` contain exactly that content:

- **idempotent by content**: it commits only when the tree changes, so re-applying an operation
  that already landed is harmless (``changed=False``, current tip returned);
- **traceable**: each commit message ends with ``Operation-Id:`` and ``Correlation-Id:`` trailers
  (and ``Trace-Id:``, the W3C ``traceparent`` of the span that made it, when one is given), and
  :meth:`GitOpsCommitter.find_commit` finds a pushed commit by operation id;
- **grouped**: :meth:`GitOpsCommitter.apply_group` makes one commit (and one push) of the changes
  of many operations. Its message carries each operation's trailers in turn (``Operation-Id:``,
  ``Correlation-Id:``, ``Trace-Id:``) followed by one ``Operation-File: <operation id> <path>``
  per file that operation changed, so each operation is still found by its own trailer, and
  :meth:`GitOpsCommitter.before` can revert one operation of a group alone. An operation whose
  files the repository already holds is left out of the commit (``changed=False``), as
  :meth:`apply` leaves out a change that changes nothing. A group in which only one operation
  changes something is committed exactly as :meth:`apply` commits it. Changes that must stay
  commits of their own (``apart``) are committed just before the group and pushed with it; with
  ``once``, operations whose trailer is in the history already are found in the same fetch and
  not committed again;
- **safe under concurrency**: it never merges. Each attempt resets its private clone to the
  remote tip, re-applies the changes by content and pushes fast-forward only. A rejected push
  (another committer won the race) is retried with capped exponential backoff and full jitter;
  history stays linear.

Many committers (threads or processes) may share one remote; each needs its own ``workdir``
(one instance is thread-safe, and a workdir is flock-ed, so two instances on one workdir wait
for each other instead of corrupting it).

Imports: GitPython, structlog, standard library and ``gitops.errors``/``gitops.layout``; takes
plain values and knows nothing of commands, events, processors or projections.
"""

from __future__ import annotations

import fcntl
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import git

from gitops.errors import (
    GitOpsError,
    InvalidChange,
    PermanentGitOpsError,
    PushConflict,
    RemoteRejected,
    TransientGitOpsError,
    WorkdirMismatch,
)
from gitops.layout import validate_repo_path

try:  # structlog is a project dependency; the fallback keeps this module usable without it.
    import structlog

    _log: Any = structlog.get_logger(__name__)
except ImportError:  # pragma: no cover - exercised only where structlog is absent
    import logging

    class _KeyValueLogger:
        """Minimal stand-in for a structlog logger: ``bind`` plus event + key=value lines."""

        def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
            self._logger = logging.getLogger(name)
            self._context = context or {}

        def bind(self, **kw: Any) -> _KeyValueLogger:
            return _KeyValueLogger(self._logger.name, {**self._context, **kw})

        def _emit(self, level: int, event: str, **kw: Any) -> None:
            fields = {**self._context, **kw}
            self._logger.log(level, "%s %s", event, " ".join(f"{k}={v!r}" for k, v in fields.items()))

        def debug(self, event: str, **kw: Any) -> None:
            self._emit(logging.DEBUG, event, **kw)

        def info(self, event: str, **kw: Any) -> None:
            self._emit(logging.INFO, event, **kw)

        def warning(self, event: str, **kw: Any) -> None:
            self._emit(logging.WARNING, event, **kw)

    _log = _KeyValueLogger(__name__)

OPERATION_TRAILER = "Operation-Id"
CORRELATION_TRAILER = "Correlation-Id"
# In a commit of several operations: `<operation id> <path>`, one per file an operation changed.
FILE_TRAILER = "Operation-File"
# The span that made the commit, as a W3C traceparent (00-<trace id>-<span id>-<flags>): whoever
# applies the commit continues that trace; `git log --grep <trace id>` finds its commits.
TRACE_TRAILER = "Trace-Id"
REMOTE = "origin"

# Ids go into a one-line trailer and a `git log --grep`: keep them to a safe alphabet.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}$")
_AUTHOR_BAD = re.compile(r"[<>\x00-\x1f\x7f]")

# Substrings of git's stderr (LC_ALL=C) meaning "retrying will not help".
_PERMANENT_PATTERNS = (
    "does not appear to be a git repository",
    "not a git repository",
    "repository not found",
    "authentication failed",
    "permission denied",
    "could not read username",
    "could not read password",
    "invalid username or password",
    "unable to find remote helper",
)
# Reasons in `git push --porcelain` meaning "someone else moved the branch first".
_RACE_PATTERNS = (
    "fetch first",
    "non-fast-forward",
    "stale info",
    "failed to update ref",
    "cannot lock ref",
    "unable to lock",
    "failed to lock",
    "incorrect old value",
    "is at ",  # "cannot lock ref 'refs/heads/main': is at X but expected Y"
)


@dataclass(frozen=True)
class CommitResult:
    """What :meth:`GitOpsCommitter.apply` did.

    ``sha``: the commit that carries the change (``changed=True``), or the remote tip that already
    had this content (``changed=False``; ``None`` while the remote has no ``main``).
    ``attempts``: how many times the change was applied and pushed (1 = no race).
    """

    sha: str | None
    changed: bool
    attempts: int = 1

    @property
    def retries(self) -> int:
        return self.attempts - 1


@dataclass(frozen=True)
class Change:
    """One operation's part of a group commit: ``changes`` as :meth:`GitOpsCommitter.apply` takes
    them, its message line and its trailers."""

    changes: Mapping[str, str | None]
    message: str
    operation_id: str
    correlation_id: str
    trace: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter between push attempts."""

    max_attempts: int = 10
    base_delay: float = 0.1
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy needs max_attempts >= 1 and non-negative delays")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return rng.uniform(0.0, cap)


@dataclass
class CommitterStats:
    """Counters since construction (read them for metrics; they only grow)."""

    commits_pushed: int = 0
    unchanged: int = 0
    push_races: int = 0
    transient_failures: int = 0


@dataclass(frozen=True)
class _Push:
    """Outcome of one push: ok, lost a race, refused for good, or failed in an unknown way."""

    status: str  # "ok" | "race" | "rejected" | "failed"
    detail: str = ""


@dataclass(frozen=True)
class _Tip:
    """The remote branch's tip commit and its tree."""

    commit: str
    tree: str


@dataclass
class _Plan:
    """What one apply() or apply_group() call commits: ``entries`` (validated changes, `_entry`)
    together, after each of ``apart`` alone; ``once``: leave out entries whose trailer is in the
    history."""

    entries: list[Change]
    apart: list[Change] = field(default_factory=list)
    once: bool = False


# Per entry: the commit that holds it, and whether that commit changed it.
_Outcome = list[tuple[str | None, bool]]


@dataclass
class _Attempt:
    """Bookkeeping of one apply() call across attempts."""

    attempts: int = 0
    # pushed, but the outcome was unclear: the commit pushed and the outcome it meant
    unconfirmed: list[tuple[str, _Outcome]] = field(default_factory=list)
    last_error: GitOpsError | None = None
    races: int = 0


class GitOpsCommitter:
    """Commits plain file changes into a GitOps remote; see the module docstring."""

    def __init__(
        self,
        remote_url: str,
        workdir: str | os.PathLike[str],
        author_name: str,
        author_email: str,
        *,
        branch: str = "main",
        retry: RetryPolicy | None = None,
        network_timeout: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(remote_url, str) or not remote_url.strip():
            raise InvalidChange("remote_url is empty: give a bare repository path or a git URL")
        for what, value in (("author_name", author_name), ("author_email", author_email)):
            if not value or _AUTHOR_BAD.search(value):
                raise InvalidChange(f"{what} {value!r} is empty or contains '<', '>' or control characters")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]*", branch) or ".." in branch:
            raise InvalidChange(f"branch {branch!r} is not a plain branch name")
        self.remote_url = remote_url
        self.workdir = Path(workdir)
        self.branch = branch
        self.retry = retry or RetryPolicy()
        self.stats = CommitterStats()
        self._author_env = {
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
        }
        self._network_timeout = network_timeout
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lock = threading.RLock()
        self._git: git.Git | None = None
        self._empty_tree: str | None = None
        self._needs_clean = True  # unknown state after (re)start: clean on the first sync
        self._remote_ref = f"refs/remotes/{REMOTE}/{branch}"
        self._local_ref = f"refs/heads/{branch}"

    # -- public API ------------------------------------------------------------------------

    def apply(
        self,
        changes: Mapping[str, str | None],
        message: str,
        operation_id: str,
        correlation_id: str,
        trace: str | None = None,
    ) -> CommitResult:
        """Make the remote branch hold ``changes`` (``None`` deletes a file) in one commit
        (``trace``: the ``Trace-Id`` trailer's value, a W3C traceparent).

        Commits only if the tree changes. Retries lost push races up to
        ``retry.max_attempts`` times, then raises :class:`PushConflict`. Raises a
        :class:`PermanentGitOpsError` subclass for bad input or a refusing remote, and
        :class:`TransientGitOpsError` when the remote stays unreachable.
        """
        entry = _entry(Change(changes, message, operation_id, correlation_id, trace))
        log = _log.bind(operation_id=operation_id, correlation_id=correlation_id, files=len(entry.changes))
        with self._exclusive():
            return self._apply_with_retries(_Plan([entry]), log)[0]

    def apply_group(self, group: Sequence[Change], *, apart: Sequence[Change] = (), once: bool = False
                    ) -> list[CommitResult]:
        """Make the remote branch hold every change of ``group`` in one commit and one push (see
        the module docstring); one result per change, in order. An operation whose changes the
        repository already holds gets ``changed=False`` and the tip, and no trailer in the commit.

        ``apart``: changes committed before the group, each in a commit of its own (left out when
        the repository holds them already), pushed with it. ``once``: an operation of ``group``
        whose ``Operation-Id`` trailer is in the history already is not committed again: its result
        is that commit (``changed=True``, as :meth:`find_commit` would find it), looked up in the
        same fetch as the commit is made.

        Raises like :meth:`apply`, for the whole group: :class:`InvalidChange` when a change is
        invalid or two changes touch the same path (commit them apart, then)."""
        entries = [_entry(change) for change in group]
        owners: dict[str, str] = {}
        for entry in entries:
            for path in entry.changes:
                if path in owners:
                    raise InvalidChange(f"operations {owners[path]} and {entry.operation_id} both change "
                                        f"{path!r}: commit them apart")
                owners[path] = entry.operation_id
        if len({e.operation_id for e in entries}) != len(entries):
            raise InvalidChange("an operation appears twice in one group")
        if not entries:
            return []
        plan = _Plan(entries, [_entry(change) for change in apart], once)
        log = _log.bind(operations=len(entries), files=len(owners))
        with self._exclusive():
            return self._apply_with_retries(plan, log)

    def find_commits(self, operation_ids: Sequence[str]) -> dict[str, str]:
        """The newest commit of every operation in ``operation_ids`` that has one (by its
        ``Operation-Id`` trailer), in one search. Fetches first."""
        for operation_id in operation_ids:
            validate_id(operation_id, "operation_id")
        wanted = set(operation_ids)
        if not wanted:
            return {}
        with self._exclusive():
            tip = self._fetch()
            if tip is None:
                return {}
            return self._search_trailers(tip, OPERATION_TRAILER, wanted)

    def find_commit(self, operation_id: str) -> str | None:
        """The newest commit on the remote branch whose ``Operation-Id`` trailer is
        ``operation_id``, or None. Fetches first, so commits by other committers count."""
        validate_id(operation_id, "operation_id")
        with self._exclusive():
            tip = self._fetch()
            if tip is None:
                return None
            return self._search_trailer(tip, OPERATION_TRAILER, operation_id)

    def before(self, sha: str, operation_id: str | None = None) -> dict[str, str | None]:
        """What commit ``sha`` changed, as it was before it: path -> the content in its first parent
        (None where the file did not exist). Handing this to :meth:`apply` reverts the commit.

        In a commit of several operations, only what ``operation_id`` changed (its
        ``Operation-File`` trailers): the other operations of the group stay."""
        if not re.fullmatch(r"[0-9a-f]{7,64}", sha):
            raise PermanentGitOpsError(f"{sha!r} is not a commit id", reason="BadInput")
        with self._exclusive():
            self._fetch()
            out = self._run("diff-tree", "--no-commit-id", "--name-only", "-r", "-z", "--root", sha,
                            strip=False)
            parent = self._run("rev-list", "--parents", "-n", "1", sha).split()[1:2]
            paths = [path for path in out.split("\0") if path]
            owned = self._files_of(sha)
            if owned:  # a group commit: the operation's own files only
                mine = {path for op, path in owned if op == operation_id}
                paths = [path for path in paths if path in mine]
            return {path: (self._read_blob(parent[0], path) if parent else None) for path in paths}

    def head(self) -> str | None:
        """The remote branch's tip after a fetch (None while the remote has no such branch)."""
        with self._exclusive():
            return self._fetch()

    def read(self, path: str) -> str | None:
        """The text of ``path`` at the remote tip, or None if no file is there."""
        validate_repo_path(path)
        with self._exclusive():
            tip = self._fetch()
            if tip is None:
                return None
            return self._read_blob(tip, path)

    def list_files(self, prefix: str = "") -> list[str]:
        """Files under folder ``prefix`` (all files if empty) at the remote tip, sorted."""
        if prefix:
            validate_repo_path(prefix)
        with self._exclusive():
            tip = self._fetch()
            if tip is None:
                return []
            args = ["ls-tree", "-r", "--name-only", "-z", tip]
            if prefix:
                args += ["--", prefix]
            out = self._run(*args, strip=False)
            return sorted(p for p in out.split("\0") if p)

    # -- the retry loop ----------------------------------------------------------------------

    def _apply_with_retries(self, plan: _Plan, log: Any) -> list[CommitResult]:
        state = _Attempt()
        while state.attempts < self.retry.max_attempts:
            state.attempts += 1
            try:
                result = self._attempt(plan, state, log)
            except TransientGitOpsError as err:
                self.stats.transient_failures += 1
                state.last_error = err
                log.warning("gitops.attempt.failed", attempt=state.attempts, reason=err.reason,
                            error=str(err))
                result = None
            if result is not None:
                return result
            if state.attempts < self.retry.max_attempts:
                delay = self.retry.delay(state.attempts, self._rng)
                log.info("gitops.push.retry", attempt=state.attempts, delay=round(delay, 4),
                         reason=state.last_error.reason if state.last_error else None)
                self._sleep(delay)
        return self._give_up(state, log)

    def _attempt(self, plan: _Plan, state: _Attempt, log: Any) -> list[CommitResult] | None:
        """One try: sync to the remote, apply, commit if changed, push. None means retry."""
        tip = self._sync()
        for unclear, outcome in state.unconfirmed:
            if tip and self._is_ancestor(unclear, tip.commit):  # an unclear push did land after all
                return self._pushed(unclear, outcome, state, log)
        found: dict[str, str] = {}
        if plan.once and tip is not None:
            found = self._search_trailers(tip.commit, OPERATION_TRAILER, {e.operation_id for e in plan.entries})
        head = tip
        for entry in plan.apart:
            head = self._commit([entry], head)[0] or head
        todo = [e for e in plan.entries if e.operation_id not in found]
        last, changed = self._commit(todo, head) if todo else (None, [])
        did = dict(zip((e.operation_id for e in todo), changed, strict=True))
        newest = last or head
        outcome: _Outcome = [(found[e.operation_id], True) if e.operation_id in found
                             else (last.commit, True) if last is not None and did[e.operation_id]
                             else (head.commit if head else None, False) for e in plan.entries]
        if newest is tip:
            self._needs_clean = False
            self.stats.unchanged += 1
            log.info("gitops.commit.unchanged", sha=tip.commit if tip else None, attempt=state.attempts)
            return [CommitResult(sha=sha, changed=ch, attempts=state.attempts) for sha, ch in outcome]
        assert newest is not None
        push = self._push(newest.commit)
        if push.status == "ok":
            self._needs_clean = False
            return self._pushed(newest.commit, outcome, state, log)
        if push.status == "rejected":
            raise RemoteRejected(f"the remote refused the push to {self.branch!r}: {push.detail}",
                                 detail=push.detail)
        if push.status == "race":
            self.stats.push_races += 1
            state.races += 1
            state.last_error = PushConflict("another committer updated the branch first",
                                            attempts=state.attempts, detail=push.detail)
            return None
        state.unconfirmed.append((newest.commit, outcome))
        raise TransientGitOpsError(f"push to {self.remote_url!r} failed: {push.detail}",
                                   detail=push.detail)

    def _pushed(self, sha: str, outcome: _Outcome, state: _Attempt, log: Any) -> list[CommitResult]:
        self.stats.commits_pushed += 1
        log.info("gitops.commit.pushed", sha=sha, attempt=state.attempts,
                 operations=sum(1 for _, changed in outcome if changed))
        return [CommitResult(sha=commit, changed=changed, attempts=state.attempts) for commit, changed in outcome]

    def _give_up(self, state: _Attempt, log: Any) -> NoReturn:
        last = state.last_error
        log.warning("gitops.push.gave_up", attempts=state.attempts, races=state.races,
                    reason=last.reason if last else None)
        if isinstance(last, PushConflict) or last is None:
            raise PushConflict(
                f"gave up after {state.attempts} attempts: other committers kept updating "
                f"{self.branch!r} (raise RetryPolicy.max_attempts or retry the operation later)",
                attempts=state.attempts, detail=last.detail if last else "",
            )
        raise TransientGitOpsError(f"gave up after {state.attempts} attempts: {last}",
                                   reason=last.reason, detail=last.detail)

    # -- steps -------------------------------------------------------------------------------

    def _sync(self) -> _Tip | None:
        """Fetch, then make the work tree and index exactly the remote tip (or empty)."""
        tip = self._fetch_tip()
        if tip is not None:
            if self._needs_clean:  # untracked leftovers of an unfinished attempt; reset does the rest
                self._run("clean", "-ffdxq")
            self._run("reset", "--quiet", "--hard", tip.commit)
        else:
            self._run("update-ref", "-d", self._local_ref, check=False)
            self._run("read-tree", "--empty")
            self._run("clean", "-ffdxq")
        self._needs_clean = False
        return tip

    def _commit(self, entries: list[Change], parent: _Tip | None) -> tuple[_Tip | None, list[bool]]:
        """Write every entry's changes into the work tree and index; commit if the tree differs
        from ``parent``'s. Returns the new commit (or None) and which entries changed something."""
        self._needs_clean = True
        paths = [path for entry in entries for path in entry.changes]
        for entry in entries:
            for path, content in entry.changes.items():
                self._write(path, content)
        for chunk in _chunks(paths, 200):
            self._run("update-index", "--add", "--remove", "--replace", "--", *chunk)
        tree = self._run("write-tree")
        base = parent.tree if parent else self._empty_tree_sha()
        if tree == base:
            return None, [False] * len(entries)
        if len(entries) == 1:
            changed_paths = set(paths)
        else:
            out = self._run("diff-tree", "-r", "--name-only", "-z", "--no-renames", base, tree, strip=False)
            changed_paths = {path for path in out.split("\0") if path}
        changed = [any(path in changed_paths for path in entry.changes) for entry in entries]
        args = ["commit-tree", "--no-gpg-sign", tree, "-m",
                _group_message([(e, sorted(p for p in e.changes if p in changed_paths))
                                for e, did in zip(entries, changed, strict=True) if did])]
        if parent:
            args += ["-p", parent.commit]
        return _Tip(self._run(*args, env=self._author_env), tree), changed

    def _write(self, path: str, content: str | None) -> None:
        target = self.workdir / path
        if content is None:
            if target.is_dir() and not target.is_symlink():
                raise InvalidChange(f"cannot delete {path!r}: it is a folder; list its files instead")
            if target.exists() or target.is_symlink():
                target.unlink()
            return
        if target.is_dir() and not target.is_symlink():
            raise InvalidChange(f"cannot write {path!r}: a folder of that name exists")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as err:
            raise InvalidChange(f"cannot write {path!r}: a parent of it is a file") from err
        if target.is_symlink():
            target.unlink()
        try:
            with open(target, "w", encoding="utf-8", newline="") as fh:
                fh.write(content)
        except OSError as err:  # disk full, quota: may pass; retried like other transient errors
            raise TransientGitOpsError(f"cannot write {path!r} in {str(self.workdir)!r}: {err}",
                                       reason="WorkdirUnwritable") from err

    def _push(self, sha: str) -> _Push:
        status, out, err = self._execute(
            "push", "--porcelain", REMOTE, f"{sha}:{self._local_ref}", network=True
        )
        return _classify_push(status, out, err, self._local_ref)

    def _fetch(self) -> str | None:
        tip = self._fetch_tip()
        return tip.commit if tip else None

    def _fetch_tip(self) -> _Tip | None:
        """Update the remote-tracking ref; return the remote tip, None if the branch is absent."""
        self._ensure_repo()
        status, _, err = self._execute(
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", REMOTE,
            f"+{self._local_ref}:{self._remote_ref}", network=True,
        )
        if status != 0:
            if "couldn't find remote ref" in err.lower():
                self._run("update-ref", "-d", self._remote_ref, check=False)
                return None
            raise _git_error(f"fetch from {self.remote_url!r} failed", err)
        commit, tree = self._run("rev-parse", self._remote_ref, f"{self._remote_ref}^{{tree}}").split()
        return _Tip(commit, tree)

    def _is_ancestor(self, sha: str, tip: str) -> bool:
        status, _, _ = self._execute("merge-base", "--is-ancestor", sha, tip)
        return status == 0

    def _search_trailers(self, tip: str, key: str, values: set[str]) -> dict[str, str]:
        """The newest commit carrying each of ``values`` as a ``key`` trailer (one ``git log``)."""
        fmt = f"%H%x00%(trailers:key={key},valueonly,separator=%x00)%x1e"
        greps = [f"--grep={key}: {value}" for value in sorted(values)]
        out = self._run("log", "--fixed-strings", *greps, f"--format={fmt}", tip, strip=False)
        found: dict[str, str] = {}
        for record in out.split("\x1e"):
            sha, _, trailers = record.strip("\n").partition("\0")
            for value in (v.strip() for v in trailers.split("\0")):
                if sha and value in values and value not in found:
                    found[value] = sha
        return found

    def _files_of(self, sha: str) -> list[tuple[str, str]]:
        """(operation id, path) of each ``Operation-File`` trailer of commit ``sha``."""
        fmt = f"%(trailers:key={FILE_TRAILER},valueonly,separator=%x00)"
        out = self._run("log", "-1", f"--format={fmt}", sha, strip=False)
        pairs = []
        for value in out.strip("\n").split("\0"):
            operation_id, _, path = value.strip().partition(" ")
            if operation_id and path:
                pairs.append((operation_id, path))
        return pairs

    def _search_trailer(self, tip: str, key: str, value: str) -> str | None:
        fmt = f"%H%x00%(trailers:key={key},valueonly,separator=%x00)%x1e"
        out = self._run("log", "--fixed-strings", f"--grep={key}: {value}", f"--format={fmt}", tip,
                        strip=False)
        for record in out.split("\x1e"):
            sha, _, values = record.strip("\n").partition("\0")
            if sha and value in (v.strip() for v in values.split("\0")):
                return sha
        return None

    def _read_blob(self, tip: str, path: str) -> str | None:
        entry = self._run("ls-tree", "-z", tip, "--", path, strip=False).rstrip("\0")
        if not entry:
            return None
        meta, _, name = entry.partition("\t")
        _mode, kind, blob = meta.split()
        if kind != "blob" or name != path:
            return None
        status, data, err = self._execute("cat-file", "blob", blob, strip=False, as_bytes=True)
        if status != 0:
            raise _git_error(f"cannot read {path!r}", err)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PermanentGitOpsError(f"{path!r} is not UTF-8 text", reason="NotText") from exc

    def _empty_tree_sha(self) -> str:
        if self._empty_tree is None:
            self._empty_tree = self._run("hash-object", "-t", "tree", os.devnull)
        return self._empty_tree

    # -- the private clone ---------------------------------------------------------------------

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """This instance's lock plus an flock on the workdir (other instances, other processes)."""
        with self._lock:
            try:
                self.workdir.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.workdir, os.O_RDONLY)
            except OSError as err:
                raise PermanentGitOpsError(f"cannot use workdir {str(self.workdir)!r}: {err}",
                                           reason="WorkdirUnusable") from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock

    def _ensure_repo(self) -> None:
        """Initialise the private clone on first use; check an existing one; clear stale locks
        (safe: we hold the workdir flock, so no other git process of ours runs here)."""
        if self._git is None:
            if (self.workdir / ".git").is_dir():
                self._git = git.Git(str(self.workdir))
                self._check_origin()
            elif any(self.workdir.iterdir()):
                raise WorkdirMismatch(f"workdir {str(self.workdir)!r} is not empty and not a git clone; "
                                      "give the committer an empty or dedicated folder")
            else:
                self._init_clone()
        for stale in ("index.lock", "HEAD.lock", f"{self._local_ref}.lock", f"{self._remote_ref}.lock"):
            lock = self.workdir / ".git" / stale
            if lock.exists():
                lock.unlink()

    def _init_clone(self) -> None:
        # init + fetch instead of `git clone`: the same result, and an empty remote needs no
        # special case (the first push creates the branch).
        git.Repo.init(str(self.workdir), initial_branch=self.branch).close()
        self._git = git.Git(str(self.workdir))
        self._run("remote", "add", REMOTE, self.remote_url)
        for key, value in (("core.autocrlf", "false"), ("commit.gpgsign", "false"),
                           ("core.hooksPath", os.devnull)):
            self._run("config", key, value)
        _log.info("gitops.workdir.initialised", workdir=str(self.workdir), remote=self.remote_url)

    def _check_origin(self) -> None:
        status, url, _ = self._execute("remote", "get-url", REMOTE)
        if status != 0:
            self._run("remote", "add", REMOTE, self.remote_url)  # crashed between init and add
        elif url != self.remote_url:
            raise WorkdirMismatch(f"workdir {str(self.workdir)!r} is a clone of {url!r}, "
                                  f"not of {self.remote_url!r}; give each remote its own workdir")
        self._run("symbolic-ref", "HEAD", self._local_ref)

    # -- running git ---------------------------------------------------------------------------

    def _run(self, *args: str, env: Mapping[str, str] | None = None, check: bool = True,
             strip: bool = True) -> str:
        status, out, err = self._execute(*args, env=env, strip=strip)
        if status != 0 and check:
            raise _git_error(f"git {args[0]} failed", err)
        return out

    def _execute(self, *args: str, env: Mapping[str, str] | None = None, network: bool = False,
                 strip: bool = True, as_bytes: bool = False) -> tuple[int, Any, str]:
        assert self._git is not None
        inline_env = {"GIT_TERMINAL_PROMPT": "0", **(env or {})}
        try:
            status, out, err = self._git.execute(
                [git.Git.GIT_PYTHON_GIT_EXECUTABLE or "git", *args],
                with_extended_output=True,
                with_exceptions=False,
                env=inline_env,
                kill_after_timeout=self._network_timeout if network else None,
                strip_newline_in_stdout=strip,
                stdout_as_string=not as_bytes,
            )
        except git.exc.GitCommandNotFound as exc:
            raise PermanentGitOpsError(f"git is not installed or not on PATH: {exc}",
                                       reason="GitNotInstalled") from exc
        return status, out, err if isinstance(err, str) else err.decode("utf-8", "replace")


# -- pure helpers --------------------------------------------------------------------------------


def validate_id(value: object, what: str) -> str:
    """Return ``value`` if it is usable as a one-line trailer value and a grep key."""
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidChange(
            f"{what} {value!r} is not allowed: use 1-200 letters, digits and '._:@+-', "
            "starting with a letter or digit (a UUID is fine)"
        )
    return value


def normalize_changes(changes: Mapping[str, str | None]) -> dict[str, str | None]:
    """Validate paths and contents; return a plain dict in a stable (sorted) order."""
    if not isinstance(changes, Mapping):
        raise InvalidChange("changes must be a mapping of path -> text (or None to delete)")
    result: dict[str, str | None] = {}
    for path in sorted(changes):
        content = changes[path]
        validate_repo_path(path)
        if content is not None and not isinstance(content, str):
            raise InvalidChange(f"content of {path!r} must be text or None, not {type(content).__name__}")
        result[path] = content
    for path in result:  # "a" and "a/b" cannot both be files
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in result and result[parent] is not None:
                raise InvalidChange(f"{parent!r} and {path!r} cannot both be files")
    return result


def _entry(change: Change) -> Change:
    """One operation's change validated: its changes normalized, its message stripped, its trace
    dropped when unusable (as compose_message does)."""
    compose_message(change.message, change.operation_id, change.correlation_id)
    trace = change.trace if change.trace is not None and _ID.match(change.trace) else None
    return Change(normalize_changes(change.changes), change.message.strip(), change.operation_id,
                  change.correlation_id, trace)


def _group_message(changed: list[tuple[Change, list[str]]]) -> str:
    """The message of a commit of the entries that changed something, with the files each changed:
    one entry's is exactly :func:`compose_message`'s; several entries' list their messages and then
    their trailers in turn, each operation's files as ``Operation-File`` trailers."""
    if len(changed) == 1:
        entry, _ = changed[0]
        return compose_message(entry.message, entry.operation_id, entry.correlation_id, entry.trace)
    subjects = [entry.message.splitlines()[0] for entry, _ in changed]
    trailers = []
    for entry, paths in changed:
        trailers += [f"{OPERATION_TRAILER}: {entry.operation_id}", f"{CORRELATION_TRAILER}: {entry.correlation_id}"]
        if entry.trace:
            trailers.append(f"{TRACE_TRAILER}: {entry.trace}")
        trailers += [f"{FILE_TRAILER}: {entry.operation_id} {path}" for path in paths]
    return (f"Commit {len(changed)} operations\n\n" + "\n".join(subjects) + "\n\n"
            + "\n".join(trailers) + "\n")


def compose_message(message: str, operation_id: str, correlation_id: str, trace: str | None = None) -> str:
    """``message`` followed by a blank line and the Operation-Id/Correlation-Id (and Trace-Id)
    trailers."""
    validate_id(operation_id, "operation_id")
    validate_id(correlation_id, "correlation_id")
    if trace is not None and not _ID.match(trace):
        trace = None  # tracing never fails a commit: an unusable context is left out
    if not isinstance(message, str) or not message.strip():
        raise InvalidChange("commit message is empty: say what changed, e.g. 'Provision acme/orders'")
    if "\0" in message:
        raise InvalidChange("commit message contains a NUL character")
    return (f"{message.strip()}\n\n"
            f"{OPERATION_TRAILER}: {operation_id}\n{CORRELATION_TRAILER}: {correlation_id}\n"
            + (f"{TRACE_TRAILER}: {trace}\n" if trace else ""))


def _classify_push(status: int, out: str, err: str, ref: str) -> _Push:
    """Read `git push --porcelain`: one line per ref, ``<flag>\\t<from>:<to>\\t<summary>``."""
    for line in out.splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or not fields[1].endswith(f":{ref}"):
            continue
        flag, summary = fields[0], fields[2]
        if flag != "!":
            return _Push("ok", summary)
        lowered = summary.lower()
        if any(p in lowered for p in _RACE_PATTERNS):
            return _Push("race", summary)
        return _Push("rejected", f"{summary} {err.strip()}".strip())
    if status == 0:
        return _Push("ok")
    if any(p in err.lower() for p in _PERMANENT_PATTERNS):
        return _Push("rejected", err.strip())
    return _Push("failed", err.strip() or f"git push exited with {status}")


def _git_error(what: str, stderr: str) -> GitOpsError:
    detail = stderr.strip()
    if any(p in detail.lower() for p in _PERMANENT_PATTERNS):
        return PermanentGitOpsError(f"{what}: {detail}", reason="GitRemoteUnusable", detail=detail)
    return TransientGitOpsError(f"{what}: {detail}", detail=detail)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
