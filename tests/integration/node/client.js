// A Node.js producer, reviewer and decision reader for Loopline, with kafkajs + avsc from npm.
// Used by tests/integration/test_node_client.py; it is also an example for Node developers.
//
//   node client.js   (configuration in environment variables, see CONFIG below)
//
// 1. produces N PredictionEvents (single-object Avro: C3 01 + CRC-64-AVRO fingerprint + body),
//    keyed by event_id, with kafkajs's DefaultPartitioner (murmur2, like Java);
// 2. reads the decisions topic and expands DecisionBatch records (packed little-endian columns,
//    read with Buffer#read*LE at byte offsets: the columns are not aligned);
// 3. reads review tasks and answers each with a CorrectionEvent keyed by event_id;
// 4. prints one JSON line with what it did.
'use strict';
const fs = require('fs');
const path = require('path');
const avro = require('avsc');
const { Kafka, Partitioners, logLevel } = require('kafkajs');

const CONFIG = {
  bootstrap: process.env.BOOTSTRAP,
  ns: process.env.NAMESPACE || 'loopline',
  events: Number(process.env.EVENTS || 100),
  schemas: process.env.SCHEMA_DIR,
  timeoutMs: Number(process.env.TIMEOUT_MS || 60000),
};
const topic = (s) => `${CONFIG.ns}.${s}`;

// ---- schemas: every .avsc file, named types resolved through one avsc registry
function loadTypes(dir) {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.avsc')).map((f) => JSON.parse(fs.readFileSync(path.join(dir, f))));
  const registry = {};
  const types = {};
  let pending = files;
  while (pending.length) {
    const next = [];
    for (const schema of pending) {
      const trial = Object.assign({}, registry); // a failed parse must not leave half-defined names behind
      try {
        const t = avro.Type.forSchema(schema, { registry: trial });
        Object.assign(registry, trial);
        types[`${schema.namespace}.${schema.name}`] = t;
      } catch (e) {
        next.push(schema); // references a type not parsed yet
      }
    }
    if (next.length === pending.length) throw new Error(`unresolvable schemas: ${next.map((s) => s.name)}`);
    pending = next;
  }
  return types;
}

// ---- CRC-64-AVRO of the parsing canonical form (avsc's canonical schema), little-endian bytes
const EMPTY = 0xc15d213aa4d7a795n;
const TABLE = Array.from({ length: 256 }, (_, i) => {
  let fp = BigInt(i);
  for (let j = 0; j < 8; j++) fp = (fp >> 1n) ^ (EMPTY & -(fp & 1n));
  return fp;
});
function fingerprint(type) {
  let fp = EMPTY;
  for (const b of Buffer.from(JSON.stringify(type.schema()), 'utf8')) {
    fp = (fp >> 8n) ^ TABLE[Number((fp ^ BigInt(b)) & 0xffn)];
  }
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(fp & 0xffffffffffffffffn);
  return out;
}

const MAGIC = Buffer.from([0xc3, 0x01]);
function encode(types, name, record) {
  return Buffer.concat([MAGIC, fingerprint(types[name]), types[name].toBuffer(record)]);
}
function decoder(types) {
  const byFp = new Map(Object.entries(types).map(([name, t]) => [fingerprint(t).toString('hex'), name]));
  return (buf) => {
    if (buf[0] !== 0xc3 || buf[1] !== 0x01) throw new Error('not single-object');
    const name = byFp.get(buf.subarray(2, 10).toString('hex'));
    if (!name) throw new Error(`unknown fingerprint ${buf.subarray(2, 10).toString('hex')}`);
    return [name, types[name].fromBuffer(buf.subarray(10))];
  };
}

// ---- DecisionBatch -> one object per event (docs/clients.md's recipe)
const TIERS = ['auto', 'review', 'escalate'];
function expandDecisionBatch(b) {
  return b.event_ids.map((eventId, i) => ({
    event_id: eventId, model_name: b.model_name, model_version: b.model_version,
    tier: TIERS[b.tiers.readInt8(i)], reason: b.reasons[b.reason_codes.readInt32LE(4 * i)],
    policy_version: b.policy_version, sampling_propensity: b.sampling_propensity.readDoubleLE(8 * i),
    audited: b.audited[i] !== 0, confidence: b.confidence.readDoubleLE(8 * i),
    predicted_label: b.labels[b.label_codes.readInt32LE(4 * i)],
    emitted_at: Number(b.emitted_at.readBigInt64LE(8 * i)), decided_at: b.decided_at,
  }));
}

