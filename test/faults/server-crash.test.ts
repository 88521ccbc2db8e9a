/**
 * Scenario 3 (issue 12): the database server crashes under load, twice (soak: twenty times; MariaDB SIGKILLed,
 * PostgreSQL in an immediate shutdown with synchronous commits), and comes back with its data.
 * Nothing acknowledged may be lost: every acknowledged reservation is in the database in the
 * state acknowledged, every acknowledged restock counted. The engine and an in-process
 * `startWorker` on the same pool recover without being restarted; the recovery time is from the
 * server accepting connections again to the first reserve that succeeds.
 *
 * The servers are this file's own (the suite's shared ones must not crash under other files).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReservationEngine, type RunningWorker, startWorker } from '../../src/index.js';
import { type ThrowawayServer, startMariaDb, startPostgres } from '../support/servers.js';
import { connect, createDatabase, SERVERS } from './support/databases.js';
import { reportAndAssert, scaled } from './support/scenario.js';
import { createItems, drainOutbox, Ledger, newKey, OUTBOX_OPTIONS, runClients, verify } from './support/workload.js';

const DURATION_MS = scaled(20_000);
/** When the crashes come, as shares of the load's duration: twice (soak: twenty times), evenly spread. */
const CRASHES = scaled(2);
const CRASHES_AT = Array.from({ length: CRASHES }, (_, i) => (i + 0.4) / CRASHES);
/** How long the server stays down. */
const DOWN_MS = 1_500;
/** Longest wait for one definite answer: the outage, the restart and crash recovery fit in it. */
const CALL_DEADLINE_MS = 180_000;

const START = {
  mysql: startMariaDb,
  // Commits acknowledged before the crash must still be there after it.
  postgres: () => startPostgres({ crashSafe: true }),
};

for (const { name } of SERVERS) {
  describe(`server crash [${name}]`, () => {
    let server: ThrowawayServer;
    beforeAll(async () => {
      server = await START[name]();
    });
    afterAll(() => server?.stop());

    it('loses nothing acknowledged through two crashes, and the engine and its worker recover unrestarted', async () => {
      const started = performance.now();
      const url = await createDatabase({ name, url: server.url });
      const db = connect(name, url, 8);
      let worker: RunningWorker | undefined;
      try {
        const engine = new ReservationEngine({ db });
        const ledger = new Ledger();
        const itemIds = await createItems(engine, ledger, 4);
        // The probe's own item, out of the clients' reach: they never sell it out.
        const [probeItem] = await createItems(engine, ledger, 1, 1_000);
        const { limit, maxAttempts, leaseMs, baseDelayMs, maxDelayMs } = OUTBOX_OPTIONS;
        worker = startWorker({
          db,
          handler: ledger.handler,
          outbox: { limit, maxAttempts, leaseMs, baseDelayMs, maxDelayMs },
          expire: { limit: 50 },
          idleIntervalMs: 50,
          maxIdleIntervalMs: 200,
          errorIntervalMs: 100,
          maxErrorIntervalMs: 500,
        });

        /** Reserves one unit with a new key until it succeeds; resolves with the reservation's id. */
        const probe = async (): Promise<string> => {
          const key = newKey('probe');
          const request = { itemId: probeItem!, quantity: 1, ttlSeconds: 600 };
          const answer = await ledger.resolve('reserve', () => engine.reserve({ ...request, idempotencyKey: key }), CALL_DEADLINE_MS);
          if (!('value' in answer)) throw new Error(`the probe reserve got no reservation: ${JSON.stringify(answer)}`);
          ledger.acknowledgeReserve(key, request, answer.value.reservation.id);
          return answer.value.reservation.id;
        };

        const recoveries: number[] = [];
        let lastProbe = '';
        const crasher = (async () => {
          let elapsed = 0;
          for (const at of CRASHES_AT) {
            await sleep(DURATION_MS * at - elapsed);
            elapsed = DURATION_MS * at;
            await server.crash();
            await sleep(DOWN_MS);
            await server.start();
            const up = performance.now();
            lastProbe = await probe();
            recoveries.push(performance.now() - up);
            elapsed += DOWN_MS + (performance.now() - up);
          }
        })();
        await runClients({ engine, ledger, itemIds, durationMs: DURATION_MS, clients: 6, deadlineMs: CALL_DEADLINE_MS });
        await crasher;

        // The worker, never restarted, works again: its loops succeed, and it delivered the
        // event of the reservation made after the last crash.
        await expect.poll(() => ledger.deliveredCreations.has(lastProbe.toLowerCase()), { timeout: 60_000 }).toBe(true);
        await expect.poll(() => [worker!.summary().outbox.failingSince, worker!.summary().expire.failingSince], { timeout: 60_000 }).toEqual([null, null]);
        const summary = await worker.stop();
        worker = undefined;

        const checker = connect(name, url, 2);
        try {
          await drainOutbox(checker, ledger);
          const { violations, duplicatesDelivered, deadLettered } = await verify(checker, ledger);
          if (deadLettered > 0) violations.push(`${deadLettered} events dead-lettered, none should be (maxAttempts 1000)`);
          if (recoveries.length !== CRASHES_AT.length) violations.push(`${recoveries.length} recoveries measured, ${CRASHES_AT.length} crashes planned`);
          reportAndAssert(
            {
              scenario: '3 server crash',
              dialect: name,
              operations: ledger.operations + summary.outbox.batches + summary.expire.batches,
              faults: recoveries.length,
              duplicatesDelivered,
              recoveryMs: Math.max(...recoveries),
              recoveryMeaning: 'longest time from the server accepting connections again to the first successful reserve',
              seconds: (performance.now() - started) / 1000,
            },
            violations,
            ledger.rawErrors(),
            ledger.rawErrorCount,
            `recoveries ${recoveries.map((ms) => `${Math.round(ms)} ms`).join(', ')}; worker batches failed: outbox ${summary.outbox.failedBatches}, expire ${summary.expire.failedBatches}; ${ledger.uncertain} calls repeated`,
          );
        } finally {
          await checker.destroy();
        }
      } finally {
        await worker?.stop();
        await db.destroy();
      }
    });
  });
}
