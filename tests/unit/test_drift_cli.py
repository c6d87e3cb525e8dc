"""``loopline drift baseline`` without a broker: exit 2 with a sentence."""
from __future__ import annotations

from loopline.connectors.cli.drift import main


def test_baseline_without_kafka_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("LOOPLINE_KAFKA_BOOTSTRAP", raising=False)
    code = main(["drift", "baseline", "--from-topic", "loopline.predictions", "--out", str(tmp_path / "x.json")])
    assert code == 2
    assert capsys.readouterr().err.startswith("loopline: no Kafka to read from")
    assert not (tmp_path / "x.json").exists()
