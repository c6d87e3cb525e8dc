"""``loopline schemas``: every version with its fingerprints; docs/schemas.md is its Markdown output."""
from __future__ import annotations

import json
from pathlib import Path

from fastavro.schema import fingerprint, to_parsing_canonical_form

from loopline.connectors.cli.main import main
from loopline.connectors.cli.schemas import schemas_markdown
from loopline.processors.wire.catalogue import SchemaCatalogue

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schemas.md"


def test_json_lists_every_version_with_spec_fingerprint_and_aliases(capsys):
    assert main(["schemas"]) == 0
    rows = json.loads(capsys.readouterr().out)
    reg = SchemaCatalogue.load()
    assert len(rows) == sum(len(reg.versions(n)) for n in reg.names)
    for r in rows:
        assert fingerprint(to_parsing_canonical_form(r["schema"]), "CRC-64-AVRO") == r["fingerprint"]
        assert to_parsing_canonical_form(r["schema"]) == r["canonical_form"]
        for a in r["alias_fingerprints"]:
            assert reg.by_fingerprint(bytes.fromhex(a)).fingerprint.hex() == r["fingerprint"]
    pe = [r for r in rows if r["type"] == "io.loopline.PredictionEvent" and r["current"]]
    assert pe[0]["alias_fingerprints"] == ["cb9076a7b9ebc8ce"]


def test_one_type_and_an_unknown_type(capsys):
    assert main(["schemas", "--type", "Tier"]) == 0
    assert [r["type"] for r in json.loads(capsys.readouterr().out)] == ["io.loopline.Tier"]
    assert main(["schemas", "--type", "Nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no schema named Nope" in err


def test_docs_page_is_current():
    assert DOCS.read_text() == schemas_markdown(SchemaCatalogue.load()) + "\n", "regenerate: loopline schemas --markdown"
