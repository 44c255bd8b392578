import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PAGES = ['README.md', ...readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-');
}

function anchorsOf(file: string): Set<string> {
  const text = readFileSync(file, 'utf8');
  const anchors = new Set<string>();
  let fence = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('```')) fence = !fence;
    const heading = !fence && /^#+ (.*)$/.exec(line);
    if (heading) anchors.add(slug(heading[1]!));
  }
  for (const m of text.matchAll(/<a id="([^"]+)">/g)) anchors.add(m[1]!);
  return anchors;
}

describe('the README and docs/', () => {
  for (const page of PAGES) {
    it(`${page}: every relative link points at a file (and heading) that exists`, () => {
      const text = readFileSync(path.join(ROOT, page), 'utf8').replace(/```[\s\S]*?```/g, '').replace(/`[^`\n]*`/g, '');
      const links = [...text.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!).filter((l) => !/^[a-z]+:/.test(l));
      for (const link of links) {
        const [file, anchor] = link.split('#');
        const target = file ? path.resolve(path.dirname(path.join(ROOT, page)), file) : path.join(ROOT, page);
        expect(existsSync(target), `${page} -> ${link}`).toBe(true);
        if (anchor && target.endsWith('.md')) expect(anchorsOf(target).has(anchor), `${page} -> ${link}`).toBe(true);
      }
    });
  }

  it('the README stays short: the reference lives in docs/', () => {
    expect(readFileSync(path.join(ROOT, 'README.md'), 'utf8').split('\n').length).toBeLessThan(80);
  });
});
