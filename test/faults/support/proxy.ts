/**
 * A TCP proxy between the engine and its database that loses replies on command: it forwards a
 * chosen statement to the server, swallows the server's answer and closes both sides, so the
 * client cannot know whether the statement took effect (the case a retry with the same
 * idempotency key must resolve).
 *
 * It reads just enough of the client→server stream to find statements by their SQL text:
 * - MySQL: packets of a 3-byte little-endian length and a sequence number; a command starts a
 *   new sequence (0), and COM_QUERY (0x03) carries the SQL text after its command byte;
 * - PostgreSQL: after the untyped startup message (or SSL request), messages of a type byte and a
 *   4-byte big-endian length; 'Q' (simple query) carries the SQL text, 'P' (Parse) the statement
 *   name and then the SQL text.
 */
import net from 'node:net';

export type WireProtocol = 'mysql' | 'postgres';

const COM_QUERY = 0x03;
const PG_SSL_REQUEST = 80877103;
const PG_GSSENC_REQUEST = 80877104;

/** Splits one direction of a connection into statements' SQL texts. */
interface StatementReader {
  /** Takes the next bytes; returns the SQL texts of the statements they completed. */
  push(chunk: Buffer): string[];
}

function cString(buffer: Buffer, start: number): { text: string; end: number } {
  const end = buffer.indexOf(0, start);
  return end < 0 ? { text: buffer.subarray(start).toString('utf8'), end: buffer.length } : { text: buffer.subarray(start, end).toString('utf8'), end: end + 1 };
}

function mysqlReader(): StatementReader {
  let pending = Buffer.alloc(0);
  return {
    push(chunk) {
      pending = Buffer.concat([pending, chunk]);
      const statements: string[] = [];
      while (pending.length >= 4) {
        const length = pending.readUIntLE(0, 3);
        if (pending.length < 4 + length) break;
        const sequence = pending[3];
        const payload = pending.subarray(4, 4 + length);
        if (sequence === 0 && payload[0] === COM_QUERY) statements.push(payload.subarray(1).toString('utf8'));
        pending = pending.subarray(4 + length);
      }
      return statements;
    },
  };
}

function postgresReader(): StatementReader {
  let pending = Buffer.alloc(0);
  let startup = true;
  return {
    push(chunk) {
      pending = Buffer.concat([pending, chunk]);
      const statements: string[] = [];
      for (;;) {
        if (startup) {
          if (pending.length < 8) break;
          const length = pending.readInt32BE(0);
          if (pending.length < length) break;
          const code = pending.readInt32BE(4);
          // After an SSL or GSS request the client sends its startup message, untyped too.
          if (code !== PG_SSL_REQUEST && code !== PG_GSSENC_REQUEST) startup = false;
          pending = pending.subarray(length);
          continue;
        }
        if (pending.length < 5) break;
        const length = pending.readInt32BE(1);
        if (pending.length < 1 + length) break;
        const type = String.fromCharCode(pending[0]!);
        const body = pending.subarray(5, 1 + length);
        if (type === 'Q') statements.push(cString(body, 0).text);
        if (type === 'P') statements.push(cString(body, cString(body, 0).end).text);
        pending = pending.subarray(1 + length);
      }
      return statements;
    },
  };
}

/** How long a swallowed reply may take before the proxy closes the connection anyway. */
const REPLY_TIMEOUT_MS = 5_000;

interface Armed {
  readonly pattern: RegExp;
  readonly fired: (sql: string) => void;
}

export class LostReplyProxy {
  /** Replies swallowed so far. */
  lostReplies = 0;
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  #armed: Armed | undefined;

  private constructor(
    server: net.Server,
    readonly port: number,
  ) {
    this.#server = server;
  }

  /** Listens on a free loopback port and forwards every connection to `upstream`. */
  static async start(upstream: { host: string; port: number }, protocol: WireProtocol): Promise<LostReplyProxy> {
    let proxy: LostReplyProxy | undefined;
    const server = net.createServer((client) => proxy!.#relay(client, upstream, protocol));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    proxy = new LostReplyProxy(server, (server.address() as net.AddressInfo).port);
    return proxy;
  }

  get isArmed(): boolean {
    return this.#armed !== undefined;
  }

  /**
   * The next statement, on any connection, whose SQL text matches `pattern` reaches the server,
   * but its reply does not reach the client: the proxy drops it and closes both sides. Resolves
   * with that statement's SQL once it has happened.
   */
  loseNextReply(pattern: RegExp): Promise<string> {
    if (this.#armed) throw new Error('the proxy is already waiting to lose a reply');
    return new Promise((fired) => (this.#armed = { pattern, fired }));
  }

  /** Stops losing replies: a pending {@link loseNextReply} never fires. */
  disarm(): void {
    this.#armed = undefined;
  }

  async close(): Promise<void> {
    this.disarm();
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #relay(client: net.Socket, upstream: { host: string; port: number }, protocol: WireProtocol): void {
    const server = net.connect(upstream);
    const reader = protocol === 'mysql' ? mysqlReader() : postgresReader();
    let swallowing: ((sql: string) => void) | undefined;
    let swallowedSql = '';
    let timer: NodeJS.Timeout | undefined;
    for (const socket of [client, server]) {
      this.#sockets.add(socket);
      socket.setNoDelay(true);
      socket.on('error', () => {});
      socket.on('close', () => {
        this.#sockets.delete(socket);
        clearTimeout(timer);
        // One side gone: the other goes too, as a dropped TCP connection would.
        client.destroy();
        server.destroy();
      });
    }
    const cut = () => {
      client.destroy();
      server.destroy();
      if (swallowing) {
        this.lostReplies++;
        swallowing(swallowedSql);
      }
      swallowing = undefined;
    };
    client.on('data', (chunk: Buffer) => {
      if (swallowing) return;
      server.write(chunk);
      const armed = this.#armed;
      if (!armed) {
        reader.push(chunk);
        return;
      }
      const match = reader.push(chunk).find((sql) => armed.pattern.test(sql));
      if (match === undefined) return;
      this.#armed = undefined;
      swallowing = armed.fired;
      swallowedSql = match;
      timer = setTimeout(cut, REPLY_TIMEOUT_MS);
    });
    server.on('data', (chunk: Buffer) => {
      // The first bytes of the reply: the server has done the statement. Nobody will hear of it.
      if (swallowing) cut();
      else client.write(chunk);
    });
  }
}
