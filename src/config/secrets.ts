import type { Setting } from './setting.ts';

/**
 * A secret spelled one of three ways in its mapping: inline (`password`), by environment
 * variable name (`passwordEnv: NAME`) or by file (`passwordFile: PATH`, one trailing newline
 * dropped). At most one of them. Naming a variable or a file keeps the secret out of the config.
 */
export function secret<O extends Omit<Setting<string>, 'parse' | 'type' | 'aliases'>>(name: string, o: O): O & Setting<string> {
  const envKey = `${name}Env`;
  const fileKey = `${name}File`;
  return {
    ...o,
    type: `string, or \`${envKey}\` / \`${fileKey}\``,
    aliases: [envKey, fileKey],
    parse(inline, key, { problems, secrets, record }) {
      // `key` is `<where>.<name>`, or just `<name>` at the top level: messages name the form actually used.
      const where = key.length > name.length ? key.slice(0, key.length - name.length - 1) : '';
      const at = (k: string): string => (where === '' ? k : `${where}.${k}`);
      const forms = [name, envKey, fileKey].filter((k) => record[k] !== undefined);
      if (forms.length > 1) problems.push(`${where === '' ? 'config' : where}: set only one of ${forms.join(', ')}`);
      const envName = record[envKey];
      const file = record[fileKey];
      if (inline !== undefined) {
        if (typeof inline === 'string') return inline;
        problems.push(`${key}: expected a string`);
      } else if (envName !== undefined) {
        if (typeof envName !== 'string') problems.push(`${at(envKey)}: expected a variable name`);
        else if (secrets.env[envName] === undefined) problems.push(`${at(envKey)}: environment variable ${envName} is not set`);
        else return secrets.env[envName];
      } else if (file !== undefined) {
        if (typeof file !== 'string') problems.push(`${at(fileKey)}: expected a path`);
        else {
          try {
            return secrets.readFile(file).replace(/\r?\n$/, '');
          } catch (err) {
            problems.push(`${at(fileKey)}: cannot read ${file}: ${(err as Error).message}`);
          }
        }
      }
      return undefined;
    },
  };
}
