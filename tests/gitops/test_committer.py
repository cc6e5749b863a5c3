"""Integration tests of gitops.committer against REAL git repositories.

Every test creates a bare "remote" under tmp_path and one or more committers, each with its own
working directory, exactly as saga processors would. No mocks of git: races are produced by
real committers pushing first (sometimes made deterministic by running the rival's commit from
inside our push step). Waiting is done by polling (queues with timeouts, barriers), never by a
fixed sleep.
"""

from __future__ import annotations

import multiprocessing
import queue
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from gitops import layout
from gitops.committer import (
    Change,
    CommitResult,
    GitOpsCommitter,
    RetryPolicy,
    _Push,
    compose_message,
)
from gitops.errors import (
    GitOpsError,
    InvalidChange,
    InvalidPath,
    PermanentGitOpsError,
    PushConflict,
    RemoteRejected,
    TransientGitOpsError,
    WorkdirMismatch,
)

# Many rivals push at once: allow plenty of attempts but keep each wait short.
CONTENDED = RetryPolicy(max_attempts=100, base_delay=0.1, max_delay=2.0)


# -- helpers -------------------------------------------------------------------------------------


def git(git_dir: Path, *args: str, stdin: str | None = None) -> str:
    """Run git on ``git_dir``; stdout decoded as UTF-8 with line endings kept as they are."""
    done = subprocess.run(
        ["git", f"--git-dir={git_dir}", *args],
        input=stdin.encode() if stdin is not None else None, capture_output=True, check=True,
    )
    return done.stdout.decode("utf-8")


def commits(remote: Path) -> list[tuple[str, list[str]]]:
    """(sha, parents) of every commit on the remote's main, newest first."""
    lines = git(remote, "rev-list", "--parents", "main").splitlines()
    return [(line.split()[0], line.split()[1:]) for line in lines]


def trailers(remote: Path, sha: str) -> dict[str, str]:
    message = git(remote, "log", "-1", "--format=%B", sha)
    parsed = git(remote, "interpret-trailers", "--parse", stdin=message)
    return dict(line.split(": ", 1) for line in parsed.splitlines())


def changed_files(remote: Path, sha: str) -> list[str]:
    return git(remote, "diff-tree", "--root", "--no-commit-id", "--name-only", "-r", sha).split()


def show(remote: Path, path: str) -> str:
    return git(remote, "show", f"main:{path}")


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "gitops.git"
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(path)], check=True)
    return path


@pytest.fixture
def make(remote: Path, tmp_path: Path) -> Callable[..., GitOpsCommitter]:
    def factory(name: str, **kwargs) -> GitOpsCommitter:
        return GitOpsCommitter(str(remote), tmp_path / "work" / name, f"saga-{name}",
                               f"{name}@dbaas.invalid", **kwargs)
    return factory


def one_file(n: int) -> dict[str, str]:
    return {layout.service_path("acme", f"svc-{n}"): f"kind: ServiceClaim\nname: svc-{n}\n"}


# -- basics --------------------------------------------------------------------------------------


def test_bootstrap_creates_main_in_an_empty_remote_with_trailers(remote, make):
    committer = make("a")
    assert committer.head() is None
    files = layout.bootstrap_files(str(remote))

    result = committer.apply(files, "Bootstrap the GitOps repository", "op-boot", "corr-boot")

    assert result.changed and result.attempts == 1
    assert git(remote, "rev-parse", "refs/heads/main").strip() == result.sha
    assert commits(remote) == [(result.sha, [])]
    assert trailers(remote, result.sha) == {"Operation-Id": "op-boot", "Correlation-Id": "corr-boot"}
    assert git(remote, "log", "-1", "--format=%an <%ae>", "main").strip() == "saga-a <a@dbaas.invalid>"
    for path, text in files.items():
        assert show(remote, path) == text
    assert committer.head() == result.sha
    assert committer.read(layout.APP_OF_APPS_PATH) == files[layout.APP_OF_APPS_PATH]


def test_no_commit_when_the_tree_is_unchanged(remote, make):
    a, b = make("a"), make("b")
    first = a.apply(one_file(1), "Provision acme/svc-1", "op-1", "corr-1")

    again = a.apply(one_file(1), "Provision acme/svc-1", "op-1", "corr-1")      # same operation
    other = b.apply(one_file(1), "Provision acme/svc-1 again", "op-2", "corr-2")  # same content

    assert again == CommitResult(sha=first.sha, changed=False, attempts=1)
    assert other == CommitResult(sha=first.sha, changed=False, attempts=1)
    assert len(commits(remote)) == 1
    assert a.stats.unchanged == 1 and b.stats.unchanged == 1


