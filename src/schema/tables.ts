import {
  IdentifierNode,
  type Kysely,
  type KyselyPlugin,
  OperationNodeTransformer,
  type PluginTransformQueryArgs,
  type PluginTransformResultArgs,
  type QueryResult,
  type RootOperationNode,
  type SchemableIdentifierNode,
  type UnknownRow,
} from 'kysely';
import { ConfigurationError } from '../errors.js';
import type { Database } from '../types.js';

/** The prefix of every table, index and routine the library creates, unless a host chooses another. */
export const DEFAULT_TABLE_PREFIX = 'reservation_engine_';

/** The engine's tables by the names its queries use; stored as the prefix followed by this name. */
const LOGICAL_TABLES = Object.freeze(['items', 'reservations', 'idempotency_requests', 'restock_requests', 'outbox', 'reservation_lines'] as const);
export type LogicalTable = (typeof LOGICAL_TABLES)[number];

/** 1–30 characters, a letter first, then letters, digits and `_`: room for the longest name in 63 characters. */
const PREFIX = /^[a-z][a-z0-9_]{0,29}$/i;

/** @internal The physical names of everything the library creates, for one prefix. */
export interface SchemaNames {
  readonly prefix: string;
  /** A table, by its logical name. */
  table(name: LogicalTable): string;
  /** An index, constraint or routine: the prefix followed by `name`. */
  object(name: string): string;
  readonly migrationTable: string;
  readonly migrationLockTable: string;
}

/** @internal The names for `tablePrefix`, validated. */
export function schemaNames(tablePrefix: string = DEFAULT_TABLE_PREFIX): SchemaNames {
  if (typeof tablePrefix !== 'string' || !PREFIX.test(tablePrefix)) {
    throw new ConfigurationError([`tablePrefix: must be 1–30 letters, digits and underscores, starting with a letter, got ${JSON.stringify(String(tablePrefix)).slice(0, 70)}`]);
  }
  return Object.freeze({
    prefix: tablePrefix,
    table: (name: LogicalTable) => `${tablePrefix}${name}`,
    object: (name: string) => `${tablePrefix}${name}`,
    migrationTable: `${tablePrefix}migration`,
    migrationLockTable: `${tablePrefix}migration_lock`,
  });
}

/**
 * @internal
 * A Kysely plugin that stores the engine's tables under the prefix: the engine's queries name
 * `items`, `reservations`, … and reach `<prefix>items`, `<prefix>reservations`, … Only the
 * library's own Kysely instances carry it, so a host's table called `items` is never touched.
 */
export class TablePrefixPlugin implements KyselyPlugin {
  readonly #transformer: PrefixTransformer;

  constructor(readonly names: SchemaNames) {
    this.#transformer = new PrefixTransformer(names);
  }

  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    return this.#transformer.transformNode(args.node, args.queryId);
  }

  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return args.result;
  }
}

class PrefixTransformer extends OperationNodeTransformer {
  readonly #physical: ReadonlyMap<string, string>;

  constructor(names: SchemaNames) {
    super();
    this.#physical = new Map(LOGICAL_TABLES.map((name) => [name, names.table(name)]));
  }

  protected override transformSchemableIdentifier(node: SchemableIdentifierNode, queryId?: Parameters<OperationNodeTransformer['transformNode']>[1]): SchemableIdentifierNode {
    const transformed = super.transformSchemableIdentifier(node, queryId);
    const physical = transformed.schema ? undefined : this.#physical.get(transformed.identifier.name);
    return physical ? { ...transformed, identifier: IdentifierNode.create(physical) } : transformed;
  }
}

/**
 * @internal
 * The Kysely instance (or transaction) the library runs its queries on: the host's, without the
 * host's plugins (a `CamelCasePlugin` would rename the engine's columns, a `ParseJSONResultsPlugin`
 * change its values), with the table prefix.
 */
export function engineDb<D extends Kysely<any>>(db: D, names: SchemaNames): Kysely<Database> {
  return db.withoutPlugins().withPlugin(new TablePrefixPlugin(names)) as unknown as Kysely<Database>;
}
