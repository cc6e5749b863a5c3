"""faust-streaming works on this broker: an agent consumes, updates a table whose changelog
topic is written, and produces its answers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import REPO, wait_for


def _read_all(stack, topic: str, want: int, timeout: float) -> list[tuple[bytes, bytes]]:
    consumer = Consumer({**stack.kafka.client(), "group.id": f"faust-smoke-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    got = []

    def poll():
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append((msg.key(), msg.value()))
        return len(got) >= want
    try:
        wait_for(poll, timeout=timeout, interval=0, what=f"{want} records on {topic}")
    finally:
        consumer.close()
    return got


def test_faust_agent_round_trip_with_table_changelog(stack, tmp_path):
    run = uuid.uuid4().hex[:8]
    app_id, topic_in, topic_out = f"faust-smoke-{run}", f"smoke.words.{run}", f"smoke.counts.{run}"
    admin = AdminClient(stack.kafka.client())
    for fut in admin.create_topics([NewTopic(topic_in, 1, 1), NewTopic(topic_out, 1, 1)]).values():
        fut.result()
    env = {**os.environ, "SMOKE_APP_ID": app_id, **stack.kafka_env(), "SMOKE_IN": topic_in,
           "SMOKE_OUT": topic_out}
    log = open(tmp_path / "faust.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "faust", "-A", "tests.integration.faust_smoke_app", "--datadir",
         str(tmp_path / "faust-data"), "worker", "-l", "info", "--without-web"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        producer = Producer(stack.kafka.client())
        for word in ["kafka", "faust", "kafka"]:
            producer.produce(topic_in, value=word.encode())
        assert producer.flush(30) == 0
        answers = _read_all(stack, topic_out, 3, timeout=120)
        assert [v for _, v in answers] == [b"kafka=1", b"faust=1", b"kafka=2"]
        changelog = _read_all(stack, f"{app_id}-counts-changelog", 3, timeout=60)
        assert len(changelog) >= 3
        assert worker.poll() is None, "the faust worker died"
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            assert worker.wait(60) in (0, -signal.SIGTERM), (tmp_path / "faust.log").read_text()[-3000:]
        finally:
            if worker.poll() is None:
                worker.kill()
            log.close()
