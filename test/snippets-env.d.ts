// What the README's and TSDoc's samples take as given: a host's database, engine, broker and HTTP objects.
import type { Kysely } from 'kysely';
import type { Channel } from 'amqplib';
import type { ReservationEngine } from 'reservation-engine';

interface HostResponse {
  status(code: number): HostResponse;
  type(type: string): HostResponse;
  json(body: unknown): void;
}

declare global {
  const db: Kysely<any>;
  const engine: ReservationEngine;
  const broker: { publish(type: string, payload: unknown, options: { messageId: string; signal?: AbortSignal }): Promise<void> };
  const req: { header(name: string): string };
  const res: HostResponse;
  const idempotencyKey: string;
  const itemId: number;
  /** An amqplib channel a consumer reads from. */
  const channel: Channel;
  const app: { use(handler: (error: unknown, req: unknown, res: HostResponse, next: unknown) => void): void };
}
