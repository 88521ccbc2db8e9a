/**
 * Scenario 1 (issue 12): the database ends the engine's connections under load, a few per second
 * (MariaDB `KILL CONNECTION`, PostgreSQL `pg_terminate_backend`), wherever they are: idle in the
 * pool, mid-statement, mid-transaction, mid-COMMIT; and, as often, cancels the statement a session
 * is running while the session lives on (`KILL QUERY`, `pg_cancel_backend`). Clients repeat what ends in OUTCOME_UNKNOWN
 * until they get a definite answer; expiry and outbox delivery run in loops meanwhile. Afterwards
 * the database must hold exactly what the clients were told, and every invariant.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'vitest';
import { ReservationEngine } from '../../src/index.js';
import { connect, createDatabase, openAdmin, SERVERS } from './support/databases.js';
import { reportAndAssert, scaled } from './support/scenario.js';
import { createItems, drainOutbox, Ledger, runClients, startBackgroundLoops, verify } from './support/workload.js';

/** How long the clients run under kills. */
const DURATION_MS = scaled(15_000);
/** Mean pause between two faults (a kill or a cancel): "a few per second". */
const FAULT_INTERVAL_MS = 250;

for (const target of SERVERS) {
  describe(`connection kills [${target.name}]`, () => {
    it('resolves every call under killed connections, and the database holds what was acknowledged', async () => {
      const started = performance.now();
      const url = await createDatabase(target);
      const db = connect(target.name, url, 8);
      const checker = connect(target.name, url, 2);
      const admin = await openAdmin(target.name, url);
      try {
        const engine = new ReservationEngine({ db });
        const ledger = new Ledger();
        const itemIds = await createItems(engine, ledger, 4);
        const background = startBackgroundLoops(db, ledger);

        let kills = 0;
        let cancels = 0;
        let chaos = true;
        const killer = (async () => {
          while (chaos) {
            await sleep(FAULT_INTERVAL_MS * (0.5 + Math.random()));
            if (!chaos) break;
            if (Math.random() < 0.5) kills += Number(await admin.killRandomSession());
            else cancels += Number(await admin.cancelRandomStatement());
          }
        })();
        await runClients({ engine, ledger, itemIds, durationMs: DURATION_MS, clients: 6 });
        chaos = false;
        await killer;
        await background.stop();

        await drainOutbox(checker, ledger);
        const { violations, duplicatesDelivered, deadLettered } = await verify(checker, ledger);
        if (deadLettered > 0) violations.push(`${deadLettered} events dead-lettered, none should be (maxAttempts 1000)`);
        if (kills === 0 || cancels === 0) violations.push(`${kills} connections killed, ${cancels} statements cancelled: the scenario tested too little`);
        reportAndAssert(
          {
            scenario: '1 connection kills',
            dialect: target.name,
            operations: ledger.operations,
            faults: kills + cancels,
            duplicatesDelivered,
            recoveryMs: ledger.slowestAnswerMs,
            recoveryMeaning: 'slowest definite answer to a client (engine retries and client repeats included)',
            seconds: (performance.now() - started) / 1000,
          },
          violations,
          ledger.rawErrors(),
          ledger.rawErrorCount,
          `${kills} connections killed, ${cancels} statements cancelled; ${ledger.uncertain} calls reached the client as OUTCOME_UNKNOWN and were repeated`,
        );
      } finally {
        await admin.close();
        await db.destroy();
        await checker.destroy();
      }
    });
  });
}
