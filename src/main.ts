#!/usr/bin/env node
import { ConfigError } from './config/config.ts';
import { loadConfig } from './config/load-config.ts';
import { startGantry } from './gantry.ts';

/** Entry point: config → services → listen; SIGINT/SIGTERM shut down cleanly. */
async function main(): Promise<void> {
  let config;
  try {
    config = await loadConfig(process.argv.slice(2), process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const gantry = await startGantry(config);
  const stop = (signal: string): void => {
    gantry.log.info({ signal }, 'shutting down');
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    gantry.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

await main();
