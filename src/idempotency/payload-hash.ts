import { createHash } from 'node:crypto';

/**
 * @internal
 * JSON with object keys sorted at every depth, so `{a, b}` and `{b, a}` give the same text.
 * `undefined` properties are left out, as JSON.stringify does.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const entries = Object.keys(value)
    .filter((key) => (value as Record<string, unknown>)[key] !== undefined)
    .sort()
    .map((key) => `${JSON.stringify(key)}:${canonicalJson((value as Record<string, unknown>)[key])}`);
  return `{${entries.join(',')}}`;
}

/** @internal SHA-256 (hex) of the canonical JSON of a normalized request. */
export function payloadHash(request: object): string {
  return createHash('sha256').update(canonicalJson(request)).digest('hex');
}