async function consumeUntil(kafka, topics, groupId, onRecord, done) {
  const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 200, sessionTimeout: 10000 });
  await consumer.connect();
  for (const t of topics) await consumer.subscribe({ topic: t, fromBeginning: true });
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  const timer = setTimeout(finish, CONFIG.timeoutMs);
  await consumer.run({
    eachMessage: async ({ message }) => {
      await onRecord(message);
      if (done()) finish();
    },
  });
  await finished;
  clearTimeout(timer);
  await consumer.disconnect();
}

async function main() {
  const types = loadTypes(CONFIG.schemas);
  const decode = decoder(types);
  const kafka = new Kafka({ clientId: 'loopline-node-test', brokers: [CONFIG.bootstrap], logLevel: logLevel.ERROR });
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, idempotent: false });
  await producer.connect();

  // 1. predictions
  const now = Date.now();
  const ids = [];
  const messages = [];
  for (let i = 0; i < CONFIG.events; i++) {
    const id = `node-${now}-${i}`;
    ids.push(id);
    const event = {
      event_id: id, model_name: 'fraud', model_version: 'node-v1', emitted_at: now - 1000 + i,
      features_numeric: { amount: 10 + i, f01: i / 7 }, features_categorical: { channel: 'web' },
      predicted_label: i % 3 === 0 ? 'fraud' : 'legit', confidence: i % 2 === 0 ? 0.75 : 0.97,
      class_probabilities: null, risk: null, context: null, trace_id: null,
    };
    messages.push({ key: id, value: encode(types, 'io.loopline.PredictionEvent', event) });
  }
  await producer.send({ topic: topic('predictions'), messages, acks: -1 });

  // 2. decisions
  const decided = new Map();
  await consumeUntil(kafka, [topic('decisions')], `node-decisions-${now}`, async (m) => {
    const [name, rec] = decode(m.value);
    if (name !== 'io.loopline.DecisionBatch') throw new Error(`unexpected ${name}`);
    for (const d of expandDecisionBatch(rec)) decided.set(d.event_id, d);
  }, () => ids.every((id) => decided.has(id)));

  // 3. review tasks -> corrections
  const wanted = ids.filter((_, i) => i % 2 === 0);
  const answered = new Set();
  await consumeUntil(kafka, [topic('review.analyst')], `node-reviewer-${now}`, async (m) => {
    const [name, task] = decode(m.value);
    if (name !== 'io.loopline.ReviewTask' || answered.has(task.event_id)) return;
    const correction = {
      correction_id: `node-c-${task.event_id}`, event_id: task.event_id, model_name: task.model_name,
      model_version: task.model_version, reviewer_id: 'node-reviewer', action: 'approve',
      corrected_label: task.prediction.predicted_label, tier: task.tier, reviewed_at: Date.now(),
      review_seconds: 1.5, note: null, source: 'node',
    };
    await producer.send({
      topic: topic('corrections'), acks: -1,
      messages: [{ key: task.event_id, value: encode(types, 'io.loopline.CorrectionEvent', correction) }],
    });
    answered.add(task.event_id);
  }, () => wanted.every((id) => answered.has(id)));
  await producer.disconnect();

  const tiers = {};
  for (const d of decided.values()) tiers[d.tier] = (tiers[d.tier] || 0) + 1;
  console.log(JSON.stringify({
    produced: ids.length, decided: ids.filter((id) => decided.has(id)).length, tiers,
    answered: [...answered], prediction_fingerprint: fingerprint(types['io.loopline.PredictionEvent']).toString('hex'),
    node: process.version, kafkajs: require('kafkajs/package.json').version, avsc: require('avsc/package.json').version,
  }));
}

main().catch((e) => { console.error(`node client failed: ${e.stack || e}`); process.exit(1); });
