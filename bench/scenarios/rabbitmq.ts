/**
 * The outbox relayed to RabbitMQ: N pending events published with publisher confirms in batches
 * of B, by the library (`runOutboxBatch` + `createRabbitMqRelay`) and by bare amqplib, side by
 * side, interleaved. A throwaway broker is started as the tests start one (or AMQP_URL is used).
 *
 * Variants, each one caller on one confirm channel:
 * - `relay`: runOutboxBatch({ batchHandler: relay.batchHandler, limit: B }) until it claims nothing.
 * - `bare`: the same messages (same body and properties) in memory, published B at a time with
 *   amqplib, then `waitForConfirms()`: the broker's cost alone, the floor of any relay.
 * - `publisher`: relay.batchHandler alone on the same events in memory: the relay's own overhead over `bare`.
 * - `bare-relay`: the hand-written relay: the outbox scenario's bare SQL claim/lease cycle, a bare
 *   amqplib publish of the batch with one `waitForConfirms()`, then the bare UPDATE marking it processed.
 */
import amqplib, { type Channel, type ChannelModel, type ConfirmChannel } from 'amqplib';
import { runOutboxBatch } from '../../src/index.js';
import type { OutboxEvent } from '../../src/index.js';
import { createRabbitMqRelay } from '../../src/rabbitmq/index.js';
import { rabbitMqMissingReason, startRabbitMq, type ThrowawayBroker } from '../../test/support/rabbitmq.js';
import type { BenchDatabase } from '../lib/db.js';
import { eventPayload, insertRows } from '../lib/fixtures.js';
import { type Measurement, mergeMeasurements, runDrain } from '../lib/load.js';
import type { RawPool } from '../lib/raw.js';
import { rawTransaction } from '../lib/closed-loop.js';
import { Checks, computeRatios, type Scenario, type ScenarioContext, type ScenarioResult } from '../lib/scenario.js';

const LEASE_MS = 60_000;
const EXCHANGE = 'bench.reservations';
const QUEUE = 'bench.reservations.all';
const VARIANTS = ['relay', 'bare-relay', 'publisher', 'bare'] as const;
type Variant = (typeof VARIANTS)[number];

interface Broker {
  readonly url: string;
  readonly label: string;
  stop(): Promise<void>;
}

async function openBroker(): Promise<Broker> {
  const url = process.env.AMQP_URL?.trim();
  if (url) return { url, label: `AMQP_URL ${url.replace(/\/\/[^@/]*@/, '//')}`, stop: async () => {} };
  const broker: ThrowawayBroker = await startRabbitMq();
  return { url: broker.url, label: `throwaway ${broker.label}`, stop: () => broker.stop() };
}

async function seedEvents(bench: BenchDatabase, n: number): Promise<void> {
  const now = new Date(Date.now() - 1000);
  const expiresAt = new Date(now.getTime() + 900_000);
  const rows = Array.from({ length: n }, (_, i) => {
    const payload = eventPayload({ id: `00000000-0000-7000-8000-${String(i).padStart(12, '0')}`, itemId: 1 + (i % 100), quantity: 1, status: 'PENDING', expiresAt }, now);
    return ['reservation.created', payload, now, now, 0];
  });
  await insertRows(bench, 'outbox', ['type', 'payload', 'created_at', 'available_at', 'attempts'], rows);
}

/** The same events as `seedEvents` writes, in memory, as the relay gets them. */
function memoryEvents(n: number, offset: number): OutboxEvent[] {
  const now = new Date(Date.now() - 1000);
  const expiresAt = new Date(now.getTime() + 900_000);
  return Array.from({ length: n }, (_, i) => ({
    id: String(offset + i + 1),
    type: 'reservation.created' as const,
    payload: JSON.parse(eventPayload({ id: `00000000-0000-7000-8000-${String(offset + i).padStart(12, '0')}`, itemId: 1 + (i % 100), quantity: 1, status: 'PENDING', expiresAt }, now)),
    attempts: 1,
    createdAt: now,
  }));
}

/** The message the relay publishes for an event, by hand. */
function publishBare(channel: ConfirmChannel, id: string, type: string, createdAt: Date, payload: unknown): void {
  channel.publish(EXCHANGE, type, Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload)), {
    persistent: true,
    mandatory: true,
    messageId: id,
    type,
    timestamp: Math.floor(createdAt.getTime() / 1000),
    contentType: 'application/json',
  });
}

async function confirmChannel(url: string): Promise<{ connection: ChannelModel; channel: ConfirmChannel; returned: () => number }> {
  const connection = await amqplib.connect(url);
  const channel = await connection.createConfirmChannel();
  let returned = 0;
  channel.on('return', () => returned++);
  return { connection, channel, returned: () => returned };
}

