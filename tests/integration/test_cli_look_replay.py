"""``loopline produce -``, ``tail``, ``dead-letters replay`` and the ``stats`` table against a real worker."""
from __future__ import annotations

import json
import subprocess
import time

import pytest
from confluent_kafka import Producer

from loopline.connectors.processes import WorkerProcess, loopline_exe, settings_env
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import AvroSerde
from tests.helpers import headers_dict, read_topic

pytestmark = pytest.mark.integration
SERDE = AvroSerde(SchemaCatalogue.load())


def run(s, *argv, stdin: str | None = None, timeout: float = 60):
    r = subprocess.run([loopline_exe(), *argv], env=settings_env(s), input=stdin, capture_output=True, text=True,
                       timeout=timeout)
    print(f"\n$ loopline {' '.join(argv)}\n{r.stdout}{r.stderr}", end="")
    return r


def test_produce_stdin_tail_replay_and_stats(loopline_settings, tmp_path):
    s = loopline_settings.model_copy(update={"agents": "route"})
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        events = make_events(30, seed=17)
        for i, e in enumerate(events):
            e["confidence"] = 0.75 if i < 10 else 0.97  # ten review tasks
        events[0]["emitted_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(events[0]["emitted_at"] / 1000))
        lines = "\n".join(json.dumps(e) for e in events) + "\n"
        r = run(s, "produce", "-", "--batch-size", "1", stdin=lines)
        assert r.returncode == 0 and "30 predictions sent" in r.stdout, r.stderr
        r = run(s, "produce", "-", stdin='{"event_id": "x", "emitted_at": "yesterday"}\n')
        assert r.returncode == 1 and "<stdin>:1: emitted_at" in r.stderr

        p = Producer({"bootstrap.servers": s.kafka_bootstrap})
        p.produce(s.topics.predictions, value=b"not avro at all", key=b"k1")
        p.produce(s.topics.predictions, value=b"\xc3\x01" + bytes(8) + b"\x00", key=b"k2")  # unknown fingerprint
        assert p.flush(10) == 0
        read_topic(s.kafka_bootstrap, s.topics.dead_letter, lambda m: len(m) >= 2, timeout=30)

        r = run(s, "tail", "decisions", "--from-beginning", "--json", "--idle", "3")
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert r.returncode == 0 and sorted(d["event_id"] for d in rows) == sorted(e["event_id"] for e in events)
        target = events[3]["event_id"]
        r = run(s, "tail", "decisions", "--from-beginning", "--event-id", target, "--idle", "2")
        out = r.stdout.splitlines()
        assert out[0].startswith("EVENT_ID") and len(out) == 2 and out[1].startswith(target) and "review" in out[1]
        r = run(s, "tail", "tasks", "--from-beginning", "--json", "--model", "fraud", "--max", "4")
        assert [json.loads(line)["tier"] for line in r.stdout.splitlines()] == ["review"] * 4
        r = run(s, "tail", "tasks", "--from-beginning", "--json", "--model", "no-such-model", "--idle", "2")
        assert r.returncode == 0 and r.stdout == ""

        r = run(s, "tail", "dead-letters", "--from-beginning", "--idle", "2")
        assert "bad_magic" in r.stdout and "unknown_schema" in r.stdout and f"{s.topics.predictions}[" in r.stdout
        r = run(s, "tail", "dead-letters", "--from-beginning", "--json", "--idle", "2")
        dl = [json.loads(line) for line in r.stdout.splitlines()]
        assert {d["error_class"] for d in dl} == {"bad_magic", "unknown_schema"}
        unknown = next(d for d in dl if d["error_class"] == "unknown_schema")
        assert SERDE.fingerprint_of("io.loopline.PredictionEvent").hex() in unknown["message"]

        r = run(s, "dead-letters", "replay", "--dry-run", "--class", "bad_magic", "--idle", "2")
        assert r.returncode == 0 and "would replay 1" in r.stdout and "bad_magic" in r.stdout
        time.sleep(2)
        assert len(read_topic(s.kafka_bootstrap, s.topics.dead_letter, lambda m: False, timeout=2)) == 2  # dry run
        r = run(s, "dead-letters", "replay", "--class", "bad_magic", "--idle", "2")
        assert r.returncode == 0 and "replayed 1 of 1" in r.stdout, r.stderr
        again = read_topic(s.kafka_bootstrap, s.topics.dead_letter, lambda m: len(m) >= 3, timeout=30)
        replayed = [m for m in again if "loopline.replay.of" in headers_dict(m)]
        assert len(replayed) == 1 and replayed[0].value() == b"not avro at all" and replayed[0].key() == b"k1"
        assert headers_dict(replayed[0])["loopline.error.class"] == "bad_magic"  # failed again, visibly a replay

        time.sleep(s.stats_flush_seconds + 1)
        r = run(s, "stats", "--worker", worker.base_url)
        assert r.returncode == 0 and r.stdout.startswith("MODEL") and "\nfraud" in r.stdout, r.stderr
        assert "review" in r.stdout and "auto" in r.stdout
        r = run(s, "stats", "--worker", worker.base_url, "--json")
        assert json.loads(r.stdout)["tiers"]["all_time"]["fraud"]["events"] == 30
    finally:
        worker.stop()


def test_tail_without_a_topic_is_one_sentence(loopline_settings):
    s = loopline_settings.model_copy(update={"topic_namespace": "nowhere-" + str(time.time_ns())})
    r = run(s, "tail", "decisions", "--from-beginning", "--idle", "1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr and r.stdout == ""
