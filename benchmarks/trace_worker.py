"""A ``loopline worker`` that traces the consumer's offsets (diagnostics for the fault suite).

Run the fault suite with it::

    LOOPLINE_TEST_WORKER_TRACE=benchmarks/trace_worker.py \
        .venv/bin/python -m pytest tests/integration/test_faults.py -s --basetemp=/tmp/faults

Each worker's log (``/tmp/faults/<test>/w1.log``) then has ``TRACE`` lines for the topic whose
name contains ``TRACE_TOPIC`` (default ``predictions``): ACK, COMMIT, SEEK, PERFORM_SEEK, GAP,
REVOKED, ASSIGNED, WITHHOLD, BATCH-START/-DONE, and every 3 s a STATE line (flow, paused and
active partitions, recovery, fetcher). Never installed and never run by the tests.
"""
from __future__ import annotations

import asyncio
import os
import sys
import time

from faust.transport.consumer import Consumer

TOPIC = os.environ.get("TRACE_TOPIC", "predictions")


def out(*parts) -> None:
    sys.stderr.write(f"TRACE {time.time():.3f} " + " ".join(str(p) for p in parts) + "\n")
    sys.stderr.flush()


def ours(tp) -> bool:
    return TOPIC in tp.topic


def _patch() -> None:  # noqa: C901 - one wrapper per traced method
    ack0, commit0, seek0, perform0 = Consumer.ack, Consumer._commit_offsets, Consumer.seek, Consumer.perform_seek
    revoked0, assigned0, gap0 = Consumer.on_partitions_revoked, Consumer.on_partitions_assigned, Consumer._add_gap

    def ack(self, message):
        r = ack0(self, message)
        if ours(message.tp):
            out("ACK", message.tp.partition, message.offset, r, "committed", self._committed_offset.get(message.tp))
        return r

    async def commit_offsets(self, offsets, start_new_transaction=True):
        out("COMMIT", {tp.partition: o for tp, o in offsets.items() if ours(tp)},
            "assignment", sorted(tp.partition for tp in self.assignment() if ours(tp)))
        return await commit0(self, offsets, start_new_transaction)

    async def seek(self, partition, offset):
        if ours(partition):
            out("SEEK", partition.partition, offset)
        return await seek0(self, partition, offset)

    async def perform_seek(self):
        await perform0(self)
        out("PERFORM_SEEK", {tp.partition: o for tp, o in self._read_offset.items() if ours(tp)},
            "committed", {tp.partition: o for tp, o in self._committed_offset.items() if ours(tp)})

    async def revoked(self, tps):
        out("REVOKED", sorted(tp.partition for tp in tps if ours(tp)),
            "acked", {tp.partition: sorted(v) for tp, v in self._acked.items() if ours(tp)})
        return await revoked0(self, tps)

    async def watch(self):
        while True:
            await asyncio.sleep(3)
            rec = self.app.tables.recovery
            out("STATE flow_active", self.flow_active,
                "paused", sorted(tp.partition for tp in self._paused_partitions if ours(tp)),
                "active", sorted(tp.partition for tp in (self._active_partitions or ()) if ours(tp)),
                "assign", sorted(tp.partition for tp in self.assignment() if ours(tp)),
                "in_recovery", rec.in_recovery, "rebalancing", self.app.rebalancing,
                "fetcher", getattr(self.app._fetcher, "state", "?"), "unacked", len(self._unacked_messages))

    async def assigned(self, tps, generation_id=0):
        out("ASSIGNED", sorted(tp.partition for tp in tps if ours(tp)), "gen", generation_id)
        if not getattr(self, "_trace_watching", False):
            self._trace_watching = True
            asyncio.ensure_future(watch(self))
        return await assigned0(self, tps, generation_id)

    async def add_gap(self, tp, offset_from, offset_to):
        if ours(tp):
            out("GAP", tp.partition, offset_from, offset_to)
        return await gap0(self, tp, offset_from, offset_to)

    Consumer.ack, Consumer._commit_offsets, Consumer.seek, Consumer.perform_seek = ack, commit_offsets, seek, perform_seek
    Consumer.on_partitions_revoked, Consumer.on_partitions_assigned, Consumer._add_gap = revoked, assigned, add_gap

    from loopline.streams import acks
    from loopline.streams.app import LooplineWorker

    withhold0, handle0 = acks.withhold_acks, LooplineWorker.handle_predictions

    def withhold(events):
        out("WITHHOLD", [(e.message.partition, e.message.offset) for e in events])
        return withhold0(events)

    async def handle_predictions(self, events):
        offsets = [(e.message.partition, e.message.offset) for e in events]
        out("BATCH-START", offsets)
        await handle0(self, events)
        out("BATCH-DONE", offsets)

    acks.withhold_acks = withhold
    LooplineWorker.handle_predictions = handle_predictions


if __name__ == "__main__":
    _patch()
    from loopline.connectors.cli.main import main

    sys.exit(main(["worker"]))
