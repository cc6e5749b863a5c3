"""The backup scheduler's policy, through `react`: given the events seen, when the clock ticks (or an
event arrives), then these commands are sent and these alerts published.

Slots come from the policy's cron (UTC), from the moment it was set; the latest due slot is sent
once (ids derived from the service and the slot); retention deletes completed backups past the
policy's count or age, for live and deleted services; a slot not backed up by its deadline, or
whose backup failed, raises one alert, resolved by the next completed backup."""
from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from commands import (
    Actor,
    Authority,
    CommandEnvelope,
    CreateOrganization,
    CreateService,
    RecordPopReport,
    RecordServiceClaimCommitted,
    RecordServiceClaimRendered,
    decide,
    fingerprint_of,
)
from commands.records import BackupService, DeleteBackup
from events import (
    BackupCompleted,
    BackupDeleted,
    BackupDeletionRequested,
    BackupFailed,
    BackupPolicySet,
    BackupRequested,
    CommandRejected,
    Envelope,
    OperationStarted,
    Resources,
    ServiceDeleted,
    ServiceReady,
    ServiceRequested,
    TenantState,
    evolve,
)
from processors.sagas.schedule import (
    SCHEDULER_ACTOR,
    Alert,
    Config,
    EventArrived,
    EventReplayed,
    Missed,
    SchedulerState,
    Send,
    Tick,
    after,
    alert_id_for,
    at_or_after,
    at_or_before,
    backup_command_id,
    backup_id_for,
    expire_command_id,
    react,
    scheduled,
    slot_text,
)

TENANT, SVC, OTHER = "acme", "0d9b8a4e-5f7c-4c1e-9d2a-1b3c5d7e9f01", "1e0c9b5f-6a8d-4d2f-8e3b-2c4d6e8fa012"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)  # a whole minute
SET = T0 - timedelta(seconds=30)  # the policy's time in most tests: 12:00 is its first slot
EVERY_MINUTE = "* * * * *"
_ids = itertools.count(1)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def env(payload, at: datetime, *, aggregate: str = "service", tenant: str = TENANT, command_id: str | None = None,
        actor: str = "alice") -> Envelope:
    n = next(_ids)
    return Envelope(f"ev-{n}", tenant, aggregate, getattr(payload, "service_id", tenant), n, at,
                    command_id or f"cmd-{n}", f"corr-{n}", None, payload, actor_subject=actor)


def service(at: datetime = T0 - timedelta(minutes=30), service_id: str = SVC, name: str = "orders") -> list[Envelope]:
    """A service created and Ready."""
    res = Resources(1, 2, 10, 1)
    return [env(ServiceRequested(service_id, name, "yugabyte", "2.25", "local", "small", res, status="Requested"),
                at),
            env(ServiceReady("op-create", service_id, "orders:5433", status="Ready"), at + minutes(1))]


def policy(at: datetime, schedule: str | None = EVERY_MINUTE, retain_count: int = 0, retain_days: int = 0,
           service_id: str = SVC) -> Envelope:
    return env(BackupPolicySet(service_id, schedule, retain_count, retain_days, False), at)


def requested(slot: datetime, at: datetime | None = None, service_id: str = SVC) -> Envelope:
    text = slot_text(slot)
    return env(BackupRequested(backup_id_for(service_id, text), f"op-{text}", service_id, "orders", "yugabyte",
                               "local", text), at or slot + timedelta(seconds=1), aggregate="backup",
               command_id=backup_command_id(service_id, text), actor=SCHEDULER_ACTOR.subject)


def completed(backup_id: str, taken_at: datetime, at: datetime | None = None, service_id: str = SVC) -> Envelope:
    return env(BackupCompleted(backup_id, f"op-{backup_id}", service_id, taken_at, 1024, f"s3://b/{backup_id}",
                               "dek-1", "kek-1"), at or taken_at + timedelta(seconds=30), aggregate="backup")


def slot_backup(slot: datetime, service_id: str = SVC) -> str:
    return backup_id_for(service_id, slot_text(slot))


def completed_slot(slot: datetime, after_s: float = 30, service_id: str = SVC) -> Envelope:
    return completed(slot_backup(slot, service_id), slot + timedelta(seconds=5), slot + timedelta(seconds=after_s),
                     service_id)


