"""Quix Streams decode-only peer for ``loopline bench`` (runs in its own venv: Quix pins other versions).

    .venv-quix/bin/python $(python -c 'import loopline.connectors.bench as b; print(b.__path__[0])')/quix_decode.py BOOTSTRAP TOPIC N SCHEMA_AVSC

Decodes Avro single-object records (skips the 10-byte header, fastavro
schemaless_reader with the parsed schema, per record via ``sdf.update``).
"""
import json
import os
import resource
import sys
import time
from io import BytesIO

from fastavro import parse_schema, schemaless_reader


def _strip(node):
    if isinstance(node, list):
        return [_strip(n) for n in node]
    if isinstance(node, dict):
        if node.get("logicalType") == "timestamp-millis":
            return "long"
        return {k: _strip(v) for k, v in node.items()}
    return node


def main():
    from quixstreams import Application  # only in the Quix venv

    bootstrap, topic, n, avsc = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    schema = parse_schema(_strip(json.load(open(avsc))))
    state = {"count": 0, "t0": None, "c0": None}

    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def decode(value):
        if state["t0"] is None:
            state["t0"], state["c0"] = time.perf_counter(), cpu()
        schemaless_reader(BytesIO(value[10:]), schema, None)
        state["count"] += 1
        if state["count"] >= n:
            dt = time.perf_counter() - state["t0"]
            print(json.dumps({"rate": state["count"] / dt, "cpu_us": (cpu() - state["c0"]) / state["count"] * 1e6,
                              "records": state["count"]}), flush=True)
            os._exit(0)

    app = Application(broker_address=bootstrap, consumer_group=f"bench-quix-{time.time_ns()}",
                      auto_offset_reset="earliest", loglevel="ERROR")
    t = app.topic(topic, value_deserializer="bytes")
    sdf = app.dataframe(t)
    sdf.update(decode)
    app.run()


if __name__ == "__main__":
    main()
