import { describe, expect, it } from 'vitest';
import {
  ConfigurationError,
  DuplicateSkuError,
  ReservationError,
  expireBatch,
  NotFoundError,
  ReservationEngine,
  runOutboxBatch,
  ValidationError,
} from '../src/index.js';
import { caught, describeEachDialect, unique } from './support/db.js';

/** One readable line per problem, joined by "; ", after the kind of error. */
const MESSAGE_SHAPE = /^Invalid (input|configuration): ([\w.]+: [^;]+)(; [\w.]+: [^;]+)*$/;
/** zod's default phrasings: none may reach a caller. */
const ZOD_PHRASINGS = ['Too small', 'Too big', 'expected', 'Invalid input: expected', 'received'];

const CLEF = '𝄞'; // U+1D11E: one character, two UTF-16 code units
const FAMILY = '👩‍👩‍👧‍👦'; // one grapheme, seven code points, eleven code units

/** Strings that a client may send and every database must store exactly as sent. */
const AWKWARD: Array<[label: string, sku: string, name: string]> = [
  ['emoji and astral characters', `${CLEF}🎉${FAMILY}\u{10FFFF}`, `Family ${FAMILY} & 🏳️‍🌈 ${CLEF}`],
  ['combining marks', 'cafe\u0301-Z\u0351\u036b\u0343', 'n\u0303o\u0308\u0301 stacked'],
  ['quotes and backslashes', `O'Reilly"\\x\\\\y\\'z\\0\\n`, `'; DROP TABLE items; -- "\\"`],
  ['LIKE wildcards', '%_%\\%a_b', '100% _done_'],
  ['U+FFFD and noncharacters', 'X\uFFFD\uFFFE\uFFFF\uE000', '\uFFFD replacement'],
  ['format characters inside', 'a\u200Bb\u202Ec\uFEFFd\u2028e', 'zero\u200Dwidth'],
  ['controls inside a name (not NUL)', 'NAME-CTRL', 'line 1\nline 2\tcol\r\u0001\u007f\u0085\u009f end'],
  ['words that mean something to SQL or JS', 'NULL', 'undefined'],
  ['255 code units of mixed astral characters', '😀𝄞'.repeat(63) + 'abc', 'é€' + '😀'.repeat(126) + 'z'],
  ['255 code units ending in an astral character', 'a' + CLEF.repeat(127), CLEF.repeat(127) + 'a'],
  ['255 three-byte characters', '€'.repeat(255), '語'.repeat(255)],
  // The limit counts characters (code points), as the databases do, not UTF-16 code units.
  ['255 astral characters (510 code units)', '😀'.repeat(255), `${CLEF}${FAMILY}`.repeat(31) + '🎉'.repeat(7)],
];