def given(*events: Envelope | list[Envelope], config: Config | None = None) -> SchedulerState:
    """The state a scheduler has after replaying `events` at start, and a first tick."""
    state = SchedulerState.start(config)
    for e in _flat(events):
        state, effects = react(state, EventReplayed(e))
        assert effects == []
    return state


def _flat(events) -> list[Envelope]:
    return [e for item in events for e in (item if isinstance(item, list) else [item])]


def arrive(state: SchedulerState, *events: Envelope | list[Envelope]) -> tuple[SchedulerState, list]:
    effects: list = []
    for e in _flat(events):
        state, more = react(state, EventArrived(e, e.occurred_at))
        effects += more
    return state, effects


def tick(state: SchedulerState, at: datetime) -> tuple[SchedulerState, list]:
    return react(state, Tick(at))


def sends(effects) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def alerts(effects) -> list[Alert]:
    return [e for e in effects if isinstance(e, Alert)]


def backups_sent(effects) -> list[BackupService]:
    return [s.command.payload for s in sends(effects) if isinstance(s.command.payload, BackupService)]


def deletions_sent(effects) -> list[str]:
    return [s.command.payload.backup_id for s in sends(effects) if isinstance(s.command.payload, DeleteBackup)]


def missed(effects) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in effects:
        if isinstance(m, Missed):
            out[m.reason] = out.get(m.reason, 0) + m.slots
    return out


# -- the schedule's slots ----------------------------------------------------------------------
def test_slots_at_or_before_and_after_an_instant():
    assert at_or_before(EVERY_MINUTE, T0) == T0
    assert at_or_before(EVERY_MINUTE, T0 + timedelta(milliseconds=300)) == T0
    assert at_or_before(EVERY_MINUTE, T0 - timedelta(milliseconds=300)) == T0 - minutes(1)
    assert at_or_after(EVERY_MINUTE, T0) == T0
    assert at_or_after(EVERY_MINUTE, T0 + timedelta(milliseconds=300)) == T0 + minutes(1)
    assert after(EVERY_MINUTE, T0) == T0 + minutes(1)
    assert after(EVERY_MINUTE, T0 - timedelta(milliseconds=300)) == T0
    assert at_or_before("0 2 * * *", T0) == datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    assert slot_text(T0) == "2026-03-01T12:00:00Z"


def test_ids_are_derived_from_the_service_and_the_slot():
    text = slot_text(T0)
    assert backup_id_for(SVC, text) == backup_id_for(SVC, text) != backup_id_for(OTHER, text)
    assert backup_command_id(SVC, text) not in (backup_id_for(SVC, text), backup_command_id(SVC, slot_text(T0 + minutes(1))))
    assert expire_command_id("b1") != expire_command_id("b1", 1)


# -- starting scheduled backups ----------------------------------------------------------------
def test_an_every_minute_schedule_sends_each_slot_once():
    state = given(service(), policy(SET))
    state, effects = tick(state, T0 + timedelta(seconds=2))
    [backup] = backups_sent(effects)
    text = slot_text(T0)
    assert backup == BackupService(SVC, backup_id_for(SVC, text), text)
    [send] = sends(effects)
    assert send.command.command_id == backup_command_id(SVC, text) and send.first
    assert send.command.actor == SCHEDULER_ACTOR and send.command.tenant_id == TENANT

    state, effects = tick(state, T0 + timedelta(seconds=7))
    assert sends(effects) == [], "sent moments ago: not again before it is judged"
    state, _ = arrive(state, requested(T0, T0 + timedelta(seconds=3)))
    state, effects = tick(state, T0 + timedelta(seconds=50))
    assert sends(effects) == []
    state, _ = arrive(state, completed_slot(T0))
    state, effects = tick(state, T0 + minutes(1) + timedelta(seconds=1))
    assert [b.slot for b in backups_sent(effects)] == [slot_text(T0 + minutes(1))]


def test_a_command_not_seen_judged_is_sent_again_with_the_same_id_after_a_while():
    state = given(service(), policy(SET), config=Config(resend_after=timedelta(seconds=20)))
    state, [first] = tick(state, T0 + timedelta(seconds=1))
    state, effects = tick(state, T0 + timedelta(seconds=20))
    assert effects == []
    state, [again] = tick(state, T0 + timedelta(seconds=21))
    assert again.command.command_id == first.command.command_id and not again.first
    state, [newer] = tick(state, T0 + timedelta(seconds=61))
    assert newer.command.payload.slot == slot_text(T0 + minutes(1)), "a later slot is due: it is sent instead"


