import { retryDelayMs } from '../outbox/run-outbox-batch.js';

import { log, type Logger } from '../observability/logger.js';

/** @internal How long a loop pauses between batches. */
export interface PausePolicy {
  readonly idleIntervalMs: number;
  readonly maxIdleIntervalMs: number;
  readonly errorIntervalMs: number;
  readonly maxErrorIntervalMs: number;
}

/** @internal What a loop counts about itself, besides what its batches report. */
export interface LoopHealth {
  failedBatches: number;
  failingSince: Date | null;
}

/** Beyond this many empty or failed batches in a row the pause is at its longest anyway: the exponent stops here. */
const MAX_STREAK = 30;

/**
 * @internal
 * Runs `batch` until `stopping` aborts, and resolves then, after the batch in hand; never rejects.
 * `batch` resolves `true` when it found work: the next one starts at once (through the event
 * loop, so I/O is never starved). After an empty batch the loop pauses `idleIntervalMs`,
 * doubled for each further empty one up to `maxIdleIntervalMs`. A batch that throws (the
 * database is down…) is retried after `errorIntervalMs`, doubled for each further failure up to
 * `maxErrorIntervalMs`, with jitter so that workers coming back together do not come back in
 * step. The first failure of a run of them is logged as an error, the first success after them
 * as info: one line per change, not one per batch.
 */
export class PollLoop {
  readonly health: LoopHealth = { failedBatches: 0, failingSince: null };
  #wake: (() => void) | undefined;

  constructor(
    private readonly name: string,
    private readonly batch: () => Promise<boolean>,
    private readonly pauses: PausePolicy,
    private readonly logger: Logger,
  ) {}

  /** Ends the current pause, if any: the next batch starts at once. */
  wake(): void {
    this.#wake?.();
  }

  async run(stopping: AbortSignal): Promise<void> {
    let emptyStreak = 0;
    let failureStreak = 0;
    while (!stopping.aborted) {
      let pause: number;
      try {
        const foundWork = await this.batch();
        if (failureStreak > 0) this.#recovered(failureStreak);
        failureStreak = 0;
        emptyStreak = foundWork ? 0 : emptyStreak + 1;
        pause = foundWork ? 0 : Math.min(this.pauses.maxIdleIntervalMs, this.pauses.idleIntervalMs * 2 ** (Math.min(emptyStreak, MAX_STREAK) - 1));
      } catch (error) {
        failureStreak++;
        emptyStreak = 0;
        pause = retryDelayMs(Math.min(failureStreak, MAX_STREAK), this.pauses.errorIntervalMs, this.pauses.maxErrorIntervalMs);
        this.#failed(error, failureStreak, pause);
      }
      if (stopping.aborted) break;
      await (pause === 0 ? new Promise<void>((resolve) => setImmediate(resolve)) : this.#sleep(pause, stopping));
    }
  }

  #failed(error: unknown, streak: number, pause: number): void {
    this.health.failedBatches++;
    const message = messageOf(error);
    if (streak === 1) {
      this.health.failingSince = new Date();
      log(this.logger, 'error', `${this.name}: batch failed, retrying with backoff until it succeeds: ${message}`, { error });
    } else {
      log(this.logger, 'debug', `${this.name}: batch failed again (${streak} in a row), next try in ${pause} ms: ${message}`);
    }
  }

  #recovered(failures: number): void {
    const since = this.health.failingSince;
    const seconds = since ? ` over ${((Date.now() - since.getTime()) / 1000).toFixed(1)} s` : '';
    this.health.failingSince = null;
    log(this.logger, 'info', `${this.name}: batch succeeded again after ${failures} failed attempt${failures === 1 ? '' : 's'}${seconds}`);
  }

  /** Resolves after `ms`, or at once on {@link wake} or when `stopping` aborts. */
  #sleep(ms: number, stopping: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        stopping.removeEventListener('abort', done);
        this.#wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      stopping.addEventListener('abort', done, { once: true });
      this.#wake = done;
    });
  }
}

/** The error's message, and its cause's when it has one (OutcomeUnknownError wraps the driver's error). */
function messageOf(error: unknown): string {
  try {
    if (!(error instanceof Error)) return String(error);
    const cause = error.cause instanceof Error && error.cause.message ? ` (${error.cause.message})` : '';
    return `${error.message}${cause}`;
  } catch {
    return 'an error that cannot be turned into text';
  }
}
