import { z } from 'zod';

/**
 * Where the library reports what an operator must know: `console`, a pino or winston logger, or an
 * object with some of these methods (the others are not called). Messages are whole sentences,
 * prefixed with what reports (`outbox: …`, `expire: …`, `worker: …`); details come as the second
 * argument (`error(message, { error, eventId })`). Nothing is logged without one.
 */
export interface Logger {
  /** One line per batch that found work, and per repeated failure while a loop keeps failing. */
  debug?(message: string, details?: Record<string, unknown>): void;
  /** A loop that succeeds again after failing; the worker stopping, with its totals. */
  info?(message: string, details?: Record<string, unknown>): void;
  /** An event whose delivery failed and will be retried; a transaction that gave up after its retries. */
  warn?(message: string, details?: Record<string, unknown>): void;
  /**
   * A loop that starts failing (the database is down…), once per outage, with the error; an event
   * dead-lettered; a reservation that could not be expired.
   */
  error?(message: string, details?: Record<string, unknown>): void;
}

const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;

/** @internal `logger` as every entry point validates it. */
export const loggerSchema = z.custom<Logger>(
  (v) => typeof v === 'object' && v !== null && LOG_LEVELS.every((level) => (v as Record<string, unknown>)[level] === undefined || typeof (v as Record<string, unknown>)[level] === 'function'),
  { error: 'must be an object whose debug, info, warn and error, where present, are functions (console, pino…)' },
);

/** @internal Calls `logger[level]` as a method (pino needs its `this`); a logger that throws is ignored. */
export function log(logger: Logger | undefined, level: keyof Logger, message: string, details?: Record<string, unknown>): void {
  if (!logger) return;
  try {
    if (details === undefined) logger[level]?.(message);
    else logger[level]?.(message, details);
  } catch {
    // Nowhere left to report it.
  }
}
