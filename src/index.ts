export { ReservationEngine } from './engine/reservation-engine.js';
export type {
  AuditInput,
  CreateItemInput,
  ExtendInput,
  ListReservationsQuery,
  ReservationEngineOptions,
  ReservationPage,
  ReserveInput,
  ReserveLineInput,
  ReserveRequestBase,
  ReserveResult,
  RestockInput,
  WriteOffInput,
} from './engine/reservation-engine.js';
export type { AuditDiscrepancy, AuditReport } from './audit/audit-stock.js';
export type { WriteOptions } from './engine/host-transaction.js';
export { DEFAULT_TABLE_PREFIX } from './schema/tables.js';
export { runOutboxBatch } from './outbox/run-outbox-batch.js';
export type {
  OutboxBatchHandler,
  OutboxBatchResult,
  OutboxDeliveryResult,
  OutboxHandler,
  OutboxHandlerContext,
  RunOutboxBatchOptions,
} from './outbox/run-outbox-batch.js';
export { expireBatch } from './expiry/expire-batch.js';
export type { ExpireBatchOptions, ExpireBatchResult } from './expiry/expire-batch.js';
export { migrateToLatest, reservationEngineMigrations, reservationEngineMigrationProvider } from './migrations/index.js';
export type { MigrationOptions } from './migrations/index.js';
export {
  ReservationError,
  ValidationError,
  ConfigurationError,
  NotFoundError,
  InsufficientStockError,
  IdempotencyConflictError,
  InvalidStateError,
  HoldLimitExceededError,
  DuplicateSkuError,
  TransactionConflictError,
  OutcomeUnknownError,
  UnsupportedDatabaseError,
} from './errors.js';
export type { ReservationErrorCode, ShortLine, ValidationIssue } from './errors.js';
export { MAX_QUANTITY, MAX_AVAILABLE_QUANTITY, MAX_TTL_SECONDS, MAX_BATCH_LIMIT, MAX_LINES } from './validation.js';
export type {
  Item,
  Reservation,
  ReservationLine,
  ReservationStatus,
  DatabaseKind,
  OutboxEvent,
  OutboxEventOf,
  OutboxEventType,
  OutboxEventPayloads,
  ReservationEventType,
  ItemEventType,
  ReservationEventPayload,
  ItemWrittenOffPayload,
  Database as ReservationEngineTables,
  ItemsTable,
  ReservationsTable,
  IdempotencyRequestsTable,
  RestockRequestsTable,
  OutboxTable,
  ReservationLinesTable,
} from './types.js';
export { startWorker } from './worker/start-worker.js';
export type {
  RunningWorker,
  StartWorkerOptions,
  WorkerExpireOptions,
  WorkerExpireSummary,
  WorkerPurgeOptions,
  WorkerPurgeSummary,
  WorkerLogger,
  WorkerLoopSummary,
  WorkerOutboxOptions,
  WorkerOutboxSummary,
  WorkerSummary,
} from './worker/start-worker.js';
export { purgeBatch } from './retention/purge-batch.js';
export type { PurgeBatchOptions, PurgeBatchResult, RetentionPeriods } from './retention/purge-batch.js';
export { listDeadLetters, retryDeadLetters } from './outbox/dead-letters.js';
export type { DeadLetter, ListDeadLettersOptions, RetryDeadLettersOptions } from './outbox/dead-letters.js';
export { getBacklog } from './operations/backlog.js';
export type { Backlog, BacklogOptions } from './operations/backlog.js';
export { createEmbeddedDatabase } from './embedded/create-embedded-database.js';
export type { EmbeddedDatabaseOptions } from './embedded/create-embedded-database.js';
export { PGliteDialect } from './embedded/pglite-dialect.js';
export type { PGliteLike } from './embedded/pglite-dialect.js';
export { toProblem, PROBLEM_CONTENT_TYPE } from './http/problem.js';
export type { ProblemDocument } from './http/problem.js';
export { observeBacklog } from './observability/backlog-metrics.js';
export type { ObserveBacklogOptions } from './observability/backlog-metrics.js';
export type { Logger } from './observability/logger.js';
export type { TelemetryOptions, TelemetrySetting } from './observability/telemetry.js';