/** Inputs every dialect must refuse with the same message before writing anything. */
const REFUSED: Array<[label: string, input: { sku: string; name: string }, issue: string]> = [
  ['NUL in a SKU', { sku: 'a\u0000b', name: 'n' }, 'sku: must not contain the NUL character (U+0000)'],
  ['a SKU that is only NUL', { sku: '\u0000', name: 'n' }, 'sku: must not contain the NUL character (U+0000)'],
  ['NUL in a name', { sku: 's', name: 'name\u0000' }, 'name: must not contain the NUL character (U+0000)'],
  ['a lone high surrogate in a SKU', { sku: 'a\uD800b', name: 'n' }, 'sku: must be well-formed Unicode (it has an unpaired surrogate)'],
  ['a lone low surrogate in a SKU', { sku: 'a\uDC00', name: 'n' }, 'sku: must be well-formed Unicode (it has an unpaired surrogate)'],
  ['a surrogate pair in the wrong order', { sku: '\uDD1E\uD834', name: 'n' }, 'sku: must be well-formed Unicode (it has an unpaired surrogate)'],
  ['half an astral character', { sku: `abc${CLEF.slice(0, 1)}`, name: 'n' }, 'sku: must be well-formed Unicode (it has an unpaired surrogate)'],
  ['a lone surrogate in a name', { sku: 's', name: '\uDFFFname' }, 'name: must be well-formed Unicode (it has an unpaired surrogate)'],
  ['a tab in a SKU', { sku: 'a\tb', name: 'n' }, 'sku: must not contain control characters'],
  ['a newline in a SKU', { sku: 'a\nb', name: 'n' }, 'sku: must not contain control characters'],
  ['ESC in a SKU', { sku: 'a\u001b[31mb', name: 'n' }, 'sku: must not contain control characters'],
  ['DEL in a SKU', { sku: 'a\u007fb', name: 'n' }, 'sku: must not contain control characters'],
  ['C1 control U+0080 in a SKU', { sku: 'a\u0080b', name: 'n' }, 'sku: must not contain control characters'],
  ['NEL (U+0085) in a SKU', { sku: 'a\u0085b', name: 'n' }, 'sku: must not contain control characters'],
  ['C1 control U+009F in a SKU', { sku: 'a\u009fb', name: 'n' }, 'sku: must not contain control characters'],
  ['a leading space', { sku: ' a', name: 'n' }, 'sku: must not start or end with whitespace'],
  ['a trailing space', { sku: 'a ', name: 'n' }, 'sku: must not start or end with whitespace'],
  ['only spaces', { sku: '   ', name: 'n' }, 'sku: must not start or end with whitespace'],
  ['a leading no-break space', { sku: '\u00a0a', name: 'n' }, 'sku: must not start or end with whitespace'],
  ['a trailing ideographic space', { sku: 'a\u3000', name: 'n' }, 'sku: must not start or end with whitespace'],
  ['a leading byte-order mark', { sku: '\ufeffa', name: 'n' }, 'sku: must not start or end with whitespace'],
  ['a name ending in a newline', { sku: 's', name: 'name\n' }, 'name: must not start or end with whitespace'],
  ['a name starting with a tab', { sku: 's', name: '\tname' }, 'name: must not start or end with whitespace'],
  ['256 characters', { sku: 's'.repeat(256), name: 'n' }, 'sku: must be at most 255 characters'],
  ['256 astral characters', { sku: CLEF.repeat(256), name: 'n' }, 'sku: must be at most 255 characters'],
  ['a name of 255 astral characters and one more', { sku: 's', name: '😀'.repeat(255) + 'a' }, 'name: must be at most 255 characters'],
];

