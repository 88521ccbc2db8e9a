/**
 * Scenario 2 (issue 12): replies lost on the way back. Between the engine and the database sits
 * a proxy (./support/proxy.ts) that forwards a COMMIT, or the reserve routine's call, to the
 * server, swallows the answer and closes the connection: the statement may have taken effect,
 * and the client cannot know. Repeating with the same idempotency key (reserve, restock) or the
 * same confirm/cancel must resolve every case with exactly one effect: one reservation per key,
 * every unit counted once.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'vitest';
import { ReservationEngine } from '../../src/index.js';
import { connect, createDatabase, SERVERS, viaPort } from './support/databases.js';
import { LostReplyProxy } from './support/proxy.js';
import { reportAndAssert, scaled } from './support/scenario.js';
import { createItems, drainOutbox, Ledger, runClients, startBackgroundLoops, verify } from './support/workload.js';

const DURATION_MS = scaled(15_000);
/** Mean pause between one lost reply and arming the next. */
const LOSS_INTERVAL_MS = 150;

/**
 * The statements whose replies get lost: a transaction's COMMIT and reserve's single round trip
 * (autocommit), the outcomes a client cannot know; and, as controls, a transaction's BEGIN and its
 * UPDATEs (the server rolls the transaction back when the connection goes).
 */
const COMMIT = /^\s*commit\b/i;
const RESERVE = /reserve_or_replay/i;
/** A cart's single round trip. */
const RESERVE_LINES = /reserve_lines/i;
const BEGIN = /^\s*(begin|start transaction)\b/i;
const UPDATE = /^\s*update\b/i;
/** Drawn at random: the uncertain outcomes twice as often as the controls. */
const TARGETS: readonly RegExp[] = [COMMIT, RESERVE, COMMIT, RESERVE, RESERVE_LINES, BEGIN, UPDATE];

for (const target of SERVERS) {
  describe(`lost replies [${target.name}]`, () => {
    it('resolves every statement whose reply was lost with exactly one effect', async () => {
      const started = performance.now();
      const url = await createDatabase(target);
      const upstream = new URL(url);
      const proxy = await LostReplyProxy.start({ host: upstream.hostname, port: Number(upstream.port) }, target.name);
      const db = connect(target.name, viaPort(url, proxy.port), 6);
      const checker = connect(target.name, url, 2);
      try {
        const engine = new ReservationEngine({ db });
        const ledger = new Ledger();
        const itemIds = await createItems(engine, ledger, 4);
        const background = startBackgroundLoops(db, ledger);
        const lost = new Map<string, number>();

        let chaos = true;
        const saboteur = (async () => {
          while (chaos) {
            await sleep(LOSS_INTERVAL_MS * (0.5 + Math.random()));
            const pattern = TARGETS[Math.floor(Math.random() * TARGETS.length)]!;
            const fired = await Promise.race([proxy.loseNextReply(pattern), sleep(2_000).then(() => undefined)]);
            proxy.disarm();
            if (fired !== undefined) lost.set(pattern.source, (lost.get(pattern.source) ?? 0) + 1);
          }
        })();
        await runClients({ engine, ledger, itemIds, durationMs: DURATION_MS, clients: 4 });
        chaos = false;
        await saboteur;
        await background.stop();

        await drainOutbox(checker, ledger);
        const { violations, duplicatesDelivered, deadLettered } = await verify(checker, ledger);
        if (deadLettered > 0) violations.push(`${deadLettered} events dead-lettered, none should be (maxAttempts 1000)`);
        for (const pattern of new Set(TARGETS)) if (!lost.get(pattern.source)) violations.push(`no reply to ${pattern} was lost: the scenario tested nothing there`);
        console.log(`[faults] lost replies [${target.name}]: ${[...lost].map(([pattern, n]) => `${n}× /${pattern}/`).join(', ')}`);
        reportAndAssert(
          {
            scenario: '2 lost replies',
            dialect: target.name,
            operations: ledger.operations,
            faults: proxy.lostReplies,
            duplicatesDelivered,
            recoveryMs: ledger.slowestAnswerMs,
            recoveryMeaning: 'slowest definite answer to a client (engine retries and client repeats included)',
            seconds: (performance.now() - started) / 1000,
          },
          violations,
          ledger.rawErrors(),
          ledger.rawErrorCount,
          `${ledger.uncertain} calls reached the client as OUTCOME_UNKNOWN and were repeated`,
        );
      } finally {
        await db.destroy();
        await checker.destroy();
        await proxy.close();
      }
    });
  });
}
