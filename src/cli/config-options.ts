import { Option } from 'commander';
import { overridableSettings, type ConfigOverrides } from '../config/config.ts';
import type { ConfigSource } from '../config/load-config.ts';

/**
 * The options every command shares: `--config FILE`, and one flag per setting of the table
 * (config/schema.ts) that declares one, so a new flag is a new `flag:` there and nothing here.
 */

/** A shared option, and the setting it overrides (none for --config, which names the file). */
type ConfigOption = { option: Option; overrideKey: string | undefined };

function configOptions(): ConfigOption[] {
  const out: ConfigOption[] = [{ option: new Option('-c, --config <FILE>', 'YAML config file (env GANTRY_CONFIG)'), overrideKey: undefined }];
  for (const [overrideKey, s] of overridableSettings()) {
    if (s.flag === undefined) continue;
    const env = s.env ? ` (env ${s.env})` : '';
    // The help is written for the README (Markdown); a terminal shows it without backticks.
    out.push({ option: new Option(`--${s.flag} <${s.metavar ?? 'VALUE'}>`, `${s.help.replaceAll('`', '')}${env}`), overrideKey });
  }
  return out;
}

/** The shared config options, fresh for one command (commander keeps parse state in them). */
export function sharedConfigOptions(): Option[] {
  return configOptions().map((o) => o.option);
}

/** The file and flag overrides that a command's parsed options name. */
export function configSourceOf(opts: Readonly<Record<string, unknown>>): ConfigSource {
  const flags: Record<string, string | undefined> = {};
  let configPath: string | undefined;
  for (const { option, overrideKey } of configOptions()) {
    const v = opts[option.attributeName()];
    if (typeof v !== 'string') continue;
    if (overrideKey === undefined) configPath = v;
    else flags[overrideKey] = v;
  }
  return { configPath, flags: flags satisfies ConfigOverrides };
}
