import type { Argument, Option } from 'commander';
import type { Config } from '../config/config.ts';

/** Where a command writes: stdout carries results (verify's JSON report), stderr messages. */
export type Io = { out(text: string): void; err(text: string): void };

/** One `gantry <command>`: its row in the COMMANDS table (main.ts). */
export type CliCommand = {
  /** One line for `gantry --help`. */
  summary: string;
  /** Options besides the shared config options; built per parse (commander keeps state in them). */
  options?: () => Option[];
  /** Positional arguments, if any; run() gets their values as `options.args` (a list). */
  arguments?: () => Argument[];
  /** Runs with the validated config and the parsed options; resolves to the exit code. */
  run(config: Config, options: Readonly<Record<string, unknown>>, io: Io): Promise<number>;
};