def test_a_restart_does_not_send_a_slot_already_requested():
    log = [*service(), policy(SET), requested(T0)]
    state = given(log)
    _, effects = tick(state, T0 + timedelta(seconds=30))
    assert effects == []


def test_a_restart_before_the_request_was_judged_sends_the_same_command_again():
    before = given(service(), policy(SET))
    _, [first] = tick(before, T0 + timedelta(seconds=1))
    restarted = given(service(), policy(SET))
    _, [again] = tick(restarted, T0 + timedelta(seconds=2))
    assert again.command.command_id == first.command.command_id
    assert again.command.payload == first.command.payload


def test_two_schedulers_fed_the_same_events_send_the_same_commands_and_alerts():
    log = [*service(), policy(T0 - minutes(5), retain_count=1), *service(service_id=OTHER, name="billing"),
           policy(T0 - minutes(5), service_id=OTHER), requested(T0 - minutes(3)),
           completed(slot_backup(T0 - minutes(3)), T0 - minutes(3)), requested(T0 - minutes(2)),
           completed(slot_backup(T0 - minutes(2)), T0 - minutes(2))]
    config = Config(missed_after=minutes(1), wait_for_next_slot=False)
    one, two = given(log, config=config), given(log, config=config)
    raised = []
    for at in (T0, T0 + timedelta(seconds=5), T0 + minutes(2)):
        one, a = tick(one, at)
        two, b = tick(two, at)
        assert [(s.command.command_id, s.command.payload) for s in sends(a)] == \
               [(s.command.command_id, s.command.payload) for s in sends(b)]
        assert alerts(a) == alerts(b)
        raised += alerts(a)
    assert {a.service_id for a in raised} == {SVC, OTHER}, "slots were missed: both raise the same alerts"


def test_two_schedulers_sending_the_same_slot_start_one_backup():
    """The command processor's side: the same command id and payload is judged once."""
    log = [*service(), policy(SET)]
    commands = [send.command for state in (given(log), given(log))
                for send in sends(tick(state, T0 + timedelta(seconds=1))[1])]
    assert len(commands) == 2 and commands[0].command_id == commands[1].command_id
    tenant = TenantState(TENANT)
    for e in _setup_for_decide():
        tenant = evolve(tenant, e)
    platform = Authority("platform", "platform")
    first = decide(tenant, commands[0], fingerprint_of(commands[0].payload), platform)
    assert [type(e.payload).__name__ for e in first] == ["BackupRequested", "OperationAccepted"]
    assert first[0].payload.slot == slot_text(T0) and first[0].payload.backup_id == slot_backup(T0)
    for e in first:
        tenant = evolve(tenant, e)
    assert decide(tenant, commands[1], fingerprint_of(commands[1].payload), platform) == []


def _setup_for_decide() -> list[Envelope]:
    """An organization whose service is Ready, as the command processor folds it."""
    owner = Actor("alice", ("org-owner",))
    saga = Actor("system:saga", ("system",))
    tenant = TenantState(TENANT)
    out: list[Envelope] = []

    def judge(payload, actor, authority):
        nonlocal tenant
        command = CommandEnvelope(f"setup-{next(_ids)}", TENANT, actor, T0 - minutes(20), "corr", payload)
        evs = decide(tenant, command, fingerprint_of(payload), Authority(authority, authority))
        for e in evs:
            tenant = evolve(tenant, e)
        out.extend(evs)
        return evs

    judge(CreateOrganization(TENANT, "Acme"), owner, "gateway")
    evs = judge(CreateService(SVC, "orders", "yugabyte", "local", "small"), owner, "gateway")
    started = next(e.payload for e in evs if isinstance(e.payload, OperationStarted))
    judge(RecordServiceClaimRendered(SVC, started.operation_id, "d"), saga, "platform")
    judge(RecordServiceClaimCommitted(SVC, started.operation_id, "local", "p.yaml", "sha"), saga, "platform")
    judge(RecordPopReport(SVC, started.operation_id, "local", "Ready", "e:1", None, None), saga, "platform")
    assert tenant.services[SVC].provisioned
    return out


