import { startGantry } from '../gantry.ts';
import type { CliCommand } from './command.ts';

/** A second signal, or a close that hangs, must not keep a stopping process alive. */
const FORCED_EXIT_MS = 10_000;

/** `gantry serve` (the default): listen until SIGINT or SIGTERM, then shut down cleanly. */
export const serve: CliCommand = {
  summary: 'serve the mirror (the default command)',
  async run(config) {
    const gantry = await startGantry(config);
    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    gantry.log.info({ signal }, 'shutting down');
    const force = setTimeout(() => process.exit(1), FORCED_EXIT_MS);
    force.unref();
    return gantry.close().then(
      () => 0,
      () => 1,
    );
  },
};