/** Deliveries by message id, read back from the queue: every event exactly once? */
async function readBack(channel: Channel, expected: number): Promise<{ total: number; distinct: number }> {
  const seen = new Set<string>();
  let total = 0;
  for (let idle = 0; idle < 20 && total < expected; ) {
    const message = await channel.get(QUEUE, { noAck: true });
    if (!message) {
      idle++;
      await new Promise((resolve) => setTimeout(resolve, 50));
      continue;
    }
    total++;
    seen.add(String(message.properties.messageId));
  }
  return { total, distinct: seen.size };
}

async function drain(ctx: ScenarioContext, url: string, variant: Variant, batch: number, n: number, offset: number): Promise<{ m: Measurement; failed: number; returned: number }> {
  const { bench } = ctx;
  const profileName = `rabbitmq-${variant}-B${batch}`;
  if (variant === 'relay') {
    const db = bench.kysely(2);
    const relay = createRabbitMqRelay({ url, exchange: EXCHANGE });
    let failed = 0;
    try {
      const m = await runDrain(
        async () => {
          const r = await runOutboxBatch({ db, batchHandler: relay.batchHandler, limit: batch, leaseMs: LEASE_MS });
          failed += r.failed + r.deadLettered;
          return r.processed + r.failed + r.deadLettered;
        },
        { workers: 1, counters: () => bench.counters(), profileName },
      );
      return { m, failed, returned: 0 };
    } finally {
      await relay.close();
      await bench.closeKysely(db);
    }
  }
  if (variant === 'publisher') {
    const relay = createRabbitMqRelay({ url, exchange: EXCHANGE });
    const events = memoryEvents(n, offset);
    const signal = new AbortController().signal;
    let next = 0;
    let failed = 0;
    try {
      // Connect first, as the bare loop does before its clock starts.
      await relay.batchHandler([], { signal });
      const m = await runDrain(
        async () => {
          const slice = events.slice(next, next + batch);
          next += slice.length;
          if (slice.length === 0) return 0;
          const results = await relay.batchHandler(slice, { signal });
          failed += results.filter((r) => r.status === 'rejected').length;
          return slice.length;
        },
        { workers: 1, profileName },
      );
      return { m, failed, returned: 0 };
    } finally {
      await relay.close();
    }
  }
  const { connection, channel, returned } = await confirmChannel(url);
  try {
    if (variant === 'bare') {
      const events = memoryEvents(n, offset);
      let next = 0;
      let failed = 0;
      const m = await runDrain(
        async () => {
          const slice = events.slice(next, next + batch);
          next += slice.length;
          if (slice.length === 0) return 0;
          for (const event of slice) publishBare(channel, event.id, event.type, event.createdAt, event.payload);
          await channel.waitForConfirms().catch(() => (failed += slice.length));
          return slice.length;
        },
        { workers: 1, profileName },
      );
      return { m, failed, returned: returned() };
    }
    // bare-relay: the outbox scenario's bare SQL cycle around a bare publish.
    const claim = bench.sql('select id, type, payload, attempts, created_at from outbox where available_at <= ? order by available_at, id limit ? for update skip locked');
    const inList = (k: number) => Array.from({ length: k }, () => '?').join(', ');
    const lease = (k: number) => bench.sql(`update outbox set attempts = attempts + 1, available_at = ?, locked_until = ? where id in (${inList(k)})`);
    const mark = (k: number) => bench.sql(`update outbox set processed_at = ?, available_at = NULL, locked_until = NULL, last_error = NULL where id in (${inList(k)}) and locked_until = ?`);
    const pool: RawPool = await bench.raw(1);
    if (bench.dialect === 'mysql') await pool.query('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED');
    let failed = 0;
    try {
      const m = await runDrain(
        async () => {
          const now = new Date();
          const leaseUntil = new Date(now.getTime() + LEASE_MS);
          const rows = await rawTransaction(pool, async (q) => {
            const { rows } = await q(claim, [now, batch]);
            if (rows.length > 0) await q(lease(rows.length), [leaseUntil, leaseUntil, ...rows.map((r) => r.id)]);
            return rows;
          });
          if (rows.length === 0) return 0;
          for (const row of rows) publishBare(channel, String(row.id), row.type, new Date(row.created_at), row.payload);
          await channel.waitForConfirms().catch(() => (failed += rows.length));
          await pool.query(mark(rows.length), [now, ...rows.map((r) => r.id), leaseUntil]);
          return rows.length;
        },
        { workers: 1, counters: () => bench.counters(), profileName },
      );
      return { m, failed, returned: returned() };
    } finally {
      await pool.end();
    }
  } finally {
    await connection.close().catch(() => {});
  }
}