def test_after_an_outage_only_the_latest_due_slot_is_sent_and_the_rest_are_missed():
    config = Config(missed_after=minutes(10))
    state = given(service(), policy(T0), config=config)
    now = T0 + timedelta(hours=3, seconds=20)
    state, effects = tick(state, now)
    assert [b.slot for b in backups_sent(effects)] == [slot_text(T0 + timedelta(hours=3))]
    # slots up to 10 minutes before now are past their deadline: 12:00 .. 14:50
    assert missed(effects) == {"not_taken": 171}
    [raised] = alerts(effects)
    assert raised.kind == "backup_slot_missed" and raised.state == "raised"
    assert raised.alert_id == alert_id_for(TENANT, SVC, "backup_slot_missed", slot_text(T0))
    assert raised.raised_at == T0 + minutes(10)

    # the catch-up backup completes: the slots still within their deadline are kept, the alert resolved
    latest = T0 + timedelta(hours=3)
    state, effects = arrive(state, requested(latest, now + timedelta(seconds=1)),
                            completed(slot_backup(latest), now + timedelta(seconds=2), now + timedelta(seconds=30)))
    [resolved] = alerts(effects)
    assert resolved.alert_id == raised.alert_id and resolved.state == "resolved"
    assert resolved.resolved_at == now + timedelta(seconds=30) and "171 slots missed" in resolved.message
    state, effects = tick(state, now + minutes(10))
    assert missed(effects) == {} and alerts(effects) == [], "14:51 to 15:00 are kept by the backup of 15:00"


def test_a_long_outage_is_judged_a_bounded_number_of_slots_per_tick():
    config = Config(missed_after=minutes(10), max_walk=50)
    state = given(service(), policy(T0), config=config)
    now = T0 + timedelta(hours=3, seconds=20)
    counted = 0
    for n in range(5):
        state, effects = tick(state, now + timedelta(seconds=n))
        counted += missed(effects).get("not_taken", 0)
    assert counted == 171, "the same slots as in one go, over a few ticks"


def test_no_slot_before_the_policy_was_set():
    state = given(service(), policy(T0 + timedelta(seconds=20)))
    state, effects = tick(state, T0 + timedelta(seconds=30))
    assert effects == [], "12:00 came before the policy"
    state, effects = tick(state, T0 + minutes(1) + timedelta(seconds=1))
    assert [b.slot for b in backups_sent(effects)] == [slot_text(T0 + minutes(1))]


def test_no_slot_before_the_service_first_became_ready():
    res = Resources(1, 2, 10, 1)
    state = given(env(ServiceRequested(SVC, "orders", "yugabyte", "2.25", "local", "small", res,
                                       status="Requested"), T0 - minutes(10)),
                  policy(T0 - minutes(9)), config=Config(missed_after=minutes(1), wait_for_next_slot=False))
    state, effects = tick(state, T0 + minutes(5))
    assert effects == [], "nothing can be backed up before the service runs: nothing sent, nothing missed"
    state, _ = arrive(state, env(ServiceReady("op", SVC, "e:1", status="Ready"), T0 + minutes(5)))
    state, effects = tick(state, T0 + minutes(6) + timedelta(seconds=1))
    assert [b.slot for b in backups_sent(effects)] == [slot_text(T0 + minutes(6))]


def test_a_running_backup_holds_the_next_slot_until_it_ends():
    state = given(service(), policy(SET), requested(T0 - minutes(1)))
    state, effects = tick(state, T0 + timedelta(seconds=1))
    assert backups_sent(effects) == [], "the processor allows one backup of a service at a time"
    state, _ = arrive(state, completed_slot(T0 - minutes(1), after_s=75))
    state, effects = tick(state, T0 + timedelta(seconds=16))
    assert [b.slot for b in backups_sent(effects)] == [slot_text(T0)]


def test_a_service_that_cannot_be_backed_up_now_is_not_sent():
    deleting = env(OperationStarted("op-del", SVC, "delete", "orders", "yugabyte", "2.25", "local", "small",
                                    Resources(1, 2, 10, 1), status="Deleting"), T0 - minutes(1))
    state = given(service(), policy(SET), deleting)
    _, effects = tick(state, T0 + timedelta(seconds=1))
    assert backups_sent(effects) == []


