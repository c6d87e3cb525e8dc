"""``loopline model list | show | promote | rollback``: operator commands over the model-updates topic.

    loopline model list                       newest snapshot of every model and role
    loopline model show MODEL [--role R]      versions, lineage, offsets, metrics (HMAC checked)
    loopline model promote MODEL              newest challenger -> champion, only if the promotion gate passed
    loopline model rollback MODEL [--to V]    champion back to version V (default: the previous champion)

The topic is read from the start to its current end outside any consumer group.
Promote and rollback publish a new ``champion`` version (parent = the current
champion) carrying the chosen model's bytes, so lineage only ever grows and
route workers hot-swap to it. Exit codes: 0 done; 2 usage or no broker;
3 refused (unknown model or version, gate blocks, nothing to roll back to);
4 a snapshot fails its HMAC check. Each failure prints one sentence.
"""
from __future__ import annotations

import datetime as dt
import sys

from loopline.processors.wire.names import MODEL_UPDATE

EXIT_USAGE, EXIT_REFUSED, EXIT_INTEGRITY = 2, 3, 4


class ModelCommandError(Exception):
    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


def add_model_commands(subparsers) -> None:
    """Add ``model list|show|promote|rollback`` to the ``loopline`` parser's subcommands."""
    model = subparsers.add_parser("model", help="online models: list, show, promote, roll back")
    sub = model.add_subparsers(dest="model_command", required=True)
    sub.add_parser("list", help="newest snapshot of every model and role").set_defaults(func=cmd_model)
    s = sub.add_parser("show", help="one model's snapshots in detail")
    s.add_argument("model")
    s.add_argument("--role", choices=("challenger", "champion", "override_risk", "learner"))
    s.set_defaults(func=cmd_model)
    p = sub.add_parser("promote", help="make the newest challenger the champion (only if the gate passed)")
    p.add_argument("model")
    p.set_defaults(func=cmd_model)
    r = sub.add_parser("rollback", help="make an earlier champion version current again")
    r.add_argument("model")
    r.add_argument("--to", type=int, metavar="VERSION", help="champion version (default: the previous one)")
    r.set_defaults(func=cmd_model)


def cmd_model(args, settings=None, out=None) -> int:
    from loopline.streams.settings import Settings

    out = out or sys.stdout
    try:
        settings = settings or Settings()
        if not settings.kafka_bootstrap:
            raise ModelCommandError("no Kafka to read from: set LOOPLINE_KAFKA_BOOTSTRAP=host:port", EXIT_USAGE)
        ops = ModelOps(settings)
        {"list": ops.list, "show": ops.show, "promote": ops.promote, "rollback": ops.rollback}[
            args.model_command](args, out)
    except ModelCommandError as exc:
        print(f"loopline: {exc}", file=sys.stderr)
        return exc.code
    return 0