def test_nothing_to_commit_into_an_empty_remote(remote, make):
    result = make("a").apply({"tenants/acme/gone.yaml": None}, "Delete nothing", "op-1", "corr-1")
    assert result == CommitResult(sha=None, changed=False, attempts=1)
    assert git(remote, "for-each-ref").strip() == ""


def test_delete_a_file(remote, make):
    committer = make("a")
    path = layout.service_path("acme", "orders")
    committer.apply({path: "a: 1\n", "tenants/acme/keep.yaml": "b: 2\n"}, "Add", "op-1", "corr-1")

    result = committer.apply({path: None}, "Delete acme/orders", "op-2", "corr-2")

    assert result.changed
    assert committer.read(path) is None
    assert committer.list_files("tenants/acme") == ["tenants/acme/keep.yaml"]
    assert changed_files(remote, result.sha) == [path]
    assert committer.apply({path: None}, "Delete acme/orders", "op-2", "corr-2").changed is False


def test_before_gives_what_a_commit_changed_so_that_applying_it_reverts_the_commit(remote, make):
    a, b = make("a"), make("b")
    path, other = "tenants/acme/orders.yaml", "tenants/acme/cache.yaml"
    a.apply({path: "v: 1\n"}, "Add", "op-1", "corr-1")
    added = a.apply({other: "c: 1\n"}, "Add cache", "op-2", "corr-2")
    changed = a.apply({path: "v: 2\n"}, "Scale", "op-3", "corr-3")

    assert b.before(changed.sha) == {path: "v: 1\n"}
    assert b.before(added.sha) == {other: None}
    reverted = b.apply(b.before(changed.sha), "Revert", "op-3-revert", "corr-3")
    assert reverted.changed and a.read(path) == "v: 1\n" and a.read(other) == "c: 1\n"
    b.apply(b.before(added.sha), "Revert", "op-2-revert", "corr-2")
    assert a.read(other) is None


def test_update_keeps_exact_bytes(remote, make):
    committer = make("a")
    path = "tenants/acme/orders.yaml"
    committer.apply({path: "v: 1\n"}, "Add", "op-1", "corr-1")
    text = "v: 2\r\nname: ünïcode\nno-trailing-newline"
    committer.apply({path: text}, "Update", "op-2", "corr-2")
    assert committer.read(path) == text
    assert show(remote, path) == text


def test_find_commit_after_a_commit_by_another_committer(remote, make):
    a, b = make("a"), make("b")
    a.apply(one_file(1), "Provision svc-1", "op-1", "corr-1")
    pushed = b.apply(one_file(2), "Provision svc-2", "op-2", "corr-2")
    b.apply(one_file(3), "Provision svc-3", "op-20", "corr-3")  # "op-2" is a prefix of "op-20"

    assert a.find_commit("op-2") == pushed.sha
    assert a.find_commit("op-20") != pushed.sha
    assert a.find_commit("op-404") is None
    assert a.head() == b.head()
    assert a.read(layout.service_path("acme", "svc-2")) == one_file(2)["tenants/acme/svc-2.yaml"]


def test_find_commit_on_an_empty_remote(make):
    assert make("a").find_commit("op-1") is None


def test_message_trailers_parse_with_git(remote):
    message = compose_message("Scale acme/orders to 3 replicas\n\nRequested by ops.", "op-1", "c-1")
    parsed = git(remote, "interpret-trailers", "--parse", stdin=message)
    assert parsed.splitlines() == ["Operation-Id: op-1", "Correlation-Id: c-1"]
    assert message.startswith("Scale acme/orders to 3 replicas\n\nRequested by ops.\n\n")


def test_a_new_instance_reuses_the_workdir_and_clears_stale_locks(remote, make):
    make("a").apply(one_file(1), "One", "op-1", "corr-1")
    (Path(make("a").workdir) / ".git" / "index.lock").write_text("")  # a crashed process's lock

    result = make("a").apply(one_file(2), "Two", "op-2", "corr-2")

    assert result.changed and len(commits(remote)) == 2