def test_a_rejected_slot_is_not_sent_again():
    state = given(service(), policy(SET))
    state, [send] = tick(state, T0 + timedelta(seconds=1))
    rejection = CommandRejected("op-x", "BackupService", "conflict", "service_id", "busy", "fp")
    state, _ = arrive(state, env(rejection, T0 + timedelta(seconds=2), aggregate="operation",
                                 command_id=send.command.command_id, actor=SCHEDULER_ACTOR.subject))
    _, effects = tick(state, T0 + minutes(1) - timedelta(seconds=1))
    assert sends(effects) == []


def test_a_deleted_service_gets_no_backups_but_its_expired_backups_are_deleted():
    old, new = slot_backup(T0 - minutes(10)), slot_backup(T0 - minutes(5))
    state = given(service(), policy(T0 - minutes(11), schedule="*/5 * * * *", retain_days=1),
                  requested(T0 - minutes(10)), completed(old, T0 - minutes(10)),
                  requested(T0 - minutes(5)), completed(new, T0 - minutes(5)),
                  env(ServiceDeleted("op-del", SVC, status="Deleted"), T0 - minutes(2)))
    state, effects = tick(state, T0 + timedelta(seconds=1))
    assert effects == []
    assert scheduled(state) == 0
    state, effects = tick(state, T0 - minutes(10) + timedelta(days=1))
    assert deletions_sent(effects) == [old]
    [send] = sends(effects)
    assert send.command.command_id == expire_command_id(old) and send.purpose == "expire"
    state, _ = arrive(state, env(BackupDeletionRequested(old, "op", SVC, "local", "expired"),
                                 T0 - minutes(10) + timedelta(days=1, seconds=1), aggregate="backup"))
    state, effects = tick(state, T0 - minutes(5) + timedelta(days=1, seconds=1))
    assert deletions_sent(effects) == [new]


def test_retention_by_count_keeps_the_newest():
    slots_ = [T0 - minutes(n) for n in (4, 3, 2, 1)]
    log = [*service(), policy(T0 - minutes(10), retain_count=2)]
    for s in slots_:
        log += [requested(s), completed_slot(s)]
    state = given(log)
    state, effects = tick(state, T0 + timedelta(seconds=1))
    assert sorted(deletions_sent(effects)) == sorted(slot_backup(s) for s in slots_[:2])
    # once their deletion is under way they are not sent again, nor counted among the kept
    state, _ = arrive(state, *[env(BackupDeletionRequested(slot_backup(s), "op", SVC, "local", "expired"),
                                   T0 + timedelta(seconds=2), aggregate="backup") for s in slots_[:2]])
    state, effects = tick(state, T0 + minutes(2))
    assert deletions_sent(effects) == []
    state, _ = arrive(state, *[env(BackupDeleted(slot_backup(s), "op", SVC), T0 + minutes(2), aggregate="backup")
                               for s in slots_[:2]])
    state, effects = tick(state, T0 + minutes(3))
    assert deletions_sent(effects) == []


def test_retention_by_age():
    state = given(service(), policy(T0 - timedelta(days=10), schedule=None, retain_days=7),
                  requested(T0 - timedelta(days=8)), completed(slot_backup(T0 - timedelta(days=8)), T0 - timedelta(days=8)),
                  requested(T0 - timedelta(days=6)), completed(slot_backup(T0 - timedelta(days=6)), T0 - timedelta(days=6)))
    state, effects = tick(state, T0)
    assert deletions_sent(effects) == [slot_backup(T0 - timedelta(days=8))]
    state, _ = arrive(state, env(BackupDeletionRequested(slot_backup(T0 - timedelta(days=8)), "op", SVC, "local",
                                                         "expired"), T0 + timedelta(seconds=1), aggregate="backup"))
    state, effects = tick(state, T0 + timedelta(days=1) - timedelta(seconds=1))
    assert deletions_sent(effects) == []
    state, effects = tick(state, T0 + timedelta(days=1))
    assert deletions_sent(effects) == [slot_backup(T0 - timedelta(days=6))]


def test_a_failed_deletion_is_tried_again_with_a_new_command_id():
    bid = slot_backup(T0 - minutes(3))
    state = given(service(), policy(T0 - minutes(10), schedule=None, retain_count=1),
                  requested(T0 - minutes(3)), completed(bid, T0 - minutes(3)),
                  requested(T0 - minutes(2)), completed(slot_backup(T0 - minutes(2)), T0 - minutes(2)),
                  env(BackupDeletionRequested(bid, "op-d", SVC, "local", "expired"), T0 - minutes(1),
                      aggregate="backup", command_id=expire_command_id(bid)),
                  env(BackupFailed(bid, "op-d", SVC, "the store was down", "pop_failed", "pop-report",
                                   status="Completed"), T0 - timedelta(seconds=30), aggregate="backup"))
    _, effects = tick(state, T0)
    [send] = sends(effects)
    assert send.command.payload == DeleteBackup(bid) and send.command.command_id == expire_command_id(bid, 1)


