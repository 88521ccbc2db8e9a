import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, expect, it, vi } from 'vitest';
import { createApp } from '../examples/express/app.js';
import { startServer } from '../examples/express/server.js';
import { ReservationEngine } from '../src/index.js';
import { type TestDatabase, describeEachDialect, unique } from './support/db.js';
import { getFreePort } from './support/servers.js';


interface Listening {
  readonly url: string;
  close(): Promise<void>;
}

/** Listens on a free loopback port. */
async function listen(handler: http.RequestListener): Promise<Listening> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * A Kysely instance whose database really does not answer: a pool pointing at a port where
 * nothing listens. PGlite runs in-process and cannot be down, so it gets PostgreSQL's driver.
 */
async function unreachableDatabase(t: TestDatabase): Promise<Kysely<any>> {
  const port = await getFreePort();
  if (t.name === 'mysql') {
    const mysql = await import('mysql2');
    return new Kysely({ dialect: new MysqlDialect({ pool: mysql.createPool({ host: '127.0.0.1', port, user: 'nobody', connectionLimit: 1, timezone: 'Z' }) }) });
  }
  const { default: pg } = await import('pg');
  return new Kysely({ dialect: new PostgresDialect({ pool: new pg.Pool({ host: '127.0.0.1', port, user: 'nobody', max: 1 }) }) });
}

/** The DATABASE_URL of the test database (embedded in memory for PGlite, which has no URL). */
async function databaseUrl(t: TestDatabase): Promise<string> {
  if (t.name === 'pglite') return '';
  const query = t.name === 'mysql' ? sql<{ name: string }>`select database() as name` : sql<{ name: string }>`select current_database() as name`;
  const { rows } = await query.execute(t.db);
  const url = new URL(t.target.url);
  url.pathname = `/${rows[0]!.name}`;
  return url.toString();
}