def test_two_instances_on_one_workdir_wait_for_each_other(remote, tmp_path):
    workdir = tmp_path / "shared"
    barrier = threading.Barrier(2)
    results: list[CommitResult] = []

    def run(name: str) -> None:
        committer = GitOpsCommitter(str(remote), workdir, name, f"{name}@x", retry=CONTENDED)
        barrier.wait()
        results.extend(committer.apply({f"tenants/{name}/svc-{i}.yaml": f"{i}\n"}, "Add", f"op-{name}-{i}",
                                       "corr") for i in range(5))

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 10 and all(r.changed and r.attempts == 1 for r in results)
    assert len(commits(remote)) == 10


# -- invalid input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../outside.yaml", "parent segment"),
        ("tenants/../../x.yaml", "parent segment inside"),
        ("tenants//x.yaml", "empty segment"),
        ("tenants/acme/", "trailing slash"),
        ("./x.yaml", "dot segment"),
        (".git/config", "reaches into .git"),
        ("tenants/.GIT/hooks", "reaches into .git, any case"),
        ("tenants\\acme.yaml", "backslash"),
        ("tenants/ac\nme.yaml", "control character"),
    ],
)
def test_invalid_paths_are_rejected_before_touching_git(remote, make, path, reason):
    committer = make("a")
    with pytest.raises(InvalidPath) as caught:
        committer.apply({path: "x"}, "Bad", "op-1", "corr-1")
    assert not caught.value.transient and caught.value.reason == "InvalidPath"
    assert git(remote, "for-each-ref").strip() == "", reason


@pytest.mark.parametrize(
    ("changes", "message", "operation_id", "correlation_id", "reason"),
    [
        ({"a.yaml": "x"}, "", "op-1", "c-1", "empty message"),
        ({"a.yaml": "x"}, "Msg", "op 1", "c-1", "space in operation id"),
        ({"a.yaml": "x"}, "Msg", "op-1\nEvil: yes", "c-1", "newline in operation id"),
        ({"a.yaml": "x"}, "Msg", "op-1", "", "empty correlation id"),
        ({"a.yaml": b"bytes"}, "Msg", "op-1", "c-1", "content is bytes"),
        ({"a": "x", "a/b.yaml": "y"}, "Msg", "op-1", "c-1", "file and folder of the same name"),
    ],
)
def test_invalid_change_requests_are_rejected(make, changes, message, operation_id, correlation_id, reason):
    with pytest.raises(InvalidChange):
        make("a").apply(changes, message, operation_id, correlation_id)


def test_writing_over_an_existing_folder_is_rejected(make):
    committer = make("a")
    committer.apply({"tenants/acme/orders.yaml": "x"}, "Add", "op-1", "corr-1")
    with pytest.raises(InvalidChange, match="folder"):
        committer.apply({"tenants/acme": "x"}, "Clobber", "op-2", "corr-2")
    with pytest.raises(InvalidChange, match="folder"):
        committer.apply({"tenants/acme": None}, "Delete folder", "op-3", "corr-3")


def test_leftovers_of_a_failed_apply_never_reach_a_later_commit(remote, make):
    committer = make("a")
    committer.apply({"tenants/acme/orders.yaml": "x"}, "Add", "op-1", "corr-1")
    with pytest.raises(InvalidChange):  # writes a/left.yaml, then trips over the folder
        committer.apply({"a/left.yaml": "left", "tenants/acme": "x"}, "Half", "op-2", "corr-2")

    result = committer.apply({"b.yaml": "y"}, "Add b", "op-3", "corr-3")

    assert changed_files(remote, result.sha) == ["b.yaml"]
    assert not (Path(committer.workdir) / "a" / "left.yaml").exists()


def test_a_workdir_of_another_remote_is_refused(tmp_path, remote):
    other = tmp_path / "other.git"
    subprocess.run(["git", "init", "-q", "--bare", str(other)], check=True)
    GitOpsCommitter(str(other), tmp_path / "w", "n", "e@x").head()
    with pytest.raises(WorkdirMismatch):
        GitOpsCommitter(str(remote), tmp_path / "w", "n", "e@x").head()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    with pytest.raises(WorkdirMismatch):
        GitOpsCommitter(str(remote), tmp_path / "junk", "n", "e@x").head()


