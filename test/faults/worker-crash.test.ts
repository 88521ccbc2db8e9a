/**
 * Scenario 4 (issue 12): outbox workers in child processes, SIGKILLed at random while they
 * deliver, with handlers that throw, hang past the lease or call process.exit
 * (./fixtures/chaos-worker.ts). Every event must be delivered at least once (duplicates are
 * counted), and nothing may be stuck: afterwards one clean worker drains everything, every event
 * processed or dead-lettered, and dead-lettered only the poison events meant to be.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import { describe, inject, it } from 'vitest';
import { ReservationEngine } from '../../src/index.js';
import { compiledScript } from '../support/compile.js';
import { connect, createDatabase, SERVERS } from './support/databases.js';
import { reportAndAssert, scaled } from './support/scenario.js';
import { createItems, Ledger, newKey, verify } from './support/workload.js';

const DURATION_MS = scaled(20_000);
const WORKERS = 3;
/** Mean pause between two SIGKILLs. */
const KILL_INTERVAL_MS = 800;
const QUANTITIES = { poison: 7, exit: 5, hang: 6 } as const;
const WORKER_ENV = {
  POISON_QUANTITY: String(QUANTITIES.poison),
  EXIT_QUANTITY: String(QUANTITIES.exit),
  HANG_QUANTITY: String(QUANTITIES.hang),
  THROW_SHARE: '0.1',
  // Room for the kills and throws of the chaos phase: only the poison events reach it.
  MAX_ATTEMPTS: '12',
  LEASE_MS: '2000',
  HANDLER_TIMEOUT_MS: '500',
};
/** Longest the clean worker may take to drain the outbox. */
const DRAIN_TIMEOUT_MS = 120_000;

/** A reservation's quantity: mostly ordinary, some poison, some that exit or hang their worker. */
function quantity(): number {
  const roll = Math.random();
  if (roll < 0.03) return QUANTITIES.poison;
  if (roll < 0.08) return QUANTITIES.exit;
  if (roll < 0.13) return QUANTITIES.hang;
  return 1 + Math.floor(Math.random() * 4);
}

class WorkerProcess {
  output = '';
  readonly exited: Promise<number | null>;
  constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (chunk: Buffer) => (this.output += chunk));
    child.stderr?.on('data', (chunk: Buffer) => (this.output += chunk));
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }
  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }
}

