/**
 * Repository allow/deny patterns: `*` matches within one path component,
 * `**` matches across components. Deny wins; with no allow list everything
 * not denied is allowed.
 * @example compileRepoPatterns(['library/*'], ['library/evil'])('library/alpine') // true
 */
export function compileRepoPatterns(allow: readonly string[] | undefined, deny: readonly string[] | undefined): (repo: string) => boolean {
  const allowRe = allow?.map(globToRegExp);
  const denyRe = deny?.map(globToRegExp) ?? [];
  return (repo) => !denyRe.some((re) => re.test(repo)) && (allowRe === undefined || allowRe.some((re) => re.test(repo)));
}

export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i] ?? '';
    if (ch === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (ch === '*') re += '[^/]*';
    else re += ch.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}