def test_a_missing_remote_is_a_permanent_error(tmp_path):
    committer = GitOpsCommitter(str(tmp_path / "nowhere.git"), tmp_path / "w", "n", "e@x")
    with pytest.raises(PermanentGitOpsError) as caught:
        committer.apply({"a.yaml": "x"}, "Add", "op-1", "corr-1")
    assert isinstance(caught.value, GitOpsError) and not caught.value.transient


def test_a_declining_hook_is_a_permanent_rejection_without_retries(remote, make):
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'policy: main is frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    delays: list[float] = []
    committer = make("a", sleep=delays.append)
    with pytest.raises(RemoteRejected) as caught:
        committer.apply({"a.yaml": "x"}, "Add", "op-1", "corr-1")
    assert "declined" in str(caught.value) and delays == []


# -- races ---------------------------------------------------------------------------------------


def race_once(committer: GitOpsCommitter, rival: Callable[[], object], times: int = 1) -> list[str]:
    """Make ``committer``'s next ``times`` pushes lose: the rival commits just before each."""
    real_push = committer._push
    raced: list[str] = []

    def push(sha: str) -> _Push:
        if len(raced) < times:
            raced.append(sha)
            rival()
        return real_push(sha)

    committer._push = push  # type: ignore[method-assign]
    return raced


def test_non_fast_forward_is_retried_on_top_of_the_new_tip(remote, make):
    a, b = make("a"), make("b")
    a.apply(one_file(0), "Seed", "op-0", "corr-0")
    delays: list[float] = []
    a._sleep = delays.append
    race_once(a, lambda: b.apply(one_file(1), "Rival", "op-b", "corr-b"))

    result = a.apply(one_file(50), "Provision svc-50", "op-a", "corr-a")

    assert result.changed and result.attempts == 2 and result.retries == 1
    assert a.stats.push_races == 1 and len(delays) == 1
    history = commits(remote)
    assert [len(parents) for _, parents in history] == [1, 1, 0]   # linear: a's on top of b's
    assert history[0][0] == result.sha and trailers(remote, result.sha)["Operation-Id"] == "op-a"
    assert show(remote, "tenants/acme/svc-1.yaml") == one_file(1)["tenants/acme/svc-1.yaml"]


def test_same_file_race_last_writer_wins_and_lost_content_is_reapplied(remote, make):
    a, b = make("a"), make("b")
    path = "tenants/acme/orders.yaml"
    race_once(a, lambda: b.apply({path: "replicas: 5\n"}, "Scale to 5", "op-b", "c-b"))
    result = a.apply({path: "replicas: 3\n"}, "Scale to 3", "op-a", "c-a")
    assert result.attempts == 2 and show(remote, path) == "replicas: 3\n"


def test_race_with_the_same_content_ends_unchanged(remote, make):
    a, b = make("a"), make("b")
    race_once(a, lambda: b.apply(one_file(1), "Same", "op-b", "c-b"))
    result = a.apply(one_file(1), "Same", "op-a", "c-a")
    assert result.changed is False and result.attempts == 2
    assert len(commits(remote)) == 1 and result.sha == commits(remote)[0][0]


def test_gives_up_with_push_conflict_after_max_attempts(remote, make):
    delays: list[float] = []
    policy = RetryPolicy(max_attempts=4, base_delay=0.1, max_delay=0.25)
    a, b = make("a", retry=policy, sleep=delays.append), make("b")
    rival = iter(range(1, 100))
    race_once(a, lambda: b.apply(one_file(n := next(rival)), "Rival", f"op-b{n}", "c"), times=4)

    with pytest.raises(PushConflict) as caught:
        a.apply(one_file(99), "Never lands", "op-a", "corr-a")

    assert caught.value.transient and caught.value.attempts == 4 and caught.value.reason == "PushConflict"
    assert len(delays) == 3 and all(0 <= d <= cap for d, cap in zip(delays, [0.1, 0.2, 0.25]))
    assert a.find_commit("op-a") is None and len(commits(remote)) == 4


def test_an_unclear_push_failure_that_landed_is_recognised(remote, make):
    a = make("a", sleep=lambda _: None)
    real_push = a._push

    def push_then_lose_the_answer(sha: str) -> _Push:
        real_push(sha)
        return _Push("failed", "connection reset by peer")

    a._push = push_then_lose_the_answer  # type: ignore[method-assign]
    result = a.apply(one_file(1), "Add", "op-1", "corr-1")

    assert result.changed and result.attempts == 2 and a.stats.transient_failures == 1
    assert commits(remote) == [(result.sha, [])]


