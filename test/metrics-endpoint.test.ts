/**
 * The example server's `GET /metrics` (issue 13): requests through the running server, the worker
 * delivering and expiring in the background, then a Prometheus scrape whose values are checked.
 */
import { expect, it } from 'vitest';
import { startServer } from '../examples/express/server.js';
import { describeEachDialect, unique } from './support/db.js';

/** Prometheus text → `name{labels}` → value, without the OpenTelemetry scope labels. */
function parse(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) continue;
    const labels = (match[2] ?? '')
      .split(/,(?=[a-z_]+=")/)
      .filter((label) => label !== '' && !label.startsWith('otel_scope_'))
      .join(',');
    samples.set(labels ? `${match[1]}{${labels}}` : match[1]!, Number(match[3]));
  }
  return samples;
}

describeEachDialect('GET /metrics of the example server', (t) => {
  it('counts requests by outcome, transitions, deliveries and the backlog after real requests', async () => {
    const delivered: string[] = [];
    const running = await startServer({
      db: t.db,
      port: 0,
      host: '127.0.0.1',
      handler: (event) => void delivered.push(event.id),
      logger: { info: () => {}, error: () => {} },
      worker: { idleIntervalMs: 20, maxIdleIntervalMs: 50 },
    });
    try {
      const post = (path: string, body: unknown, key?: string) =>
        fetch(`${running.url}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json', ...(key ? { 'Idempotency-Key': key } : {}) }, body: JSON.stringify(body) });
      const item = (await (await post('/items', { sku: unique(), name: 'scraped', availableQuantity: 5 })).json()) as { id: number };
      const key = unique();
      const first = (await (await post('/reservations', { itemId: item.id, quantity: 2 }, key)).json()) as { id: string };
      expect((await post('/reservations', { itemId: item.id, quantity: 2 }, key)).status).toBe(200);
      expect((await post('/reservations', { itemId: item.id, quantity: 9 }, unique())).status).toBe(409);
      const second = (await (await post('/reservations', { itemId: item.id, quantity: 1 }, unique())).json()) as { id: string };
      expect((await post(`/reservations/${first.id}/confirm`, {})).status).toBe(200);
      expect((await post(`/reservations/${second.id}/cancel`, {})).status).toBe(200);
      // created ×2, confirmed, cancelled: all delivered by the server's worker.
      await expect.poll(() => delivered.length).toBe(4);

      let samples = new Map<string, number>();
      await expect
        .poll(async () => {
          const response = await fetch(`${running.url}/metrics`);
          expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
          samples = parse(await response.text());
          return samples.get('reservation_engine_outbox_events_total{reservation_engine_result="delivered",reservation_engine_event_type="reservation.cancelled"}');
        })
        .toBe(1);
      expect(samples.get('reservation_engine_reservations_total{reservation_engine_outcome="created"}')).toBe(2);
      expect(samples.get('reservation_engine_reservations_total{reservation_engine_outcome="replayed"}')).toBe(1);
      expect(samples.get('reservation_engine_reservations_total{reservation_engine_outcome="insufficient_stock"}')).toBe(1);
      expect(samples.get('reservation_engine_transitions_total{reservation_engine_status="confirmed"}')).toBe(1);
      expect(samples.get('reservation_engine_transitions_total{reservation_engine_status="cancelled"}')).toBe(1);
      expect(samples.get('reservation_engine_operation_duration_count{reservation_engine_operation="reserve",reservation_engine_outcome="created"}')).toBe(2);
      expect(samples.get('reservation_engine_operation_duration_count{reservation_engine_operation="confirm",reservation_engine_outcome="ok"}')).toBe(1);
      expect(samples.get('reservation_engine_outbox_delivery_attempts_total{reservation_engine_event_type="reservation.created"}')).toBe(2);
      // The backlog gauges are read at the scrape: everything delivered, nothing overdue.
      expect(samples.get('reservation_engine_outbox_pending')).toBe(0);
      expect(samples.get('reservation_engine_outbox_dead_letters')).toBe(0);
      expect(samples.get('reservation_engine_expiry_backlog')).toBe(0);
      expect(samples.get('reservation_engine_outbox_lag')).toBe(0);
    } finally {
      await running.close();
    }
  });
});
