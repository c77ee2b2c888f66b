#!/usr/bin/env node
import { runCli } from './cli/main.ts';

/**
 * Entry point: `gantry <command>` (src/cli/). The only module with side effects at import time.
 * Runtime knobs that must be set before Node starts (UV_THREADPOOL_SIZE, ...) are in bin/gantry.
 */
const io = { out: (s: string) => void process.stdout.write(s), err: (s: string) => void process.stderr.write(s) };
process.exit(await runCli(process.argv.slice(2), process.env, io));
