import { StartupError } from '../gantry.ts';
import { Command, CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { ConfigError } from '../config/config.ts';
import { loadConfig } from '../config/load-config.ts';
import type { CliCommand, Io } from './command.ts';
import { configSourceOf, sharedConfigOptions } from './config-options.ts';
import { exportCommand } from './export.ts';
import { importCommand } from './import.ts';
import { prefetchCommand } from './prefetch.ts';
import { pinsCommand } from './pins.ts';
import { serve } from './serve.ts';
import { unpinCommand } from './unpin.ts';
import { verify } from './verify.ts';

/** Every `gantry <command>`; a new subcommand is one module and one row here. */
export const COMMANDS = { serve, verify, import: importCommand, export: exportCommand, prefetch: prefetchCommand, pins: pinsCommand, unpin: unpinCommand } satisfies Record<string, CliCommand>;
export type CommandName = keyof typeof COMMANDS;

/** `gantry` and `gantry --listen ...` serve, as before there were commands. */
const DEFAULT_COMMAND: CommandName = 'serve';

/** Bad arguments and invalid configuration exit with 2, like the usage errors of most tools. */
export const EXIT_USAGE = 2;

export type Invocation = { name: CommandName; options: Readonly<Record<string, unknown>> };

/** package.json sits two levels up from both src/cli/ and dist/cli/ (the image ships it too). */
function packageVersion(): string {
  const pkg: unknown = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
  return typeof pkg === 'object' && pkg !== null && 'version' in pkg && typeof pkg.version === 'string' ? pkg.version : 'unknown';
}

function buildProgram(io: Io, chosen: (inv: Invocation) => void): Command {
  const program = new Command('gantry')
    .description('Pull-through caching mirror for OCI / Docker registries.')
    .version(packageVersion(), '-V, --version')
    .addHelpText('after', `\nWithout a command, gantry runs \`${DEFAULT_COMMAND}\`. \`gantry <command> --help\` shows a command's options.`)
    // Wide enough that commands with positional arguments don't wrap the summaries.
    .configureHelp({ helpWidth: 110 })
    .exitOverride()
    // Commands with arguments (`export [REF...]`) widen the command column: keep each summary on one line.
    .configureHelp({ helpWidth: 120 })
    .configureOutput({
      writeOut: (s) => io.out(s),
      writeErr: (s) => io.err(s),
      outputError: (s, write) => write(`gantry: ${s.replace(/^error: /, '')}`),
    });
  for (const [name, cmd] of Object.entries(COMMANDS) as Array<[CommandName, CliCommand]>) {
    const sub = program.command(name, { isDefault: name === DEFAULT_COMMAND }).description(cmd.summary);
    for (const option of [...(cmd.options?.() ?? []), ...sharedConfigOptions()]) sub.addOption(option);
    for (const argument of cmd.arguments?.() ?? []) sub.addArgument(argument);
    sub.action(() => chosen({ name, options: cmd.arguments ? { ...sub.opts(), args: sub.processedArgs.flat() } : sub.opts() }));
  }
  return program;
}

/**
 * Parse argv into the command to run and its options. Help prints and gives exit code 0; a bad
 * argument prints one line naming it and gives EXIT_USAGE.
 */
export async function parseCommandLine(argv: readonly string[], io: Io): Promise<Invocation | { exitCode: number }> {
  let invocation: Invocation | undefined;
  const program = buildProgram(io, (inv) => (invocation = inv));
  try {
    await program.parseAsync([...argv], { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) return { exitCode: err.exitCode === 0 ? 0 : EXIT_USAGE };
    throw err;
  }
  return invocation ?? { exitCode: 0 };
}

/** `gantry <command> [options]`: parse, load and validate the config, run; resolves to the exit code. */
export async function runCli(argv: readonly string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  const parsed = await parseCommandLine(argv, io);
  if ('exitCode' in parsed) return parsed.exitCode;
  let config;
  try {
    config = await loadConfig(configSourceOf(parsed.options), env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    io.err(`${err.message}\n`);
    return EXIT_USAGE;
  }
  try {
    return await COMMANDS[parsed.name].run(config, parsed.options, io);
  } catch (err) {
    if (!(err instanceof StartupError)) throw err;
    io.err(`gantry: ${err.message}\n`);
    return 1;
  }
}
