import { randomFillSync } from 'node:crypto';

/** Random bytes are drawn from the CSPRNG in blocks: one system call per 256 ids, not per id. */
const POOL_SIZE = 16 * 256;
const pool = new Uint8Array(POOL_SIZE);
let offset = POOL_SIZE;

/**
 * @internal
 * A UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits. New ids sort
 * after old ones, so InnoDB's clustered primary key only ever appends, yet they cannot be guessed.
 */
export function uuidv7(now: number = Date.now()): string {
  if (offset + 16 > POOL_SIZE) {
    randomFillSync(pool);
    offset = 0;
  }
  const bytes = pool.slice(offset, offset + 16);
  offset += 16;
  let ms = now;
  for (let i = 5; i >= 0; i--) {
    bytes[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  bytes[6] = (bytes[6]! & 0x0f) | 0x70;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Buffer.from(bytes.buffer, bytes.byteOffset, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** @internal The smallest UUID v7 of millisecond `ms`: every id made at or after `ms` sorts after it. */
export function uuidv7LowerBound(ms: number): string {
  const hex = Math.max(0, Math.floor(ms)).toString(16).padStart(12, '0');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-7000-8000-000000000000`;
}
