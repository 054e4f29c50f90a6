// One way to reach Temporal for the worker, the CLI and the tests: the standard environment
// settings (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*, TEMPORAL_PROFILE
// and the config file), so a dev server, a self-hosted cluster and Temporal Cloud need no code change.
import { Client, Connection } from '@temporalio/client';
import { loadClientConnectConfig } from '@temporalio/envconfig';
import { rekeyDataConverter } from './codec';

export function temporalSettings() {
  const config = loadClientConnectConfig();
  const namespace = config.namespace ?? 'default';
  const address = config.connectionOptions.address ?? 'localhost:7233';
  return { config, namespace, address };
}

export async function connectClient(): Promise<Client> {
  const { config, namespace, address } = temporalSettings();
  let connection: Connection;
  try {
    connection = await Connection.connect({ ...config.connectionOptions, address, connectTimeout: '5s' });
  } catch (err) {
    throw new Error(
      `cannot reach Temporal at ${address} (namespace ${namespace}): ${(err as Error).message}\n` +
        'Start the local stack with `npm run stack:up`, or set TEMPORAL_ADDRESS (and TEMPORAL_API_KEY / TLS settings) for another cluster.',
    );
  }
  return new Client({ connection, namespace, dataConverter: rekeyDataConverter() });
}
