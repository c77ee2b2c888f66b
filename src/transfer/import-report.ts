import type { ImportSummary } from './import.ts';

/** The end-of-run summary: per image its tag and digest (and whether it is pinned), then the totals. */
export function formatSummary(summaries: readonly ImportSummary[]): string {
  const lines: string[] = [];
  for (const s of summaries) {
    for (const img of s.images) {
      const repo = img.upstream !== undefined ? `${img.upstream}/${img.repository}` : img.repository;
      const name = img.tag !== undefined ? `${repo}:${img.tag}` : `${repo} (by digest only)`;
      const note = img.authored ? ' (manifest built by Gantry from a legacy docker save)' : '';
      lines.push(`imported ${name} ${img.digest}${note}${img.pinned === true ? ', pinned' : ''}`);
    }
  }
  const images = summaries.reduce((n, s) => n + s.images.length, 0);
  const tags = summaries.reduce((n, s) => n + s.images.filter((i) => i.tag !== undefined).length, 0);
  const fresh = summaries.reduce((n, s) => n + s.blobsNew, 0);
  const present = summaries.reduce((n, s) => n + s.blobsPresent, 0);
  const bytes = summaries.reduce((n, s) => n + s.bytesNew, 0);
  const manifests = summaries.reduce((n, s) => n + s.manifests, 0);
  lines.push(`${summaries.length} archive(s): ${images} image(s), ${tags} tag(s), ${manifests} manifest(s), blobs ${fresh} new / ${present} already present, ${bytes} bytes written`);
  return `${lines.join('\n')}\n`;
}