for (const target of SERVERS) {
  describe(`worker crash [${target.name}]`, () => {
    it('delivers every event at least once through killed, exiting and hanging workers; a clean worker leaves nothing stuck', async () => {
      const started = performance.now();
      const url = await createDatabase(target);
      const db = connect(target.name, url, 4);
      const script = await compiledScript('test/faults/fixtures/chaos-worker.ts');
      const logDir = path.join(inject('scratchDir'), `worker-logs-${target.name}-${process.pid}`);
      const logs: string[] = [];
      const spawned = new Set<WorkerProcess>();
      const startWorker = (mode: 'chaos' | 'clean') => {
        const logFile = `${logDir}-${logs.length}.log`;
        logs.push(logFile);
        const worker = new WorkerProcess(
          spawn(process.execPath, [script], { env: { ...process.env, ...WORKER_ENV, DATABASE_URL: url, LOG_FILE: logFile, MODE: mode }, stdio: ['ignore', 'pipe', 'pipe'] }),
        );
        spawned.add(worker);
        return worker;
      };
      try {
        const engine = new ReservationEngine({ db });
        const ledger = new Ledger();
        const itemIds = await createItems(engine, ledger, 2, 1_000_000);

        let kills = 0;
        let chaos = true;
        const fleet = Array.from({ length: WORKERS }, () => startWorker('chaos'));
        const killer = (async () => {
          while (chaos) {
            await sleep(KILL_INTERVAL_MS * (0.5 + Math.random()));
            if (!chaos) break;
            const victim = Math.floor(Math.random() * fleet.length);
            if (fleet[victim]!.child.kill('SIGKILL')) kills++;
            // Replace the killed worker, and any that exited on its own (process.exit in a handler).
            for (let i = 0; i < fleet.length; i++) if (i === victim || !fleet[i]!.alive) fleet[i] = startWorker('chaos');
          }
        })();

        // The producer: reservations, some confirmed or cancelled, each state change an event.
        const endAt = performance.now() + DURATION_MS;
        while (performance.now() < endAt) {
          const key = newKey('reserve');
          const request = { itemId: itemIds[Math.floor(Math.random() * itemIds.length)]!, quantity: quantity(), ttlSeconds: 3600 };
          const answer = await ledger.resolve('reserve', () => engine.reserve({ ...request, idempotencyKey: key }));
          if (!('value' in answer)) throw new Error(`reserve failed without faults: ${JSON.stringify(answer)}`);
          const id = answer.value.reservation.id;
          ledger.acknowledgeReserve(key, request, id);
          const roll = Math.random();
          if (roll < 0.3) await ledger.resolve('confirm', () => engine.confirm(id)).then(() => (ledger.reservations.get(id)!.confirmed = true));
          else if (roll < 0.5) await ledger.resolve('cancel', () => engine.cancel(id)).then(() => (ledger.reservations.get(id)!.cancelled = true));
          await sleep(20);
        }
        chaos = false;
        await killer;
        for (const worker of fleet) worker.child.kill('SIGKILL');
        await Promise.all(fleet.map((worker) => worker.exited));

        // One clean worker delivers what is left, and exits once nothing is.
        const drainStarted = performance.now();
        const cleaner = startWorker('clean');
        const code = await Promise.race([cleaner.exited, sleep(DRAIN_TIMEOUT_MS).then(() => 'timeout' as const)]);
        const drainMs = performance.now() - drainStarted;
        const violations: string[] = [];
        if (code !== 0) violations.push(`the clean worker ${code === 'timeout' ? `did not drain the outbox within ${DRAIN_TIMEOUT_MS / 1000} s` : `exited with ${code}`}: ${cleaner.output.slice(-2000)}`);

        const lines = logs.flatMap((file) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : []));
        for (const line of lines) if (line.startsWith('D ')) ledger.delivered.push(line.slice(2));
        const playedFaults = lines.filter((line) => line.startsWith('F ')).length;
        const rawErrors = lines.filter((line) => line.startsWith('E raw ')).map((line) => line.slice(6));
        const typedErrors = lines.filter((line) => line.startsWith('E typed ')).map((line) => line.slice(8));
        for (const error of typedErrors) if (!/code=(OUTCOME_UNKNOWN|TRANSACTION_CONFLICT)/.test(error)) violations.push(`a worker's batch failed: ${error}`);

        const { violations: found, duplicatesDelivered, deadLettered } = await verify(db, ledger);
        violations.push(...found);
        // Dead-lettered: exactly the poison events.
        const events = (await sql<{ id: unknown; payload: unknown; dead: unknown }>`select id, payload, dead_lettered_at as dead from reservation_engine_outbox`.execute(db)).rows;
        const quantityOf = (payload: unknown) => (typeof payload === 'string' ? JSON.parse(payload) : payload).quantity as number;
        for (const event of events) {
          const isPoison = quantityOf(event.payload) === QUANTITIES.poison;
          if (isPoison && event.dead == null) violations.push(`poison event ${event.id} was not dead-lettered`);
          if (!isPoison && event.dead != null) violations.push(`event ${event.id} (quantity ${quantityOf(event.payload)}) dead-lettered, but only poison events should be`);
        }
        if (kills === 0 || !lines.some((line) => line.startsWith('F exit')) || !lines.some((line) => line.startsWith('F hang'))) {
          violations.push(`not every fault happened: ${kills} kills, faults played: ${[...new Set(lines.filter((l) => l.startsWith('F ')).map((l) => l.split(' ')[1]))].join(', ')}`);
        }
        reportAndAssert(
          {
            scenario: '4 worker crash',
            dialect: target.name,
            operations: ledger.operations + ledger.delivered.length,
            faults: kills + playedFaults,
            duplicatesDelivered,
            recoveryMs: drainMs,
            recoveryMeaning: 'time the clean worker took to drain the outbox after the chaos',
            seconds: (performance.now() - started) / 1000,
          },
          violations,
          rawErrors,
          rawErrors.length,
          `${events.length} events, ${deadLettered} dead-lettered (poison), ${kills} SIGKILLs, ${playedFaults} handler faults, ${logs.length} worker processes`,
        );
      } finally {
        for (const worker of spawned) worker.child.kill('SIGKILL');
        await db.destroy();
      }
    });
  });
}