/** Asserts an RFC 9457 problem document and returns it. */
async function expectProblem(res: Response, status: number, code: string): Promise<Record<string, unknown>> {
  const body = (await res.json()) as Record<string, unknown>;
  expect({ status: res.status, body }).toMatchObject({ status, body: { status, code } });
  expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json(;|$)/);
  expect(body).toEqual(
    expect.objectContaining({ type: expect.stringMatching(/^urn:reservation-engine:problem:/), title: expect.any(String), detail: expect.any(String) }),
  );
  return body;
}

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describeEachDialect('HTTP API and example server', (t) => {
  const logger = { info: vi.fn(), error: vi.fn() };
  let api: Listening;

  beforeAll(async () => {
    api = await listen(createApp({ engine: new ReservationEngine({ db: t.db }), db: t.db, logger }));
  });
  afterAll(() => api?.close());
  beforeEach(() => void logger.error.mockClear());

  const get = (path: string) => fetch(`${api.url}${path}`);
  const post = (path: string, body?: unknown, headers: Record<string, string> = {}) =>
    fetch(`${api.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
  const reserve = (key: string | undefined, body: unknown) => post('/reservations', body, key === undefined ? {} : { 'idempotency-key': key });
  const createItem = async (availableQuantity = 10) => {
    const res = await post('/items', { sku: unique('sku'), name: 'T-shirt', availableQuantity });
    expect(res.status).toBe(201);
    return (await res.json()) as { id: number; availableQuantity: number };
  };
  const stock = async (itemId: number) => ((await (await get(`/items/${itemId}`)).json()) as { availableQuantity: number }).availableQuantity;

  it('creates (201), reads (200) and restocks (200) an item', async () => {
    const sku = unique('sku');
    const created = await post('/items', { sku, name: 'T-shirt, size M', availableQuantity: 5 });
    expect(created.status).toBe(201);
    const item = (await created.json()) as Record<string, unknown>;
    expect(item).toEqual({ id: expect.any(Number), sku, name: 'T-shirt, size M', availableQuantity: 5, createdAt: expect.stringMatching(ISO), updatedAt: expect.stringMatching(ISO) });
    expect(created.headers.get('location')).toBe(`/items/${item.id}`);
    expect(created.headers.get('content-type')).toMatch(/^application\/json/);

    const read = await get(`/items/${item.id}`);
    expect(read.status).toBe(200);
    expect(await read.json()).toEqual(item);

    const restocked = await post(`/items/${item.id}/restock`, { quantity: 3 });
    expect(restocked.status).toBe(200);
    expect(await restocked.json()).toMatchObject({ id: item.id, availableQuantity: 8 });
  });

  it.each(['/items/999999', '/items/abc', '/items/0', '/items/-1', '/items/007', '/items/1.5', '/items/99999999999'])('GET %s is 404', async (path) => {
    await expectProblem(await get(path), 404, 'ITEM_NOT_FOUND');
  });

  it('restocking an unknown or malformed item id is 404, whatever the body', async () => {
    await expectProblem(await post('/items/999999/restock', { quantity: 1 }), 404, 'ITEM_NOT_FOUND');
    await expectProblem(await post('/items/abc/restock', '{not json'), 404, 'ITEM_NOT_FOUND');
  });

  it('invalid bodies are 400 with every problem listed', async () => {
    const missing = await expectProblem(await post('/items', { sku: '', availableQuantity: -1 }), 400, 'VALIDATION_ERROR');
    expect(missing.errors).toEqual([{ path: 'sku', message: 'must not be empty' }, { path: 'name', message: 'is required' }, { path: 'availableQuantity', message: 'must not be negative' }]);
    await expectProblem(await post('/items', { sku: unique(), name: 'x', availableQuantity: 1, colour: 'red' }), 400, 'VALIDATION_ERROR');
    const item = await createItem();
    await expectProblem(await post(`/items/${item.id}/restock`, { quantity: 0 }), 400, 'VALIDATION_ERROR');
    await expectProblem(await post(`/items/${item.id}/restock`, { quantity: 1, itemId: item.id + 1 }), 400, 'VALIDATION_ERROR');
    await expectProblem(await reserve(unique(), { itemId: item.id, quantity: 'two' }), 400, 'VALIDATION_ERROR');
    expect(await stock(item.id)).toBe(10);
  });

  it.each([
    ['an array', '[1, 2]', 'an array'],
    ['a string', '"sku"', 'a string'],
    ['null', 'null', 'null'],
    ['a number', '42', 'a number'],
  ])('a body that is %s is 400', async (_label, body, got) => {
    const problem = await expectProblem(await post('/items', body), 400, 'VALIDATION_ERROR');
    expect(problem.errors).toEqual([{ path: `input`, message: `must be a JSON object, got ${got}` }]);
    await expectProblem(await reserve(unique(), body), 400, 'VALIDATION_ERROR');
  });

  it('malformed JSON is 400, a body of another type 415, a missing body 400', async () => {
    await expectProblem(await post('/items', '{"sku": "a",'), 400, 'MALFORMED_JSON');
    await expectProblem(await reserve(unique(), '{itemId: 1}'), 400, 'MALFORMED_JSON');
    const form = await fetch(`${api.url}/items`, { method: 'POST', body: new URLSearchParams({ sku: 'a' }) });
    await expectProblem(form, 415, 'UNSUPPORTED_MEDIA_TYPE');
    const noType = await fetch(`${api.url}/items`, { method: 'POST', body: new Blob(['{}']) });
    expect(noType.headers.get('content-type')).toMatch(/problem/);
    await expectProblem(noType, 415, 'UNSUPPORTED_MEDIA_TYPE');
    // fetch sends Content-Length: 0: an empty JSON body, parsed as {}.
    const empty = await expectProblem(await post('/items'), 400, 'VALIDATION_ERROR');
    expect(empty.errors).toEqual([{ path: 'sku', message: 'is required' }, { path: 'name', message: 'is required' }, { path: 'availableQuantity', message: 'is required' }]);
    const none = await expectProblem(await rawRequest(api.url, 'POST /items HTTP/1.1'), 400, 'VALIDATION_ERROR');
    expect(none.errors).toEqual([{ path: 'input', message: 'must be a JSON object, got no body' }]);
  });

  it('a body over 16 kB is 413', async () => {
    const body = JSON.stringify({ sku: unique(), name: 'x'.repeat(17 * 1024), availableQuantity: 1 });
    await expectProblem(await post('/items', body), 413, 'PAYLOAD_TOO_LARGE');
    // Just under the limit is parsed (and then fails validation: names are at most 255 characters).
    const under = JSON.stringify({ sku: unique(), name: 'x'.repeat(16 * 1024 - 100), availableQuantity: 1 });
    await expectProblem(await post('/items', under), 400, 'VALIDATION_ERROR');
  });

  it('a duplicate SKU is 409', async () => {
    const sku = unique('sku');
    expect((await post('/items', { sku, name: 'a', availableQuantity: 1 })).status).toBe(201);
    await expectProblem(await post('/items', { sku, name: 'b', availableQuantity: 1 }), 409, 'DUPLICATE_SKU');
  });

  it('reserving needs an Idempotency-Key header (400), and a valid one (400)', async () => {
    const item = await createItem();
    await expectProblem(await reserve(undefined, { itemId: item.id, quantity: 1 }), 400, 'IDEMPOTENCY_KEY_REQUIRED');
    await expectProblem(await reserve('k'.repeat(256), { itemId: item.id, quantity: 1 }), 400, 'VALIDATION_ERROR');
    await expectProblem(await reserve('', { itemId: item.id, quantity: 1 }), 400, 'VALIDATION_ERROR');
    await expectProblem(await reserve(unique(), { itemId: item.id, quantity: 1, idempotencyKey: 'body' }), 400, 'VALIDATION_ERROR');
    expect(await stock(item.id)).toBe(10);
  });

  it('reserves (201), replays (200 + Idempotent-Replayed) and rejects the key with another body (409)', async () => {
    const item = await createItem();
    const key = unique('order');
    const first = await reserve(key, { itemId: item.id, quantity: 2, ttlSeconds: 60 });
    expect(first.status).toBe(201);
    expect(first.headers.get('idempotent-replayed')).toBeNull();
    const reservation = (await first.json()) as Record<string, unknown>;
    expect(reservation).toEqual({
      id: expect.stringMatching(UUID),
      itemId: item.id,
      quantity: 2,
      lines: [{ itemId: item.id, quantity: 2 }],
      status: 'PENDING',
      expiresAt: expect.stringMatching(ISO),
      createdAt: expect.stringMatching(ISO),
      updatedAt: expect.stringMatching(ISO),
    });
    expect(Date.parse(reservation.expiresAt as string) - Date.parse(reservation.createdAt as string)).toBe(60_000);
    expect(first.headers.get('location')).toBe(`/reservations/${reservation.id}`);

    const replay = await reserve(key, { itemId: item.id, quantity: 2, ttlSeconds: 60 });
    expect(replay.status).toBe(200);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(await replay.json()).toEqual(reservation);

    await expectProblem(await reserve(key, { itemId: item.id, quantity: 3, ttlSeconds: 60 }), 409, 'IDEMPOTENCY_CONFLICT');
    expect(await stock(item.id)).toBe(8);

    const read = await get(`/reservations/${reservation.id}`);
    expect(read.status).toBe(200);
    expect(await read.json()).toEqual(reservation);
  });

  it('insufficient stock is 409, an unknown item 404', async () => {
    const item = await createItem(1);
    const problem = await expectProblem(await reserve(unique(), { itemId: item.id, quantity: 2 }), 409, 'INSUFFICIENT_STOCK');
    expect(problem).toMatchObject({ itemId: item.id, available: 1, requested: 2 });
    await expectProblem(await reserve(unique(), { itemId: 2_000_000_000, quantity: 1 }), 404, 'ITEM_NOT_FOUND');
  });

  it('reserves a cart (201) and replays it in another order; a short line is 409 naming every short line', async () => {
    const [a, b] = [await createItem(5), await createItem(1)];
    const key = unique('cart');
    const created = await reserve(key, { lines: [{ itemId: b.id, quantity: 1 }, { itemId: a.id, quantity: 2 }] });
    expect(created.status).toBe(201);
    const cart = (await created.json()) as Record<string, unknown>;
    expect(cart).toMatchObject({ itemId: null, quantity: 3, lines: [{ itemId: a.id, quantity: 2 }, { itemId: b.id, quantity: 1 }], status: 'PENDING' });
    const replay = await reserve(key, { lines: [{ itemId: a.id, quantity: 2 }, { itemId: b.id, quantity: 1 }] });
    expect(replay.status).toBe(200);
    expect(await replay.json()).toEqual(cart);
    const problem = await expectProblem(await reserve(unique(), { lines: [{ itemId: a.id, quantity: 4 }, { itemId: b.id, quantity: 1 }] }), 409, 'INSUFFICIENT_STOCK');
    expect(problem.lines).toEqual([
      { itemId: a.id, requested: 4, available: 3 },
      { itemId: b.id, requested: 1, available: 0 },
    ]);
    const invalid = await expectProblem(await reserve(unique(), { lines: [], itemId: a.id }), 400, 'VALIDATION_ERROR');
    expect(JSON.stringify(invalid.errors)).toMatch(/must have at least one line/);
    expect([await stock(a.id), await stock(b.id)]).toEqual([3, 0]);
  });

  it('extends a hold (200) up to the cap, past it 409 HOLD_LIMIT_EXCEEDED; writes off stock (200), past what is available 409', async () => {
    const item = await createItem(5);
    const held = (await (await reserve(unique(), { itemId: item.id, quantity: 1, ttlSeconds: 60 })).json()) as { id: string; createdAt: string };
    const extended = await post(`/reservations/${held.id}/extend`, { ttlSeconds: 600 });
    expect(extended.status).toBe(200);
    const body = (await extended.json()) as { expiresAt: string };
    expect(Date.parse(body.expiresAt) - Date.parse(held.createdAt)).toBeGreaterThanOrEqual(600_000);
    const refused = await expectProblem(await post(`/reservations/${held.id}/extend`, { ttlSeconds: 7200 }), 409, 'HOLD_LIMIT_EXCEEDED');
    expect(refused.maxExpiresAt).toBe(new Date(Date.parse(held.createdAt) + 3_600_000).toISOString());
    await expectProblem(await post(`/reservations/${held.id}/extend`, { ttlSeconds: 'long' }), 400, 'VALIDATION_ERROR');

    const written = await post(`/items/${item.id}/write-offs`, { quantity: 3, reason: 'damaged' });
    expect(written.status).toBe(200);
    expect(await written.json()).toMatchObject({ id: item.id, availableQuantity: 1 });
    const short = await expectProblem(await post(`/items/${item.id}/write-offs`, { quantity: 2, reason: 'lost' }), 409, 'INSUFFICIENT_STOCK');
    expect(short).toMatchObject({ available: 1, requested: 2 });
    await expectProblem(await post(`/items/${item.id}/write-offs`, { quantity: 1 }), 400, 'VALIDATION_ERROR');
    expect(await stock(item.id)).toBe(1);
  });

  it('confirms and cancels (200); a transition that is not allowed is 409', async () => {
    const item = await createItem(5);
    const a = (await (await reserve(unique(), { itemId: item.id, quantity: 2 })).json()) as { id: string };
    const b = (await (await reserve(unique(), { itemId: item.id, quantity: 1 })).json()) as { id: string };

    const confirmed = await post(`/reservations/${a.id}/confirm`);
    expect(confirmed.status).toBe(200);
    expect(await confirmed.json()).toMatchObject({ id: a.id, status: 'CONFIRMED', updatedAt: expect.stringMatching(ISO) });
    expect((await post(`/reservations/${a.id}/confirm`)).status).toBe(200);
    await expectProblem(await post(`/reservations/${a.id}/cancel`), 409, 'INVALID_STATE');

    const cancelled = await post(`/reservations/${b.id}/cancel`);
    expect(cancelled.status).toBe(200);
    expect(await cancelled.json()).toMatchObject({ id: b.id, status: 'CANCELLED' });
    await expectProblem(await post(`/reservations/${b.id}/confirm`), 409, 'INVALID_STATE');
    expect(await stock(item.id)).toBe(3);
  });

  it.each(['not-a-uuid', '123'])('malformed reservation id %s is 400 for GET, confirm and cancel, as a malformed item id is', async (id) => {
    await expectProblem(await get(`/reservations/${id}`), 400, 'VALIDATION_ERROR');
    await expectProblem(await post(`/reservations/${id}/confirm`), 400, 'VALIDATION_ERROR');
    await expectProblem(await post(`/reservations/${id}/cancel`), 400, 'VALIDATION_ERROR');
  });

  it('an unknown reservation id is 404 for GET, confirm and cancel', async () => {
    const id = '01a214d8-b57a-7e9c-af54-a82418ff8fb5';
    await expectProblem(await get(`/reservations/${id}`), 404, 'RESERVATION_NOT_FOUND');
    await expectProblem(await post(`/reservations/${id}/confirm`), 404, 'RESERVATION_NOT_FOUND');
    await expectProblem(await post(`/reservations/${id}/cancel`), 404, 'RESERVATION_NOT_FOUND');
  });

  it('an unknown route is a 404 problem; another method on a known path a 405 problem', async () => {
    await expectProblem(await get('/nope'), 404, 'NOT_FOUND');
    await expectProblem(await post('/items/1/explode'), 404, 'NOT_FOUND');
    const wrong = await fetch(`${api.url}/items/1`, { method: 'DELETE' });
    expect(wrong.headers.get('allow')).toBe('GET, HEAD, OPTIONS');
    await expectProblem(wrong, 405, 'METHOD_NOT_ALLOWED');
    await expectProblem(await get('/reservations'), 405, 'METHOD_NOT_ALLOWED');
    const options = await fetch(`${api.url}/reservations`, { method: 'OPTIONS' });
    expect([options.status, options.headers.get('allow')]).toEqual([204, 'POST, OPTIONS']);
  });

  it('health is 200 while the database answers', async () => {
    const res = await get('/health');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  it('health is a 503 problem when the database does not answer, and the cause is logged', async () => {
    const db = await unreachableDatabase(t);
    const errors = { error: vi.fn() };
    const down = await listen(createApp({ engine: new ReservationEngine({ db }), db, logger: errors }));
    try {
      const problem = await expectProblem(await fetch(`${down.url}/health`), 503, 'DATABASE_UNAVAILABLE');
      expect(problem.detail).toBe('The database is not answering');
      expect(errors.error).toHaveBeenCalledTimes(1);
      expect(errors.error.mock.calls[0]![1]).toMatchObject({ cause: expect.anything() });
    } finally {
      await down.close();
      await db.destroy();
    }
  });

  it('60 concurrent requests for 20 units: exactly 20 × 201 and 40 × 409, stock 0', async () => {
    const item = await createItem(20);
    const responses = await Promise.all(Array.from({ length: 60 }, () => reserve(unique(), { itemId: item.id, quantity: 1 })));
    const statuses = responses.map((r) => r.status);
    expect(statuses.filter((s) => s === 201)).toHaveLength(20);
    expect(statuses.filter((s) => s === 409)).toHaveLength(40);
    for (const r of responses.filter((r) => r.status === 409)) await expectProblem(r, 409, 'INSUFFICIENT_STOCK');
    expect(await stock(item.id)).toBe(0);
    expect(await t.count('reservations')).toBe(20);
  });

  it('logs nothing for client errors', async () => {
    await get('/items/abc');
    await post('/items', '{');
    await reserve(undefined, {});
    expect(logger.error).not.toHaveBeenCalled();
  });

  it('close() lets an in-flight request finish, refuses new connections, and leaves a given db open', async () => {
    const running = await startServer({ db: t.db, port: 0, host: '127.0.0.1', handler: () => {}, logger });
    const port = Number(new URL(running.url).port);

    // A request whose body arrives in two parts, the second only after close() was called.
    let sendRest!: () => void;
    const rest = new Promise<void>((resolve) => (sendRest = resolve));
    const sku = unique('sku');
    const parts = [`{"sku":"${sku}",`, '"name":"slow","availableQuantity":3}'];
    let part = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (part === 1) await rest;
        if (part === parts.length) return controller.close();
        controller.enqueue(new TextEncoder().encode(parts[part++]));
      },
    });
    const arrived = new Promise((resolve) => running.server.once('request', resolve));
    const pending = fetch(`${running.url}/items`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, duplex: 'half' } as RequestInit);
    await arrived;

    let closed = false;
    const closing = running.close().then(() => (closed = true));
    await expect(connect(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    await sleep(100);
    expect(closed).toBe(false);

    sendRest();
    const res = await pending;
    expect(res.status).toBe(201);
    expect(res.headers.get('connection')).toBe('close');
    expect(await res.json()).toMatchObject({ sku, availableQuantity: 3 });
    // Promptly: the connection is not kept alive until its idle timeout (5 s), however busy the machine.
    const answered = performance.now();
    await closing;
    expect(running.server.keepAliveTimeout).toBe(5000);
    expect(performance.now() - answered).toBeLessThan(4000);
    expect(await t.count('items')).toBe(1);
    expect(logger.error).not.toHaveBeenCalled();
  });

  it('startServer({ databaseUrl }) connects by URL, migrates, serves, and closes (idempotently)', async () => {
    const running = await startServer({ databaseUrl: await databaseUrl(t), port: 0, host: '127.0.0.1', handler: () => {}, logger });
    try {
      expect((await fetch(`${running.url}/health`)).status).toBe(200);
      expect((await fetch(`${running.url}/items`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"sku":"u","name":"u","availableQuantity":1}' })).status).toBe(201);
    } finally {
      await running.close();
    }
    await running.close(); // idempotent
    await expect(fetch(`${running.url}/health`)).rejects.toThrow();
  });

  // The background worker startServer runs is tested in worker.test.ts.
});

/** Opens a TCP connection; rejects with the socket error (ECONNREFUSED when nothing listens). */
function connect(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve();
    });
    socket.once('error', reject);
  });
}

/** A request without a body and without Content-Length (which fetch always sends for POST), as curl -X POST does. */
function rawRequest(url: string, requestLine: string): Promise<Response> {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(url);
    const [method, path] = requestLine.split(' ');
    const req = http.request({ host: hostname, port, method, path, headers: { connection: 'close' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve(new Response(Buffer.concat(chunks), { status: res.statusCode!, headers: res.headers as Record<string, string> })));
    });
    req.once('error', reject);
    req.end();
  });
}
