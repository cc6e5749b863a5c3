"""The scheduler's runner with fakes of its ports: the log is replayed without effects, then followed
and ticked; commands and alerts go to their sinks; a sink that fails stops the process (the replay
at the next start sends again, under the same ids); an undecodable event is skipped. And the
process's settings."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from commands.records import BackupService
from events import Envelope
from processors.sagas.schedule import Alert, Config, SchedulerState, backup_command_id, slot_text
from processors.sagas.schedule_runner import SchedulerRunner
from processors.scheduler import SchedulerSettings
from runtime.settings import SettingsError, read
from runtime.signing import Signer
from schemas.errors import PoisonMessage
from tests.unit.processors.test_schedule_policy import SET, SVC, T0, policy, requested, service


@dataclass
class Raw:
    env: Envelope | None  # None: a message that is no event

    def value(self):
        return self.env  # the fake decoder's input


class FakeLog:
    def __init__(self, replayed: list[Envelope], following: list[list[Envelope]] | None = None):
        self.replayed = replayed
        self.following = list(following or [])

    def replay(self):
        return [Raw(e) for e in self.replayed] + [Raw(None)]

    def poll(self, timeout: float):
        return [Raw(e) for e in self.following.pop(0)] if self.following else []


class Decoder:
    def event(self, value):
        if value is None:
            raise PoisonMessage("not an event")
        return value


class Sink:
    def __init__(self, fail: bool = False):
        self.sent: list = []
        self.fail = fail

    def send(self, item) -> None:
        if self.fail:
            raise RuntimeError("broker down")
        self.sent.append(item)


class Clock:
    def __init__(self, now):
        self.t = now

    def now(self):
        return self.t


class StopAfter:
    def __init__(self, rounds: int):
        self.rounds = rounds

    def is_set(self) -> bool:
        self.rounds -= 1
        return self.rounds < 0


def runner(log: FakeLog, commands: Sink, alerts: Sink, clock: Clock, config: Config | None = None) -> SchedulerRunner:
    return SchedulerRunner(SchedulerState.start(config), events=log, decoder=Decoder(), commands=commands,
                           alerts=alerts, clock=clock, tick_seconds=5, monotonic=lambda: clock.t.timestamp())


def test_the_replay_asks_for_nothing_then_the_first_tick_sends_the_due_slot():
    commands, alerts = Sink(), Sink()
    clock = Clock(T0 + timedelta(seconds=1))
    r = runner(FakeLog([*service(), policy(SET)]), commands, alerts, clock)
    r.replay()
    assert commands.sent == [] and r.replayed == 3, "the undecodable message is skipped"
    r.loop(StopAfter(1))
    [command] = commands.sent
    assert command.command_id == backup_command_id(SVC, slot_text(T0))
    assert isinstance(command.payload, BackupService) and command.payload.slot == slot_text(T0)


def test_followed_events_are_fed_and_effects_performed():
    commands, alerts = Sink(), Sink()
    clock = Clock(T0 + timedelta(seconds=1))
    config = Config(missed_after=timedelta(seconds=30), wait_for_next_slot=False)
    r = runner(FakeLog([*service(), policy(SET)], [[requested(T0)]]), commands, alerts, clock, config)
    r.replay()
    r.loop(StopAfter(2))
    assert len(commands.sent) == 1
    clock.t = T0 + timedelta(seconds=31)
    r.tick()
    [alert] = alerts.sent
    assert isinstance(alert, Alert) and alert.state == "raised" and alert.kind == "backup_slot_missed"


def test_a_sink_that_fails_stops_the_runner():
    clock = Clock(T0 + timedelta(seconds=1))
    r = runner(FakeLog([*service(), policy(SET)]), Sink(fail=True), Sink(), clock)
    r.replay()
    with pytest.raises(RuntimeError, match="broker down"):
        r.tick()


ENV = {"DBAAS_KAFKA_BOOTSTRAP": "localhost:9092", "DBAAS_REGISTRY_URL": "http://r",
       "DBAAS_SIGNING_KEY_ID": "platform", "DBAAS_SIGNING_KEY": Signer.generate("platform").private_text()}


def test_settings_defaults_and_their_config():
    settings = read(SchedulerSettings, ENV)
    assert settings.tick_seconds == 5 and settings.missed_after == 600 and settings.wait_for_next_slot
    assert settings.config == Config(missed_after=timedelta(minutes=10), wait_for_next_slot=True,
                                     resend_after=timedelta(seconds=60))
    short = read(SchedulerSettings, {**ENV, "DBAAS_SCHEDULER_TICK_SECONDS": "0.5",
                                     "DBAAS_SCHEDULER_MISSED_AFTER": "20", "DBAAS_SCHEDULER_WAIT_FOR_NEXT_SLOT": "false"})
    assert short.tick_seconds == 0.5 and short.config.missed_after == timedelta(seconds=20)
    assert not short.config.wait_for_next_slot


def test_settings_name_what_is_wrong():
    with pytest.raises(SettingsError) as err:
        read(SchedulerSettings, {**ENV, "DBAAS_SCHEDULER_TICK_SECONDS": "0", "DBAAS_SIGNING_KEY": ""})
    assert "DBAAS_SCHEDULER_TICK_SECONDS" in str(err.value) and "DBAAS_SIGNING_KEY" in str(err.value)


def test_an_alert_is_a_record_of_the_alert_schema():
    from schemas import parsed_schema
    from schemas.codec import decode, encode

    raised = Alert("a-1", "acme", SVC, "backup_slot_missed", "warning", "raised", "no backup", T0)
    resolved = Alert("a-1", "acme", None, "backup_failed", "critical", "resolved", "done", T0,
                     T0 + timedelta(minutes=3))
    for alert in (raised, resolved):
        data = encode(7, parsed_schema("alert"), alert.to_avro())
        assert decode(data, lambda _id: parsed_schema("alert")) == alert.to_avro()


def test_the_launcher_starts_the_scheduler_with_the_platforms_key(tmp_path, monkeypatch):
    from deploy.stack import config
    from deploy.stack.base import Context
    from deploy.stack.components import CONTROL_PLANE

    monkeypatch.delenv("DBAAS_PORT_OFFSET", raising=False)
    ctx = Context(config.resolve(tmp_path / "home", port_offset=1000), lambda: None, lambda _m: None)
    by_name = {c.name: c for c in CONTROL_PLANE}
    scheduler = by_name["scheduler"]
    assert scheduler.module == "processors.scheduler"
    ports = [c.metrics_port(ctx) for c in CONTROL_PLANE if c.metrics_slot is not None]
    assert len(ports) == len(set(ports)), "each process its own metrics port"
    settings = read(SchedulerSettings, scheduler.env(ctx))  # the launcher's env is a complete configuration
    platform = Signer.from_text("platform", ctx.secrets()["signing_key_platform"])
    assert settings.signer.key_id == "platform" and settings.signer.public_text() == platform.public_text()