# -- missed slots and alerts -------------------------------------------------------------------
SHORT = Config(missed_after=minutes(2), wait_for_next_slot=False)


def test_a_slot_not_backed_up_by_its_deadline_raises_one_alert_resolved_by_the_next_backup():
    state = given(service(), policy(SET), config=SHORT)
    state, _ = tick(state, T0 + timedelta(seconds=1))
    state, _ = arrive(state, requested(T0))
    state, effects = tick(state, T0 + minutes(2) - timedelta(seconds=1))
    assert alerts(effects) == []
    state, effects = tick(state, T0 + minutes(2) + timedelta(seconds=1))
    [raised] = alerts(effects)
    assert missed(effects) == {"late": 1}
    assert raised.state == "raised" and raised.kind == "backup_slot_missed" and raised.severity == "warning"
    assert raised.alert_id == alert_id_for(TENANT, SVC, "backup_slot_missed", slot_text(T0))
    assert raised.raised_at == T0 + minutes(2) and raised.resolved_at is None and raised.source == "scheduler"
    assert slot_text(T0) in raised.message and '"orders"' in raised.message
    # later slots pass their deadline too (the backup is still running): the same alert, not raised again
    state, effects = tick(state, T0 + minutes(4))
    assert alerts(effects) == [] and missed(effects) == {"not_taken": 2}
    # the backup completes late: it covers its own slot, not the later ones
    state, effects = arrive(state, completed_slot(T0, after_s=250))
    assert alerts(effects) == []
    state, effects = tick(state, T0 + minutes(4) + timedelta(seconds=11))
    assert [b.slot for b in backups_sent(effects)] == [slot_text(T0 + minutes(4))]
    state, effects = arrive(state, requested(T0 + minutes(4), T0 + minutes(4) + timedelta(seconds=12)),
                            completed_slot(T0 + minutes(4), after_s=40))
    [resolved] = alerts(effects)
    assert resolved.alert_id == raised.alert_id and resolved.state == "resolved"
    assert resolved.raised_at == raised.raised_at and resolved.resolved_at == T0 + minutes(4) + timedelta(seconds=40)
    assert "resolved (3 slots missed)" in resolved.message
    state, effects = tick(state, T0 + minutes(6))
    assert alerts(effects) == [] and missed(effects) == {}, "12:03 is kept by the backup taken at 12:04"


def test_a_slot_backed_up_in_time_raises_nothing():
    state = given(service(), policy(SET), requested(T0), completed_slot(T0, after_s=100), config=SHORT)
    _, effects = tick(state, T0 + minutes(2) + timedelta(seconds=1))
    assert alerts(effects) == [] and missed(effects) == {}


def test_a_failed_backup_raises_a_backup_failed_alert_at_once_and_only_once():
    state = given(service(), policy(SET))
    state, _ = tick(state, T0 + timedelta(seconds=1))
    failure = BackupFailed(slot_backup(T0), f"op-{slot_text(T0)}", SVC, "the PoP reported: disk full",
                           "pop_failed", "pop-report")
    state, effects = arrive(state, requested(T0), env(failure, T0 + timedelta(seconds=40), aggregate="backup"))
    [raised] = alerts(effects)
    assert raised.kind == "backup_failed" and raised.severity == "critical"
    assert raised.alert_id == alert_id_for(TENANT, SVC, "backup_failed", slot_text(T0))
    assert "disk full" in raised.message and missed(effects) == {"failed": 1}
    state, effects = tick(state, T0 + minutes(30))
    assert alerts(effects) == [], "its deadline passing does not raise it again"


def test_a_restart_publishes_open_alerts_again_under_the_same_id_and_raises_nothing_new():
    log = [*service(), policy(SET), requested(T0)]
    live = given(log, config=SHORT)
    live, effects = tick(live, T0 + minutes(2) + timedelta(seconds=1))
    [raised] = alerts(effects)
    restarted = given(log, config=SHORT)
    restarted, effects = tick(restarted, T0 + minutes(2) + timedelta(seconds=5))
    assert alerts(effects) == [raised], "the same alert, once"
    restarted, effects = tick(restarted, T0 + minutes(2) + timedelta(seconds=10))
    assert alerts(effects) == []