class ModelOps:
    def __init__(self, settings) -> None:
        from loopline.streams.confluent import build_serde
        from loopline.streams.kafka_security import kafka_security
        from loopline.streams.learning.kafka_io import read_to_end

        self.settings = settings
        self.serde = build_serde(settings)
        self.key = settings.snapshot_hmac_key.get_secret_value().encode()
        topic = settings.topics.model_updates
        try:
            msgs = read_to_end(settings.kafka_bootstrap, topic, security=kafka_security(settings).librdkafka())
        except Exception as exc:
            raise ModelCommandError(f"cannot read {topic} from {settings.kafka_bootstrap}: {exc}", EXIT_USAGE) from exc
        self.updates: list[dict] = []
        for m in msgs:
            try:
                name, up = self.serde.decode(m.value())
            except Exception:  # noqa: S112 (foreign records on the topic are skipped by design)
                continue
            if name == MODEL_UPDATE:
                self.updates.append(up)

    def _of(self, model: str, role: str | None = None) -> list[dict]:
        ups = [u for u in self.updates if u["model_name"] == model and (role is None or u["role"] == role)]
        if not ups and not any(u["model_name"] == model for u in self.updates):
            known = ", ".join(sorted({u["model_name"] for u in self.updates})) or "none"
            raise ModelCommandError(f"no snapshots of model {model!r} on {self.settings.topics.model_updates} "
                                    f"(models: {known})")
        return sorted(ups, key=lambda u: u["version"])

    def _verified(self, up: dict) -> bool:
        from loopline.processors.learning import verify

        try:
            verify(up, self.key)
            return True
        except Exception:
            return False

    def list(self, args, out) -> None:
        newest: dict[tuple[str, str], dict] = {}
        for u in self.updates:
            k = (u["model_name"], u["role"])
            if k not in newest or u["version"] > newest[k]["version"]:
                newest[k] = u
        if not newest:
            print("no model snapshots yet", file=out)
            return
        print(f"{'model':16} {'role':14} {'version':>7} {'examples':>9} {'F1':>6} {'gate':>5}  published", file=out)
        for (model, role), u in sorted(newest.items()):
            m = u["metrics"]
            f1 = m.get(f"{'challenger' if role != 'override_risk' else 'override_risk'}.all.f1", m.get("override_risk.f1"))
            gate = {1.0: "pass", 0.0: "block"}.get(m.get("gate.passed"), "-")
            print(f"{model:16} {role:14} {u['version']:7d} {u['examples_seen']:9d} "
                  f"{'-' if f1 is None else f'{f1:.3f}':>6} {gate:>5}  {_ts(u['published_at'])}", file=out)

    def show(self, args, out) -> None:
        ups = self._of(args.model, args.role)
        if not ups:
            raise ModelCommandError(f"model {args.model!r} has no {args.role} snapshots")
        for u in ups:
            ranges = ", ".join(f"p{r['partition']}:{r['first']}..{r['last']}" for r in u["trained_through"]) or "-"
            print(f"{u['model_name']}/{u['role']} v{u['version']} (parent {u['parent_version']}) "
                  f"examples {u['examples_seen']} trained through {ranges} published {_ts(u['published_at'])} "
                  f"HMAC {'ok' if self._verified(u) else 'FAILED'}", file=out)
        last = ups[-1]
        for k in sorted(last["metrics"]):
            print(f"  {k} = {last['metrics'][k]:.6g}", file=out)

    def _publish_champion(self, source: dict, parent: int | None, version: int, extra: dict, out) -> None:
        from confluent_kafka import Producer

        from loopline.processors.learning.snapshot import sign, update_key

        up = {**source, "role": "champion", "version": version, "parent_version": parent,
              "metrics": {**source["metrics"], **extra}, "hmac_sha256": sign(source["model_bytes"], self.key),
              "published_at": int(dt.datetime.now(dt.UTC).timestamp() * 1000)}
        p = Producer(champion_producer_config(self.settings))
        errors = []
        p.produce(self.settings.topics.model_updates, key=update_key(up["model_name"], "champion"),
                  value=self.serde.encode(MODEL_UPDATE, up), on_delivery=lambda err, msg: err and errors.append(err))
        if p.flush(15) or errors:
            raise ModelCommandError(f"publishing the champion failed: {errors[0] if errors else 'timeout'}",
                                    EXIT_USAGE)
        print(f"{up['model_name']}/champion v{version} published (parent {parent})", file=out)

    def _check(self, up: dict) -> None:
        if not self._verified(up):
            raise ModelCommandError(f"{up['model_name']}/{up['role']} v{up['version']} fails its HMAC check "
                                    "(tampered, or signed with another LOOPLINE_SNAPSHOT_HMAC_KEY); not used",
                                    EXIT_INTEGRITY)

    def promote(self, args, out) -> None:
        from loopline.processors.learning import load_model

        challengers = self._of(args.model, "challenger")
        if not challengers:
            raise ModelCommandError(f"model {args.model!r} has no challenger to promote")
        ch = challengers[-1]
        self._check(ch)
        learners = self._of(args.model, "learner")
        if learners:  # the full learner state holds the gate: give its reasons
            self._check(learners[-1])
            passed, reasons = load_model(learners[-1], self.key).gate.evaluate()
        else:
            passed, reasons = ch["metrics"].get("gate.passed") == 1.0, ["gate.passed = 0 in the challenger's metrics"]
        if not passed:
            raise ModelCommandError(f"the promotion gate blocks {args.model} challenger v{ch['version']}: "
                                    + "; ".join(reasons))
        champions = self._of(args.model, "champion")
        current = champions[-1]["version"] if champions else None
        self._publish_champion(ch, current, (current or 0) + 1, {"promoted_from_challenger": ch["version"]}, out)

    def rollback(self, args, out) -> None:
        champions = self._of(args.model, "champion")
        if not champions:
            raise ModelCommandError(f"model {args.model!r} has no champion to roll back")
        current = champions[-1]
        by_version = {u["version"]: u for u in champions}
        if args.to is None:  # the champion that was current before this one
            if len(champions) < 2:
                raise ModelCommandError(f"{args.model} champion v{current['version']} has no earlier version on the "
                                        "topic to roll back to")
            target = champions[-2]
        else:
            target = by_version.get(args.to)
            if target is None:
                raise ModelCommandError(f"champion version {args.to} of {args.model} is not on the topic (versions: "
                                        f"{', '.join(str(v) for v in sorted(by_version))})")
            if args.to == current["version"]:
                raise ModelCommandError(f"champion v{args.to} of {args.model} is already current")
        self._check(target)
        self._publish_champion(target, current["version"], current["version"] + 1,
                               {"rolled_back_to": target["version"]}, out)


def _ts(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def champion_producer_config(settings) -> dict:
    """The librdkafka configuration `loopline model promote|rollback` publishes the champion with."""
    from loopline.streams.kafka_security import client_config

    return client_config(settings, {"enable.idempotence": True})
