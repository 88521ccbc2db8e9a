/**
 * `npm run galera`: a 3-node MariaDB Galera cluster on loopback, in the foreground, for trying
 * the engine by hand. Prints the three URLs; Ctrl-C (or SIGTERM) stops every node and deletes
 * the temp dir. Needs Debian's mariadb-server, galera-4 and rsync, and root (the nodes run as
 * the `mysql` user).
 */
import { findGalera, missingGalera, startGaleraCluster } from '../test/support/galera.js';

const nodes = Number.parseInt(process.env.GALERA_NODES ?? '3', 10);

if (!findGalera()) {
  console.error(`npm run galera: ${missingGalera()}`);
  process.exit(1);
}

const cluster = await startGaleraCluster({ nodes, log: (line) => console.log(line) });
let stopping = false;
const shutdown = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  console.log(`\n${signal}: stopping the cluster…`);
  await cluster.stop();
  console.log('stopped; temp dir removed.');
  process.exit(0);
};
process.on('SIGINT', () => void shutdown('SIGINT'));
process.on('SIGTERM', () => void shutdown('SIGTERM'));

console.log(`\n${cluster.label}: ${cluster.nodes.length} nodes, data and logs in ${cluster.dir}\n`);
for (const node of cluster.nodes) console.log(`  node${node.index}  ${node.url}`);
console.log(`
Use with mysql2: createPool({ uri: '<url>', timezone: 'Z' }). Example:
  DATABASE_URL=${cluster.nodes[0]?.url} npx tsx examples/express/server.ts
Isolate node ${cluster.nodes.length} (non-primary), as root over its socket:
  mariadb -S ${cluster.dir}/node${cluster.nodes.length}/mysqld.sock -uroot -e "set global wsrep_provider_options='gmcast.isolate=1'"   (=0 to rejoin)

Ctrl-C stops every node and deletes the temp dir.`);
// Keep the process alive until a signal arrives.
setInterval(() => {}, 1 << 30);
