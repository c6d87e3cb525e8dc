"""Faults under steady traffic, counted from the topics: events in / lost / duplicated / orphaned / recovery.

    .venv/bin/python -m benchmarks.bench_faults [--events N] [--rate R] [--faults kill9,sigterm,members,join]
                                               [--session-timeout S] [--waiting-ttl S] [--static-membership]

Starts the embedded broker, then for each fault a fresh topic namespace and two
``loopline worker`` processes in one group (agents route,feedback), a producer
at ``--rate`` predictions/s, and the fault (the same scenarios as
tests/integration/test_faults.py, which asserts on them):

* ``kill9``   kill -9 one worker three times (alternating), each restarted at once;
* ``sigterm`` rolling SIGTERM of both workers, each restarted;
* ``members`` a third and a fourth worker join, then both leave (four membership changes);
* ``join``    kill -9 of a worker holding half the feedback join while reviewers answer every task.

Prints one line per fault: events in, lost, duplicated decisions (at-least-once
copies; readers dedupe by event_id), dead letters / orphaned answers, training
examples vs answered tasks, the predictions and answers the workers' statistics counted
(exactly once each when they equal events in and answered tasks), the worst decision latency (time from send to
decision: the recovery time of the worst-hit partition), the median latency of
the same run as its baseline, worker ready times and SIGTERM exit times.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

from loopline.connectors.broker import EmbeddedBroker, create_topics, free_port
from loopline.streams.settings import Settings
from tests.integration.faults_harness import Cluster, Reviewers, Traffic, tally


def scenario(name: str, cluster: Cluster, args) -> tuple[Traffic, Reviewers | None]:
    s = cluster.settings
    reviewers = None
    if name == "join":
        reviewers = Reviewers(s)
        reviewers.start()
    traffic = Traffic(s, n=args.events, rate=args.rate)
    traffic.start()
    pause = args.events / args.rate / 8
    if name == "kill9":
        for victim in ("w1", "w2", "w1"):
            time.sleep(pause)
            cluster.kill(victim)
            cluster.start(victim)
    elif name == "sigterm":
        for victim in ("w1", "w2"):
            time.sleep(pause)
            cluster.terminate(victim)
            cluster.start(victim)
    elif name == "members":  # four membership changes, as tests/integration/test_faults.py
        time.sleep(pause)
        cluster.start("w3")
        cluster.start("w4")
        time.sleep(pause)
        cluster.terminate("w3")
        cluster.terminate("w4")
    elif name == "join":
        time.sleep(2 * pause)
        cluster.kill("w1")
        cluster.start("w1")
    return traffic, reviewers


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=4000)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--faults", default="kill9,sigterm,members,join")
    p.add_argument("--session-timeout", type=float, default=None, help="LOOPLINE_SESSION_TIMEOUT_SECONDS")
    p.add_argument("--static-membership", action="store_true",
                   help="give each worker a LOOPLINE_GROUP_INSTANCE_ID (its name): static group membership")
    p.add_argument("--waiting-ttl", type=float, default=Settings().waiting_ttl_seconds,
                   help="LOOPLINE_WAITING_TTL_SECONDS: how long an answer waits for its task (the test suite uses 30 s; "
                        "under a backlog longer than this, answers become orphans)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    print(f"# {args.events} events at {args.rate:.0f}/s per fault; logs in {tmp}", flush=True)
    with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
        for name in args.faults.split(","):
            ns = f"bf{uuid.uuid4().hex[:8]}"
            update = {"agents": "route,feedback", "waiting_ttl_seconds": args.waiting_ttl,
                      "feedback_expiry_interval_seconds": 1.0}
            if args.session_timeout:
                update["session_timeout_seconds"] = args.session_timeout
            s = Settings(kafka_bootstrap=broker.bootstrap, topic_namespace=ns, app_id=f"{ns}-worker",
                         web_port=free_port(), data_dir=tmp / ns, partitions=4).model_copy(update=update)
            create_topics(broker.bootstrap, s.topics.all(), s.partitions, compacted=s.topics.compacted())
            cluster = Cluster(s, tmp / name, static_membership=args.static_membership)
            (tmp / name).mkdir()
            cluster.supervise()
            try:
                cluster.start("w1")
                cluster.start("w2")
                time.sleep(2 * s.session_timeout_seconds)
                traffic, reviewers = scenario(name, cluster, args)
                traffic.join()
                if reviewers is not None:
                    time.sleep(5)
                    reviewers.stop()
                t = tally(s, traffic, reviewers, timeout=180)
                crashed = cluster.crashed()
                counted, answers = cluster.counted()
            finally:
                cluster.stop_all()
            print(f"{name}: {t.line()}; statistics counted {counted} predictions and {answers} answers; "
                  f"crashed workers {crashed or 'none'}", flush=True)
            print(f"{name}:   {'; '.join(cluster.events)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