def test_a_restart_after_the_deadline_passed_unseen_raises_the_alert_it_missed():
    log = [*service(), policy(SET), requested(T0)]
    state = given(log, config=SHORT)
    state, effects = tick(state, T0 + minutes(30))
    [raised] = alerts(effects)
    assert raised.raised_at == T0 + minutes(2), "raised at the deadline, whoever notices it"


def test_a_replay_judges_as_a_scheduler_that_never_stopped():
    log = [*service(), policy(SET), requested(T0), completed_slot(T0, after_s=200),
           requested(T0 + minutes(4)), completed_slot(T0 + minutes(4), after_s=30)]
    live = given(log[:4], config=SHORT)
    live, seen = tick(live, T0 + minutes(3))
    live, more = arrive(live, *log[4:])
    live_alerts = alerts(seen) + alerts(more)
    assert [a.state for a in live_alerts] == ["raised", "resolved"]
    replayed = given(log, config=SHORT)
    _, effects = tick(replayed, T0 + minutes(5))
    assert alerts(effects) == [live_alerts[-1]], "after a restart: the resolved alert again, same id and times"


def test_deleting_the_service_resolves_its_alert():
    state = given(service(), policy(SET), requested(T0), config=SHORT)
    state, effects = tick(state, T0 + minutes(3))
    [raised] = alerts(effects)
    state, effects = arrive(state, env(ServiceDeleted("op-del", SVC, status="Deleted"), T0 + minutes(4)))
    [resolved] = alerts(effects)
    assert resolved.alert_id == raised.alert_id and "deleted" in resolved.message


# -- policy changes ----------------------------------------------------------------------------
def test_removing_the_schedule_stops_scheduling_and_resolves_the_alert():
    state = given(service(), policy(SET), requested(T0), config=SHORT)
    state, effects = tick(state, T0 + minutes(3))
    assert alerts(effects)
    state, _ = arrive(state, completed_slot(T0, after_s=190),
                      policy(T0 + minutes(3) + timedelta(seconds=20), schedule=None))
    state, effects = tick(state, T0 + minutes(10))
    assert backups_sent(effects) == [] and missed(effects) == {}
    assert scheduled(state) == 0


def test_removing_the_schedule_of_a_service_with_an_open_alert_resolves_it():
    state = given(service(), policy(SET), requested(T0), config=SHORT)
    state, effects = tick(state, T0 + minutes(3))
    [raised] = alerts(effects)
    state, effects = arrive(state, policy(T0 + minutes(3) + timedelta(seconds=20), schedule=None))
    [resolved] = alerts(effects)
    assert resolved.alert_id == raised.alert_id and "turned off" in resolved.message


def test_a_changed_schedule_sends_the_new_slots_only():
    state = given(service(), policy(T0 - minutes(30)), requested(T0 - minutes(1)),
                  completed_slot(T0 - minutes(1)), policy(T0 - timedelta(seconds=30), schedule="0 * * * *"))
    state, effects = tick(state, T0 + timedelta(seconds=1))
    assert [b.slot for b in backups_sent(effects)] == [slot_text(T0)], "12:00 is a slot of both"
    state, _ = arrive(state, requested(T0), completed_slot(T0))
    state, effects = tick(state, T0 + minutes(1) + timedelta(seconds=1))
    assert backups_sent(effects) == [], "12:01 is no slot of the new schedule"
    state, effects = tick(state, T0 + timedelta(hours=1, seconds=1))
    assert [b.slot for b in backups_sent(effects)] == [slot_text(T0 + timedelta(hours=1))]


def test_the_policy_gauge_counts_live_services_with_a_schedule():
    state = given(service(), policy(T0), *service(service_id=OTHER, name="billing"),
                  policy(T0, schedule=None, retain_days=3, service_id=OTHER))
    assert scheduled(state) == 1


@pytest.mark.parametrize("schedule", ["*/5 * * * *", "0 2 * * *", "15 3 * * 1"])
def test_slots_follow_the_cron_expression(schedule):
    state = given(service(at=T0 - timedelta(days=9)), policy(T0 - timedelta(days=8), schedule=schedule))
    _, effects = tick(state, T0 + timedelta(seconds=1))
    [backup] = backups_sent(effects)
    assert backup.slot == slot_text(at_or_before(schedule, T0 + timedelta(seconds=1)))


