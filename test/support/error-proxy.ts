/**
 * A TCP proxy between a client and a MariaDB or PostgreSQL server that, on command, answers a
 * statement with an error of our choosing instead of sending it to the server. It makes a
 * failure that a real server gives only in rare states (a Galera node outside the primary
 * component refusing ROLLBACK with 1047) happen on a plain server, at the statement chosen.
 *
 * It understands just enough of each protocol to find statements: MySQL packets (3-byte length,
 * sequence id; COM_QUERY = 0x03 + SQL text at sequence 0) and PostgreSQL messages after start-up
 * ('Q' simple query; 'P' Parse of the extended protocol, whose Bind/Describe/Execute are swallowed
 * up to the Sync).
 */
import net from 'node:net';

export interface InjectedError {
  /** MySQL: the error number. */
  readonly errno?: number;
  readonly sqlState: string;
  readonly message: string;
}

export interface ErrorProxy {
  readonly port: number;
  /** `url` with its host and port replaced by the proxy's. */
  url(url: string): string;
  /** The next `count` statements matching `pattern` fail with `error`, without reaching the server. */
  failNext(pattern: RegExp, error: InjectedError, count?: number): void;
  /** Statements failed so far. */
  readonly injected: string[];
  close(): Promise<void>;
}

interface Rule {
  readonly pattern: RegExp;
  readonly error: InjectedError;
  left: number;
}

export async function startErrorProxy(protocol: 'mysql' | 'postgres', target: { host: string; port: number }): Promise<ErrorProxy> {
  const rules: Rule[] = [];
  const injected: string[] = [];
  const sockets = new Set<net.Socket>();
  const take = (sqlText: string): InjectedError | undefined => {
    const rule = rules.find((r) => r.left > 0 && r.pattern.test(sqlText));
    if (!rule) return undefined;
    rule.left--;
    injected.push(sqlText);
    return rule.error;
  };

  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    sockets.add(client).add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    upstream.on('data', (chunk) => client.write(chunk));
    const filter = protocol === 'mysql' ? mysqlFilter(take) : postgresFilter(take);
    client.on('data', (chunk) => filter(chunk, (bytes) => upstream.write(bytes), (bytes) => client.write(bytes)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;

  return {
    port,
    injected,
    url(url) {
      const parsed = new URL(url);
      parsed.hostname = '127.0.0.1';
      parsed.port = String(port);
      return parsed.toString();
    },
    failNext(pattern, error, count = 1) {
      rules.push({ pattern, error, left: count });
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

type Filter = (chunk: Buffer, toServer: (bytes: Buffer) => void, toClient: (bytes: Buffer) => void) => void;

function mysqlFilter(take: (sqlText: string) => InjectedError | undefined): Filter {
  let pending = Buffer.alloc(0);
  return (chunk, toServer, toClient) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 4) {
      const length = pending.readUIntLE(0, 3);
      if (pending.length < 4 + length) break;
      const packet = pending.subarray(0, 4 + length);
      pending = pending.subarray(4 + length);
      const error = packet[3] === 0 && packet[4] === 0x03 ? take(packet.subarray(5).toString('utf8')) : undefined;
      if (!error) {
        toServer(packet);
        continue;
      }
      const message = Buffer.from(error.message, 'utf8');
      const payload = Buffer.concat([Buffer.from([0xff, (error.errno ?? 1105) & 0xff, (error.errno ?? 1105) >> 8]), Buffer.from(`#${error.sqlState}`, 'ascii'), message]);
      const header = Buffer.alloc(4);
      header.writeUIntLE(payload.length, 0, 3);
      header[3] = 1;
      toClient(Buffer.concat([header, payload]));
    }
  };
}

function postgresFilter(take: (sqlText: string) => InjectedError | undefined): Filter {
  let pending = Buffer.alloc(0);
  let startup = true;
  let swallowing: InjectedError | undefined;
  return (chunk, toServer, toClient) => {
    pending = Buffer.concat([pending, chunk]);
    for (;;) {
      if (startup) {
        // Untyped start-up messages: an SSLRequest (answered by the server) or the StartupMessage.
        if (pending.length < 8) return;
        const length = pending.readInt32BE(0);
        if (pending.length < length) return;
        const sslRequest = pending.readInt32BE(4) === 80877103;
        toServer(pending.subarray(0, length));
        pending = pending.subarray(length);
        if (!sslRequest) startup = false;
        continue;
      }
      if (pending.length < 5) return;
      const length = pending.readInt32BE(1);
      if (pending.length < 1 + length) return;
      const message = pending.subarray(0, 1 + length);
      pending = pending.subarray(1 + length);
      const type = String.fromCharCode(message[0]!);
      if (swallowing) {
        if (type === 'S') {
          toClient(postgresError(swallowing));
          swallowing = undefined;
        }
        continue;
      }
      if (type === 'Q') {
        const error = take(message.subarray(5, message.length - 1).toString('utf8'));
        if (error) {
          toClient(postgresError(error));
          continue;
        }
      } else if (type === 'P') {
        const body = message.subarray(5);
        const nameEnd = body.indexOf(0);
        const error = take(body.subarray(nameEnd + 1, body.indexOf(0, nameEnd + 1)).toString('utf8'));
        if (error) {
          swallowing = error;
          continue;
        }
      }
      toServer(message);
    }
  };
}

/** ErrorResponse, then ReadyForQuery in a failed transaction block. */
function postgresError(error: InjectedError): Buffer {
  const fields = Buffer.concat([
    Buffer.from(`SERROR\0VERROR\0C${error.sqlState}\0M${error.message}\0\0`, 'utf8'),
  ]);
  const header = Buffer.alloc(5);
  header[0] = 'E'.charCodeAt(0);
  header.writeInt32BE(4 + fields.length, 1);
  return Buffer.concat([header, fields, Buffer.from([0x5a, 0, 0, 0, 5, 0x45])]);
}