export const rabbitmq: Scenario = {
  id: 'rabbitmq',
  title: 'Outbox to RabbitMQ',
  async run(ctx) {
    const n = Math.min(ctx.drainSize, 20_000);
    const perRound = Math.ceil(n / ctx.rounds);
    const missing = process.env.AMQP_URL?.trim() ? undefined : rabbitMqMissingReason();
    if (missing) {
      ctx.log(`  skipped: no AMQP_URL, and ${missing}`);
      return { id: 'rabbitmq', title: 'Outbox to RabbitMQ', unit: 'events/s', latencyOf: 'batch call', description: 'Not run.', variants: [], baselines: [], rows: [], notes: [`Skipped: no AMQP_URL, and ${missing}.`] };
    }
    const broker = await openBroker();
    ctx.log(`  broker: ${broker.label}`);
    const admin = await amqplib.connect(broker.url);
    const channel = await admin.createChannel();
    const result: ScenarioResult = {
      id: 'rabbitmq',
      title: 'Outbox to RabbitMQ',
      unit: 'events/s',
      latencyOf: 'batch call',
      description: `${n.toLocaleString('en-US')} events published as persistent messages (mandatory, publisher confirms) to a durable topic exchange bound to one durable queue, in batches of B, by one caller; ${ctx.rounds} interleaved round${ctx.rounds === 1 ? '' : 's'} of ${perRound.toLocaleString('en-US')}. Broker: ${broker.label}.`,
      variants: [
        { key: 'relay', label: 'runOutboxBatch + relay', description: 'runOutboxBatch({ db, batchHandler: createRabbitMqRelay(…).batchHandler, limit: B }) until it claims nothing: claim, publish the batch, one wait for its confirms, acknowledge.' },
        {
          key: 'bare-relay',
          label: 'bare SQL + bare amqplib',
          description: "The outbox scenario's bare SQL claim/lease transaction, the batch published by hand on a confirm channel, waitForConfirms(), then the bare UPDATE marking it processed.",
        },
        { key: 'publisher', label: 'relay.batchHandler alone', description: 'The relay on the same events in memory, B at a time: no database.' },
        { key: 'bare', label: 'bare amqplib', description: 'The same messages in memory, published B at a time on a confirm channel, then waitForConfirms(): no database.' },
      ],
      baselines: ['bare', 'bare-relay'],
      rows: [],
      notes: [
        'Every message is persistent and routed to a durable classic queue: a confirm means the broker wrote it to disk, which is most of the cost in every variant.',
        'relay × bare-relay is the library against the same work written by hand; publisher × bare is the relay’s own overhead; relay × bare adds the outbox’s database work to the broker’s.',
      ],
    };
    try {
      await channel.assertExchange(EXCHANGE, 'topic', { durable: true });
      await channel.assertQueue(QUEUE, { durable: true });
      await channel.bindQueue(QUEUE, EXCHANGE, 'reservation.#');
      for (const batch of ctx.outboxBatches) {
        const parts = new Map<Variant, Array<{ m: Measurement; failed: number; returned: number; total: number; distinct: number; outboxOk: boolean }>>();
        for (let round = 0; round < ctx.rounds; round++) {
          for (const variant of VARIANTS.filter((v) => !ctx.variants || ctx.variants.includes(v))) {
            await ctx.bench.reset();
            await channel.purgeQueue(QUEUE);
            if (variant === 'relay' || variant === 'bare-relay') await seedEvents(ctx.bench, perRound);
            const run = await drain(ctx, broker.url, variant, batch, perRound, round * perRound);
            const back = await readBack(channel, perRound);
            const outboxOk = variant === 'relay' || variant === 'bare-relay' ? (await ctx.bench.count('SELECT COUNT(*) AS n FROM outbox WHERE processed_at IS NOT NULL')) === perRound : true;
            parts.set(variant, [...(parts.get(variant) ?? []), { ...run, ...back, outboxOk }]);
          }
        }
        for (const [variant, runs] of parts) {
          const m = mergeMeasurements(runs.map((r) => r.m));
          const sum = (f: (r: (typeof runs)[number]) => number) => runs.reduce((a, r) => a + f(r), 0);
          const checks = new Checks();
          checks.expect('no failed calls', m.errors === 0, m.errors === 0 ? '0' : `${m.errors}: ${m.firstError}`);
          checks.equal('events published', m.ops, perRound * runs.length);
          checks.equal('failed, nacked or returned', sum((r) => r.failed + r.returned), 0);
          checks.equal('messages in the queue', sum((r) => r.total), perRound * runs.length);
          checks.equal('distinct message ids (each once)', sum((r) => r.distinct), perRound * runs.length);
          if (variant === 'relay' || variant === 'bare-relay') checks.expect('every outbox row processed', runs.every((r) => r.outboxOk), runs.every((r) => r.outboxOk) ? 'yes' : 'no');
          result.rows.push({ variant, config: { batch }, m, ratios: {}, checks: checks.list });
          const failed = checks.list.filter((c) => !c.ok);
          ctx.log(
            `  B=${String(batch).padEnd(3)} ${variant.padEnd(10)} ${m.throughput.toFixed(0).padStart(7)} events/s  batch p50 ${m.latency.p50Ms.toFixed(2)} ms  p99 ${m.latency.p99Ms.toFixed(2)} ms` +
              (failed.length ? `  CHECK FAILED: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ')}` : ''),
          );
        }
      }
    } finally {
      await channel.deleteQueue(QUEUE).catch(() => {});
      await admin.close().catch(() => {});
      await broker.stop();
    }
    computeRatios(result);
    return result;
  },
};