@pytest.mark.parametrize("seed", range(6))
def test_live_and_replayed_schedulers_judge_a_random_history_alike(seed):
    """Backups that complete on time, late, or fail, and outages with nothing taken, over a few hours
    of an every-5-minutes schedule: a scheduler that ticked through it and one that replays it agree
    on every alert (ids, states, times) and every missed slot."""
    import random

    rnd = random.Random(seed)
    config = Config(missed_after=minutes(7), wait_for_next_slot=rnd.random() < 0.5)
    schedule = "*/5 * * * *"
    log = [*service(), policy(SET, schedule=schedule)]
    slot = T0
    while slot < T0 + timedelta(hours=4):
        fate = rnd.choice(["ok", "ok", "ok", "late", "failed", "skipped"])
        if fate != "skipped":
            log.append(requested(slot, slot + timedelta(seconds=2)))
            backup = slot_backup(slot)
            if fate == "failed":
                log.append(env(BackupFailed(backup, "op", SVC, "no space", "pop_failed", "pop-report"),
                               slot + timedelta(seconds=rnd.randint(10, 200)), aggregate="backup"))
            else:
                took = rnd.randint(5, 120) if fate == "ok" else rnd.randint(8 * 60, 14 * 60)
                log.append(completed(backup, slot + timedelta(seconds=3), slot + timedelta(seconds=took)))
        slot += minutes(5) * (1 if fate != "late" else 3)  # a late backup holds the next slots back
    log.sort(key=lambda e: e.occurred_at)
    end = slot + timedelta(minutes=30)

    live, seen = given(log[:3], config=config), []
    pending = log[3:]
    t = T0
    while t < end:
        while pending and pending[0].occurred_at <= t:
            live, more = arrive(live, pending.pop(0))
            seen += more
        live, more = tick(live, t)
        seen += more
        t += timedelta(seconds=rnd.randint(5, 40))
    live, more = tick(live, end)
    seen += more

    replayed, effects = tick(given(log, config=config), end)
    final = {a.alert_id: a for a in alerts(seen)}
    for a in alerts(effects):  # after a restart: the open alerts and the last resolved one, as they stand
        assert final[a.alert_id] == a
    assert {k for k, a in final.items() if a.state == "raised"} == {a.alert_id for a in alerts(effects)
                                                                    if a.state == "raised"}
    live_missed = missed([e for e in seen if isinstance(e, Missed)])
    svc_live, svc_replayed = live.service(TENANT, SVC), replayed.service(TENANT, SVC)
    assert svc_live.judged == svc_replayed.judged and svc_live.incident == svc_replayed.incident
    assert svc_live.last_resolved == svc_replayed.last_resolved
    assert sum(live_missed.values()) >= (svc_live.incident.missed if svc_live.incident else 0)


def test_a_failed_backup_taken_on_demand_raises_an_alert_resolved_by_the_next_completed_backup():
    state = given(service())
    failed_at = T0 - minutes(1)
    state, effects = arrive(state, env(BackupRequested("bk-od", "op-od", SVC, "orders", "yugabyte", "local"),
                                       failed_at - minutes(1), aggregate="backup"),
                            env(BackupFailed("bk-od", "op-od", SVC, "the PoP reported: object storage unavailable",
                                             "pop_failed", "pop-report", True), failed_at, aggregate="backup"))
    [raised] = alerts(effects)
    assert (raised.kind, raised.state) == ("backup_failed", "raised") and "object storage unavailable" in raised.message
    replayed = given(service(), env(BackupRequested("bk-od", "op-od", SVC, "orders", "yugabyte", "local"),
                                    failed_at - minutes(1), aggregate="backup"),
                     env(BackupFailed("bk-od", "op-od", SVC, "x", "pop_failed", "pop-report", True), failed_at,
                         aggregate="backup"))
    assert replayed.tenants[TENANT][SVC].incident.alert_id == raised.alert_id  # the same alert after a restart
    _, effects = arrive(state, completed("bk-2", T0))
    [resolved] = alerts(effects)
    assert (resolved.alert_id, resolved.state) == (raised.alert_id, "resolved")