describeEachDialect('hostile input', (t) => {
  const engine = () => new ReservationEngine({ db: t.db });

  it.each(AWKWARD)('stores %s exactly, and createItem returns what getItem reads', async (_label, sku, name) => {
    expect([[...sku].length, [...name].length].every((length) => length <= 255)).toBe(true);
    const created = await engine().createItem({ sku, name, availableQuantity: 3 });
    expect(created.sku).toBe(sku);
    expect(created.name).toBe(name);
    expect(await engine().getItem(created.id)).toEqual(created);
    // And the SKU is taken exactly: the same string again is a duplicate.
    const duplicate = await caught(() => engine().createItem({ sku, name: 'again', availableQuantity: 1 }));
    expect(duplicate).toBeInstanceOf(DuplicateSkuError);
    expect(duplicate.sku).toBe(sku);
    expect(await t.count('items')).toBe(1);
  });

  it.each(REFUSED)('refuses %s with the same ValidationError on every database, writing nothing', async (_label, input, issue) => {
    const error = await caught(() => engine().createItem({ ...input, availableQuantity: 1 }));
    expect(error).toBeInstanceOf(ValidationError);
    const [path, ...message] = String(issue).split(': ');
    expect(error).toMatchObject({ code: 'VALIDATION_ERROR', status: 400, issues: [{ path, message: message.join(': ') }] });
    expect(error.message).toBe(`Invalid input: ${issue}`);
    expect(await t.count('items')).toBe(0);
  });

  it('never lets a lone surrogate collide with U+FFFD: the surrogate is refused, the stored SKU stays', async () => {
    const refusedFirst = await caught(() => engine().createItem({ sku: 'PAIR-\uD800', name: 'lone', availableQuantity: 1 }));
    expect(refusedFirst).toBeInstanceOf(ValidationError);
    const stored = await engine().createItem({ sku: 'PAIR-\uFFFD', name: 'replacement', availableQuantity: 1 });
    expect(stored.sku).toBe('PAIR-\uFFFD');
    const refusedAfter = await caught(() => engine().createItem({ sku: 'PAIR-\uD800', name: 'lone', availableQuantity: 1 }));
    expect(refusedAfter).toBeInstanceOf(ValidationError);
    expect(refusedAfter).not.toBeInstanceOf(DuplicateSkuError);
    expect(refusedAfter.message).toBe('Invalid input: sku: must be well-formed Unicode (it has an unpaired surrogate)');
    expect(await t.count('items')).toBe(1);
    expect(await engine().getItem(stored.id)).toEqual(stored);
  });

  it.each([
    ['NFC and NFD', 'caf\u00e9', 'cafe\u0301'],
    ['sharp s and ss', 'stra\u00dfe', 'strasse'],
    ['accented and plain', '\u00e1', 'a'],
    ['fullwidth and ASCII', '\uff21', 'A'],
    ['dotted capital I and i', '\u0130', 'i\u0307'],
    ['a zero-width space', 'ab', 'a\u200Bb'],
    ['astral and BMP look-alikes', '\u{1D400}', 'A'],
  ])('compares SKUs code point for code point: %s are two items', async (_label, first, second) => {
    const a = await engine().createItem({ sku: first, name: 'first', availableQuantity: 1 });
    const b = await engine().createItem({ sku: second, name: 'second', availableQuantity: 1 });
    expect([a.sku, b.sku]).toEqual([first, second]);
    expect(await t.count('items')).toBe(2);
  });

  it('refuses hostile idempotency keys on reserve and restock, writing nothing', async () => {
    const item = await engine().createItem({ sku: unique(), name: 'x', availableQuantity: 5 });
    const issue = 'idempotencyKey: must be printable ASCII characters without leading or trailing spaces';
    for (const key of ['k\u0000', 'k\uD800', 'ключ', 'k\tk', 'k\u007f', ' k', 'k ', `k${CLEF}`]) {
      const reserveError = await caught(() => engine().reserve({ itemId: item.id, quantity: 1, idempotencyKey: key }));
      expect(reserveError).toBeInstanceOf(ValidationError);
      expect(reserveError.message).toBe(`Invalid input: ${issue}`);
      const restockError = await caught(() => engine().restock({ itemId: item.id, quantity: 1, idempotencyKey: key }));
      expect(restockError).toBeInstanceOf(ValidationError);
      expect(restockError.message).toBe(`Invalid input: ${issue}`);
    }
    expect(await t.count('reservations')).toBe(0);
    expect(await t.count('idempotency_requests')).toBe(0);
    expect(await t.count('restock_requests')).toBe(0);
    expect(await engine().getItem(item.id)).toMatchObject({ availableQuantity: 5, heldQuantity: 0 });
  });

  describe('reservation ids', () => {
    async function pending(quantity = 2) {
      const item = await engine().createItem({ sku: unique(), name: 'x', availableQuantity: 10 });
      const { reservation } = await engine().reserve({ itemId: item.id, quantity, idempotencyKey: unique() });
      expect(reservation.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      return { item, reservation };
    }
    const mixedCase = (id: string) => [...id].map((c, i) => (i % 2 ? c.toUpperCase() : c)).join('');

    it('finds a reservation by its id in any letter case and answers with the lower-case id', async () => {
      const { reservation } = await pending();
      expect(await engine().getReservation(reservation.id.toUpperCase())).toEqual(reservation);
      expect(await engine().getReservation(mixedCase(reservation.id))).toEqual(reservation);
    });

    it('confirms by an upper-case id, and a repeat in another case returns it unchanged', async () => {
      const { item, reservation } = await pending(2);
      const confirmed = await engine().confirm(reservation.id.toUpperCase());
      expect(confirmed).toMatchObject({ id: reservation.id, status: 'CONFIRMED' });
      expect(await engine().confirm(mixedCase(reservation.id))).toEqual(confirmed);
      expect(await engine().getItem(item.id)).toMatchObject({ availableQuantity: 8, heldQuantity: 0 });
      expect(await t.count('outbox', (q) => q.where('type', '=', 'reservation.confirmed'))).toBe(1);
    });

    it('cancels by an upper-case id and returns the stock once', async () => {
      const { item, reservation } = await pending(3);
      const cancelled = await engine().cancel(reservation.id.toUpperCase());
      expect(cancelled).toMatchObject({ id: reservation.id, status: 'CANCELLED' });
      expect(await engine().cancel(reservation.id)).toEqual(cancelled);
      expect(await engine().getItem(item.id)).toMatchObject({ availableQuantity: 10, heldQuantity: 0 });
      expect(await t.count('outbox', (q) => q.where('type', '=', 'reservation.cancelled'))).toBe(1);
    });

    it('refuses other spellings of a UUID (braces, no hyphens, padding, NUL, urn:) with the same ValidationError on every database', async () => {
      const { item, reservation } = await pending(2);
      const spellings = [
        `{${reservation.id}}`,
        reservation.id.replaceAll('-', ''),
        ` ${reservation.id}`,
        `${reservation.id}\n`,
        `${reservation.id}\u0000`,
        `urn:uuid:${reservation.id}`,
        reservation.id.replace(/^(.{8})-(.{4})/, '$1$2-'),
        `${reservation.id.slice(0, -1)}\uD800`,
      ];
      for (const id of spellings) {
        for (const action of ['getReservation', 'confirm', 'cancel'] as const) {
          const error = await caught(() => engine()[action](id));
          expect(error).toBeInstanceOf(ValidationError);
          expect(error).toMatchObject({ code: 'VALIDATION_ERROR', status: 400 });
        }
      }
      expect(await engine().getReservation(reservation.id)).toEqual(reservation);
      expect(await engine().getItem(item.id)).toMatchObject({ availableQuantity: 8, heldQuantity: 2 });
      expect(await t.count('outbox')).toBe(1);
    });
  });

  // Every message a caller or host can get for bad input: the same readable style, never zod's.
  const cases: Array<[label: string, call: (engine: ReservationEngine) => Promise<unknown>, kind: 'input' | 'configuration', message: string]> = [
    ['getItem(1.5)', (e) => e.getItem(1.5), 'input', 'itemId: must be an integer'],
    ["getItem('1')", (e) => e.getItem('1' as never), 'input', 'itemId: must be a number, got a string'],
    ['getItem(NaN)', (e) => e.getItem(Number.NaN), 'input', 'itemId: must be a finite number, got NaN'],
    ['getItem(0)', (e) => e.getItem(0), 'input', 'itemId: must be positive'],
    ['getItem(2 ** 31)', (e) => e.getItem(2 ** 31), 'input', 'itemId: must be at most 2,147,483,647'],
    ['getItem()', (e) => e.getItem(undefined as never), 'input', 'itemId: is required'],
    ['getItem(null)', (e) => e.getItem(null as never), 'input', 'itemId: must be a number, got null'],
    ['createItem(null)', (e) => e.createItem(null as never), 'input', 'input: must be an object, got null'],
    ['createItem([])', (e) => e.createItem([] as never), 'input', 'input: must be an object, got an array'],
    ["createItem('x')", (e) => e.createItem('x' as never), 'input', 'input: must be an object, got a string'],
    [
      'createItem with several problems',
      (e) => e.createItem({ sku: '', name: ' n', availableQuantity: Infinity } as never),
      'input',
      'sku: must not be empty; name: must not start or end with whitespace; availableQuantity: must be a finite number, got Infinity',
    ],
    ['createItem with a number for a SKU', (e) => e.createItem({ sku: 5, name: 'n', availableQuantity: 1 } as never), 'input', 'sku: must be a string, got a number'],
    ['createItem with an object for a name', (e) => e.createItem({ sku: 's', name: {}, availableQuantity: 1 } as never), 'input', 'name: must be a string, got an object'],
    ['createItem with a bigint stock', (e) => e.createItem({ sku: 's', name: 'n', availableQuantity: 1n } as never), 'input', 'availableQuantity: must be a number, got a bigint'],
    [
      'createItem with a JSON __proto__ key',
      (e) => e.createItem(JSON.parse('{"sku":"s","name":"n","availableQuantity":1,"__proto__":{"x":1}}')),
      'input',
      'input: unknown field "__proto__"',
    ],
    ['restock with quantity -Infinity', (e) => e.restock({ itemId: 1, quantity: -Infinity }), 'input', 'quantity: must be a finite number, got -Infinity'],
    ['restock with a Date id', (e) => e.restock({ itemId: new Date() as never, quantity: 1 }), 'input', 'itemId: must be a number, got a Date'],
    ['restock over the maximum', (e) => e.restock({ itemId: 1, quantity: 1_000_001 }), 'input', 'quantity: must be at most 1,000,000'],
    ['reserve with quantity Infinity', (e) => e.reserve({ itemId: 1, quantity: Infinity, idempotencyKey: 'k' }), 'input', 'quantity: must be a finite number, got Infinity'],
    ['reserve with a string ttl', (e) => e.reserve({ itemId: 1, quantity: 1, idempotencyKey: 'k', ttlSeconds: '60' as never }), 'input', 'ttlSeconds: must be a number, got a string'],
    ['reserve with a 31-day ttl', (e) => e.reserve({ itemId: 1, quantity: 1, idempotencyKey: 'k', ttlSeconds: 31 * 86_400 }), 'input', 'ttlSeconds: must be at most 2,592,000'],
    ['reserve with a number for a key', (e) => e.reserve({ itemId: 1, quantity: 1, idempotencyKey: 42 as never }), 'input', 'idempotencyKey: must be a string, got a number'],
    ['reserve without a key', (e) => e.reserve({ itemId: 1, quantity: 1 } as never), 'input', 'idempotencyKey: is required'],
    ['reserve with a 256-character key', (e) => e.reserve({ itemId: 1, quantity: 1, idempotencyKey: 'k'.repeat(256) }), 'input', 'idempotencyKey: must be at most 255 characters'],
    ['reserve with an unknown field', (e) => e.reserve({ itemId: 1, quantity: 1, idempotencyKey: 'k', price: 1 } as never), 'input', 'input: unknown field "price"'],
    ['runOutboxBatch({ maxAttempts: 0 })', () => runOutboxBatch({ db: t.db, handler: async () => {}, maxAttempts: 0 }), 'configuration', 'maxAttempts: must be positive'],
    ['runOutboxBatch({ maxAttempts: 1.5 })', () => runOutboxBatch({ db: t.db, handler: async () => {}, maxAttempts: 1.5 }), 'configuration', 'maxAttempts: must be an integer'],
    ["runOutboxBatch({ leaseMs: 'x' })", () => runOutboxBatch({ db: t.db, handler: async () => {}, leaseMs: 'x' as never }), 'configuration', 'leaseMs: must be a number, got a string'],
    [
      'runOutboxBatch with handlerTimeoutMs above half of leaseMs',
      () => runOutboxBatch({ db: t.db, handler: async () => {}, leaseMs: 1000, handlerTimeoutMs: 501 }),
      'configuration',
      'handlerTimeoutMs: must be at most half of leaseMs',
    ],
    [
      'runOutboxBatch with handlerTimeoutMs above the default leaseMs',
      () => runOutboxBatch({ db: t.db, handler: async () => {}, handlerTimeoutMs: 60_000 }),
      'configuration',
      'handlerTimeoutMs: must be at most half of leaseMs',
    ],
    ['runOutboxBatch without a handler', () => runOutboxBatch({ db: t.db } as never), 'configuration', 'handler: must be a function (or pass batchHandler)'],
    ['runOutboxBatch(null)', () => runOutboxBatch(null as never), 'configuration', 'options: must be an object, got null'],
    ['runOutboxBatch with an invalid now', () => runOutboxBatch({ db: t.db, handler: async () => {}, now: new Date('nope') }), 'configuration', 'now: must be a valid Date'],
    [
      'runOutboxBatch with maxDelayMs < baseDelayMs',
      () => runOutboxBatch({ db: t.db, handler: async () => {}, baseDelayMs: 10, maxDelayMs: 5 }),
      'configuration',
      'maxDelayMs: must not be less than baseDelayMs',
    ],
    ['expireBatch({ limit: 0 })', () => expireBatch({ db: t.db, limit: 0 }), 'configuration', 'limit: must be positive'],
    ['expireBatch({ limit: 10_001 })', () => expireBatch({ db: t.db, limit: 10_001 }), 'configuration', 'limit: must be at most 10,000'],
    ["expireBatch({ now: '2026' })", () => expireBatch({ db: t.db, now: '2026' as never }), 'configuration', 'now: must be a Date, got a string'],
    ['expireBatch with an unknown option', () => expireBatch({ db: t.db, dryRun: true } as never), 'configuration', 'options: unknown field "dryRun"'],
    ['expireBatch without a Kysely', () => expireBatch({ db: {} as never }), 'configuration', 'db: must be a Kysely instance'],
    ['new ReservationEngine({ defaultTtlSeconds: 0 })', async () => new ReservationEngine({ db: t.db, defaultTtlSeconds: 0 }), 'configuration', 'defaultTtlSeconds: must be positive'],
    ['new ReservationEngine({ defaultTtlSeconds: 1.5 })', async () => new ReservationEngine({ db: t.db, defaultTtlSeconds: 1.5 }), 'configuration', 'defaultTtlSeconds: must be an integer'],
    ['new ReservationEngine({ clock: 5 })', async () => new ReservationEngine({ db: t.db, clock: 5 as never }), 'configuration', 'clock: must be a function returning a Date'],
    ['new ReservationEngine()', async () => new ReservationEngine(undefined as never), 'configuration', 'options: must be an object, got undefined'],
  ];

  it.each(cases)('%s: one readable message, in the library style, never zod text', async (_label, call, kind, issues) => {
    const error = await caught(() => call(engine()));
    expect(error).toBeInstanceOf(kind === 'input' ? ValidationError : ConfigurationError);
    expect(error).toMatchObject(kind === 'input' ? { code: 'VALIDATION_ERROR', status: 400 } : { code: 'INVALID_CONFIGURATION', status: 500 });
    expect(error.message).toBe(`Invalid ${kind}: ${issues}`);
    expect(error.message).toMatch(MESSAGE_SHAPE);
    for (const phrase of ZOD_PHRASINGS) expect(error.message).not.toContain(phrase);
    expect(error.issues.map((issue: { path: string; message: string }) => `${issue.path}: ${issue.message}`)).toEqual(issues.split('; '));
  });

  it.each([
    ['a string', () => '2026-01-01T00:00:00Z'],
    ['null', () => null],
    ['an invalid Date', () => new Date('nope')],
    ['a timestamp number', () => Date.now()],
  ])('a clock returning %s is a ConfigurationError (500) on every call that writes, and nothing is written', async (_label, clock) => {
    const item = await engine().createItem({ sku: unique(), name: 'x', availableQuantity: 5 });
    const { reservation } = await engine().reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique() });
    const broken = new ReservationEngine({ db: t.db, clock: clock as never });
    const calls = [
      () => broken.createItem({ sku: unique(), name: 'y', availableQuantity: 1 }),
      () => broken.restock({ itemId: item.id, quantity: 1, idempotencyKey: unique() }),
      () => broken.reserve({ itemId: item.id, quantity: 1, idempotencyKey: unique() }),
      () => broken.confirm(reservation.id),
      () => broken.cancel(reservation.id),
    ];
    for (const call of calls) {
      const error = await caught(call);
      expect(error).toBeInstanceOf(ConfigurationError);
      expect(error).toMatchObject({ code: 'INVALID_CONFIGURATION', status: 500 });
      expect(error.message).toMatch(/^Invalid configuration: clock: must return a valid Date/);
    }
    expect(await t.count('items')).toBe(1);
    expect(await t.count('reservations')).toBe(1);
    expect(await t.count('restock_requests')).toBe(0);
    expect(await t.count('outbox')).toBe(1);
    expect(await engine().getItem(item.id)).toMatchObject({ availableQuantity: 4, heldQuantity: 1 });
    expect(await engine().getReservation(reservation.id)).toEqual(reservation);
  });

  it.each([
    ['year 10000', new Date('+010000-01-01T00:00:00.000Z')],
    ['year 0', new Date('0000-01-01T00:00:00.000Z')],
    ['the last valid Date', new Date(8.64e15)],
  ])('a clock at %s (a valid Date no database column holds) is a ConfigurationError on every database, and nothing is written', async (_label, at) => {
    const broken = new ReservationEngine({ db: t.db, clock: () => at });
    const error = await caught(() => broken.createItem({ sku: unique(), name: 'x', availableQuantity: 1 }));
    expect(error).toBeInstanceOf(ConfigurationError);
    expect(error).toMatchObject({ code: 'INVALID_CONFIGURATION', status: 500 });
    expect(error.message).toMatch(/^Invalid configuration: clock: /);
    expect(await t.count('items')).toBe(0);
  });

  // mysql2 escapes values on the client with backslashes; under NO_BACKSLASH_ESCAPES the server
  // reads a backslash literally, so the quote that follows it ends the string literal.
  if (t.name === 'mysql') it("stores a SKU exactly or refuses it under a host's sql_mode NO_BACKSLASH_ESCAPES, and never runs it as SQL", async () => {
    const e = new ReservationEngine({ db: t.connect(2, { sqlMode: 'STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES' }) });
    // The second would insert an item named 'pwned' (0x70776e6564) with 7 units if it reached the SQL.
    const skus = ['a\\b', "x', 0x70776e6564, 7, now(3), now(3))#"];
    for (const sku of skus) {
      const outcome = await e.createItem({ sku, name: 'n', availableQuantity: 1 }).then(
        (item) => item.sku,
        (error: unknown) => error,
      );
      if (typeof outcome === 'string') expect(outcome).toBe(sku);
      else expect(outcome).toBeInstanceOf(ReservationError);
    }
    const rows = await t.db.selectFrom('items').select(['sku', 'name', 'available_quantity']).execute();
    for (const row of rows) {
      expect(row).toMatchObject({ name: 'n', available_quantity: 1 });
      expect(skus).toContain(row.sku);
    }
  });
});