def test_a_persistent_unclear_failure_is_transient(make):
    a = make("a", retry=RetryPolicy(max_attempts=2, base_delay=0), sleep=lambda _: None)
    a._push = lambda sha: _Push("failed", "connection reset by peer")  # type: ignore[method-assign]
    with pytest.raises(TransientGitOpsError, match="connection reset") as caught:
        a.apply(one_file(1), "Add", "op-1", "corr-1")
    assert not isinstance(caught.value, PushConflict)


# -- concurrency ---------------------------------------------------------------------------------

WRITERS = 8
FILES_EACH = 10


def expected_files() -> dict[str, str]:
    return {
        f"tenants/t{w}/svc-{i}.yaml": f"writer: {w}\nfile: {i}\n"
        for w in range(WRITERS) for i in range(FILES_EACH)
    }


def write_files(remote_url: str, workdir: str, writer: int, start: Callable[[], object]) -> list[CommitResult]:
    """One writer: FILES_EACH operations, one file each. Runs in a thread or a process."""
    committer = GitOpsCommitter(remote_url, workdir, f"saga-{writer}", f"saga-{writer}@dbaas.invalid",
                                retry=CONTENDED)
    committer.head()  # clone before the start line, so all writers race on the pushes
    start()
    return [
        committer.apply({f"tenants/t{writer}/svc-{i}.yaml": f"writer: {writer}\nfile: {i}\n"},
                        f"Provision t{writer}/svc-{i}", f"op-{writer}-{i}", f"corr-{writer}")
        for i in range(FILES_EACH)
    ]


def process_writer(remote_url: str, workdir: str, writer: int, barrier, results) -> None:
    try:
        results.put((writer, write_files(remote_url, workdir, writer, barrier.wait)))
    except BaseException as err:  # report, so the parent fails with the reason instead of hanging
        results.put((writer, repr(err)))
        raise


def history_with_operations(remote: Path) -> list[tuple[str, list[str], str, list[str]]]:
    """(sha, parents, Operation-Id, files changed) of every commit on main, in one git call."""
    fmt = "%x1e%H%x00%P%x00%(trailers:key=Operation-Id,valueonly,separator=%x2C)%x00"
    out = git(remote, "log", f"--format={fmt}", "--name-only", "main")
    records = []
    for record in out.split("\x1e")[1:]:
        sha, parents, operation, files = record.split("\0")
        records.append((sha, parents.split(), operation.strip(), files.split()))
    return records


def tree_contents(remote: Path) -> dict[str, str]:
    """Every file on main with its text, in two git calls."""
    paths = git(remote, "ls-tree", "-r", "--name-only", "-z", "main").split("\0")[:-1]
    blobs = subprocess.run(["git", f"--git-dir={remote}", "cat-file", "--batch"],
                           input="".join(f"main:{p}\n" for p in paths).encode(),
                           capture_output=True, check=True).stdout
    contents, offset = {}, 0
    for path in paths:
        header_end = blobs.index(b"\n", offset)
        size = int(blobs[offset:header_end].split()[2])
        contents[path] = blobs[header_end + 1:header_end + 1 + size].decode("utf-8")
        offset = header_end + 1 + size + 1
    return contents


def assert_one_linear_commit_per_change(remote: Path, results: list[CommitResult]) -> None:
    history = history_with_operations(remote)
    assert all(len(parents) <= 1 for _, parents, _, _ in history), "merge commit found"
    assert len(history) == WRITERS * FILES_EACH == len(results)
    assert all(r.changed for r in results)
    assert {r.sha for r in results} == {sha for sha, _, _, _ in history}
    for _sha, _parents, operation, files in history:
        writer, index = operation.split("-")[1:]
        assert files == [f"tenants/t{writer}/svc-{index}.yaml"], operation
    assert {operation for _, _, operation, _ in history} == {
        f"op-{w}-{i}" for w in range(WRITERS) for i in range(FILES_EACH)
    }
    assert tree_contents(remote) == expected_files()


