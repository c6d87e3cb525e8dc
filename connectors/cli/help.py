"""``--help`` that says something for every command.

:func:`describe_all` walks the parser tree: a subcommand without a description gets its
one-line help as description, plus the longer text of :data:`DETAILS` when there is one
(what it does, which settings it reads, how it ends), and the exit-code convention.
"""
from __future__ import annotations

import argparse

EXIT_CODES = ("exit codes: 0 done; 1 input rejected (e.g. invalid lines, a refused promotion); "
              "2 any other failure (one sentence on stderr: broker not answering within "
              "LOOPLINE_BROKER_TIMEOUT_SECONDS, port in use, no terminal, closed pipe, bad setting)")

DETAILS = {
    "loopline broker": "Starts the embedded Kafka-compatible broker on 127.0.0.1, creates every Loopline topic "
                       "and prints the export line for LOOPLINE_KAFKA_BOOTSTRAP; runs until Ctrl-C.",
    "loopline topics": "Creates every Loopline topic (LOOPLINE_TOPIC_NAMESPACE, LOOPLINE_PARTITIONS, "
                       "LOOPLINE_REPLICATION_FACTOR) on LOOPLINE_KAFKA_BOOTSTRAP (default 127.0.0.1:9092) "
                       "and waits for the result; existing topics are kept.",
    "loopline topics create": "Creates every Loopline topic (LOOPLINE_TOPIC_NAMESPACE, LOOPLINE_PARTITIONS, "
                              "LOOPLINE_REPLICATION_FACTOR) on LOOPLINE_KAFKA_BOOTSTRAP (default 127.0.0.1:9092) "
                              "and waits until the broker confirms them; existing topics are kept, so it is safe "
                              "to run again.",
    "loopline worker": "Runs one stream worker in the foreground: the agents of LOOPLINE_AGENTS (route, feedback, "
                       "drift; learn in exactly one process) in consumer group LOOPLINE_APP_ID, on "
                       "LOOPLINE_KAFKA_BOOTSTRAP (default 127.0.0.1:9092). Serves /metrics /healthz /readyz /stats "
                       "on LOOPLINE_WEB_HOST:LOOPLINE_WEB_PORT; logs plain or JSON lines (LOOPLINE_LOG_FORMAT) and "
                       "an activity line every LOOPLINE_ACTIVITY_LOG_SECONDS. Stops cleanly on SIGINT/SIGTERM.",
    "loopline up": "Everything on one machine: starts the embedded broker unless LOOPLINE_KAFKA_BOOTSTRAP is set, "
                   "creates the topics, then runs a worker with every agent (route, feedback, drift, learn) and "
                   "prints how to send predictions and open the metrics. Ctrl-C stops it all.",
    "loopline produce": "Sends the prediction events of a JSON-lines FILE (one PredictionEvent per line) to the "
                        "predictions topic, in PredictionBatch records of --batch-size events. Invalid lines are "
                        "reported with their line number and end in exit code 1.",
    "loopline demo": "End-to-end demo on the embedded broker: simulated traffic with drift, simulated reviewers, "
                     "a worker and a learner; writes a report (HTML, figures) to --out.",
    "loopline bench": "Throughput benchmark of the route path on the embedded broker; prints the figures.",
}


def _subparser_actions(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001


def describe_all(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give every subcommand of ``parser`` a description and the exit-code epilog."""
    for action in _subparser_actions(parser):
        helps = {choice.dest: choice.help for choice in action._choices_actions}  # noqa: SLF001
        for name, sub in action.choices.items():
            if not sub.description:
                text = DETAILS.get(sub.prog) or helps.get(name) or ""
                if text:
                    sub.description = text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")
            if not sub.epilog:
                sub.epilog = EXIT_CODES
            describe_all(sub)
    return parser