def test_concurrent_threads_keep_a_linear_history(remote, tmp_path):
    barrier = threading.Barrier(WRITERS)
    results: list[CommitResult] = []
    errors: list[BaseException] = []

    def run(writer: int) -> None:
        try:
            results.extend(write_files(str(remote), str(tmp_path / f"t{writer}"), writer, barrier.wait))
        except BaseException as err:  # noqa: BLE001 - handed to the main thread, which fails on it
            errors.append(err)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    assert_one_linear_commit_per_change(remote, results)
    assert sum(r.retries for r in results) > 0, "expected at least one lost push race"


def test_concurrent_processes_keep_a_linear_history(remote, tmp_path):
    # forkserver: children fork from a clean single-threaded server that has already imported
    # the committer, so eight processes start in well under a second.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["gitops.committer", "gitops.layout"])
    barrier, results_queue = ctx.Barrier(WRITERS), ctx.Queue()
    processes = [
        ctx.Process(target=process_writer,
                    args=(str(remote), str(tmp_path / f"p{w}"), w, barrier, results_queue))
        for w in range(WRITERS)
    ]
    for process in processes:
        process.start()
    results: list[CommitResult] = []
    try:
        for _ in range(WRITERS):
            writer, outcome = results_queue.get(timeout=120)
            assert isinstance(outcome, list), f"writer {writer} failed: {outcome}"
            results.extend(outcome)
    except queue.Empty:
        pytest.fail("a writer process did not report within 120 s")
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert all(p.exitcode == 0 for p in processes)
    assert_one_linear_commit_per_change(remote, results)
    assert sum(r.retries for r in results) > 0, "expected at least one lost push race"


# -- group commits ---------------------------------------------------------------------------------


def change(n: int, op: str | None = None, **kwargs) -> Change:
    return Change(one_file(n), f"Provision acme/svc-{n}", op or f"op-{n}", f"corr-{n}", **kwargs)


def test_a_group_is_one_commit_and_one_push_with_every_operations_trailers(remote, make):
    a, b = make("a"), make("b")
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    results = a.apply_group([change(1), change(2, trace=trace), change(3)])

    assert len(commits(remote)) == 1
    assert [r.sha for r in results] == [commits(remote)[0][0]] * 3 and all(r.changed for r in results)
    message = git(remote, "log", "-1", "--format=%B", "main")
    assert message.startswith("Commit 3 operations\n\nProvision acme/svc-1\nProvision acme/svc-2\n"
                              "Provision acme/svc-3\n\n")
    parsed = git(remote, "interpret-trailers", "--parse", stdin=message).splitlines()
    assert parsed == [
        "Operation-Id: op-1", "Correlation-Id: corr-1", "Operation-File: op-1 tenants/acme/svc-1.yaml",
        "Operation-Id: op-2", "Correlation-Id: corr-2", f"Trace-Id: {trace}",
        "Operation-File: op-2 tenants/acme/svc-2.yaml",
        "Operation-Id: op-3", "Correlation-Id: corr-3", "Operation-File: op-3 tenants/acme/svc-3.yaml"]
    for n in (1, 2, 3):  # each operation found by its own trailer, also by another committer
        assert b.find_commit(f"op-{n}") == results[0].sha
    assert b.find_commits(["op-1", "op-3", "op-4"]) == {"op-1": results[0].sha, "op-3": results[0].sha}
    assert a.stats.commits_pushed == 1


def test_one_operation_of_a_group_is_reverted_alone(remote, make):
    a, b = make("a"), make("b")
    a.apply({"tenants/acme/svc-2.yaml": "old\n"}, "Add svc-2", "op-0", "corr-0")
    group = a.apply_group([change(1), change(2), change(3)])

    undo = b.before(group[1].sha, "op-2")
    assert undo == {"tenants/acme/svc-2.yaml": "old\n"}
    b.apply(undo, "Revert op-2", "op-2-revert", "corr-2")
    assert a.list_files("tenants/acme") == ["tenants/acme/svc-1.yaml", "tenants/acme/svc-2.yaml",
                                            "tenants/acme/svc-3.yaml"]
    assert a.read("tenants/acme/svc-2.yaml") == "old\n"
    assert b.before(group[0].sha, "op-1") == {"tenants/acme/svc-1.yaml": None}
    b.apply(b.before(group[0].sha, "op-1"), "Revert op-1", "op-1-revert", "corr-1")
    assert a.list_files("tenants/acme") == ["tenants/acme/svc-2.yaml", "tenants/acme/svc-3.yaml"]


def test_operations_the_repository_already_holds_are_left_out_of_the_group(remote, make):
    a = make("a")
    first = a.apply(one_file(1), "Provision acme/svc-1", "op-1", "corr-1")
    results = a.apply_group([change(1, "op-1-again"), change(2), Change({"tenants/acme/gone.yaml": None},
                                                                          "Remove gone", "op-9", "corr-9")])
    assert results[0] == CommitResult(first.sha, False) and results[2] == CommitResult(first.sha, False)
    assert results[1].changed and results[1].sha != first.sha
    # only op-2 changed something: committed exactly as apply() commits one operation
    assert trailers(remote, results[1].sha) == {"Operation-Id": "op-2", "Correlation-Id": "corr-2"}
    assert a.find_commit("op-1-again") is None and a.find_commit("op-9") is None
    assert a.apply_group([change(1, "op-x"), change(2, "op-y")]) == [CommitResult(results[1].sha, False)] * 2
    assert len(commits(remote)) == 2


def test_a_group_is_idempotent_by_its_trailers_and_content(remote, make):
    a = make("a")
    results = a.apply_group([change(1), change(2)])
    assert a.find_commits(["op-1", "op-2"]) == {"op-1": results[0].sha, "op-2": results[0].sha}
    again = a.apply_group([change(1), change(2)])  # what a runner that found no trailer would do
    assert [r.changed for r in again] == [False, False] and len(commits(remote)) == 1


def test_a_group_wins_a_push_race_by_applying_again(remote, make):
    a, rival = make("a"), make("rival")
    pushes = 0
    original = a._push

    def push_after_a_rival(sha):
        nonlocal pushes
        pushes += 1
        if pushes == 1:
            rival.apply(one_file(9), "Rival", "op-9", "corr-9")
        return original(sha)

    a._push = push_after_a_rival  # type: ignore[method-assign]
    results = a.apply_group([change(1), change(2)])
    assert [r.attempts for r in results] == [2, 2] and all(r.changed for r in results)
    assert [len(p) for _, p in commits(remote)] == [1, 0]
    assert a.list_files("tenants/acme") == ["tenants/acme/svc-1.yaml", "tenants/acme/svc-2.yaml",
                                            "tenants/acme/svc-9.yaml"]


@pytest.mark.parametrize(("group", "message"), [
    ([change(1), Change(one_file(1), "Again", "op-2", "corr-2")], "both change 'tenants/acme/svc-1.yaml'"),
    ([change(1), change(2, "op-1")], "appears twice"),
    ([change(1), Change({"../x": "y"}, "Bad", "op-2", "corr-2")], None),
    ([change(1), Change(one_file(2), "Bad", "op 2", "corr-2")], "operation_id"),
])
def test_an_invalid_group_commits_nothing(remote, make, group, message):
    with pytest.raises((InvalidChange, InvalidPath), match=message):
        make("a").apply_group(group)
    assert git(remote, "for-each-ref").strip() == ""


def test_an_empty_group_does_nothing(remote, make):
    assert make("a").apply_group([]) == []


def test_a_group_after_changes_apart_is_one_push_and_skips_what_is_committed_already(remote, make):
    a = make("a")
    earlier = a.apply_group([change(1), change(2)])
    app = Change({"argocd/applications/acme-lagos.yaml": "kind: Application\n"}, "Add Argo CD Application",
                 "op-app", "corr-app")
    pushes = 0
    original = a._push

    def counted(sha):
        nonlocal pushes
        pushes += 1
        return original(sha)

    a._push = counted  # type: ignore[method-assign]
    results = a.apply_group([change(1), change(3), change(4)], apart=[app], once=True)
    assert pushes == 1
    assert results[0] == CommitResult(earlier[0].sha, True)  # committed before: found, not again
    history = commits(remote)
    assert len(history) == 3 and results[1].sha == results[2].sha == history[0][0]
    assert history[1][0] == a.find_commit("op-app") and changed_files(remote, history[1][0]) == [
        "argocd/applications/acme-lagos.yaml"]
    assert trailers(remote, history[1][0]) == {"Operation-Id": "op-app", "Correlation-Id": "corr-app"}
    again = a.apply_group([change(3)], apart=[app], once=True)  # the Application is there already
    assert again == [CommitResult(results[1].sha, True)] and len(commits(remote)) == 3
