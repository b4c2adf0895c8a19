/**
 * Writes `.d.cts` twins of the declarations the package entries reach, for CommonJS consumers.
 *
 * The package is ESM only; Node ≥ 20.19 lets CommonJS `require()` it (no module in its graph uses
 * top-level await). TypeScript under `module: node16` still refuses to let a CommonJS file import
 * an ES module's `.d.ts`, so the `require` condition of the exports map points at these twins: the
 * same declarations with their relative imports renamed to `.cjs`, which TypeScript reads as
 * CommonJS. They describe what `require()` returns (the module namespace: named exports only; the
 * package has no default export), and every twin imports only twins, so a class reached from two
 * entries is still one declaration.
 *
 * `npm run build` runs this after tsc; `tsx scripts/build-cjs-types.ts [dist]` runs it alone.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

/** The declarations behind the exports map's entries (paths inside dist/). */
export const CJS_TYPE_ENTRIES = ['index.d.ts', 'adapters/v86.d.ts', 'adapters/file-disk.d.ts'];

/** A relative module specifier ending in `.js`: after `from` or `import`, inside `import(…)`, or an augmented `declare module`. */
const RELATIVE_JS = /(\bfrom\s*|\bimport\s*\(?\s*|\bdeclare module\s*)(['"])(\.\.?\/[^'"]*?)\.js\2/g;

/** Writes `x.d.cts` beside every `x.d.ts` reachable from the entries; returns how many it wrote. */
export function buildCjsTypes(dist: string): number {
  const seen = new Set<string>();
  const queue = CJS_TYPE_ENTRIES.map((entry) => path.join(dist, entry));
  while (queue.length > 0) {
    const file = queue.pop() as string;
    if (seen.has(file)) continue;
    seen.add(file);
    const text = fs.readFileSync(file, 'utf8');
    const twin = text.replace(RELATIVE_JS, (_match, lead: string, quote: string, stem: string) => {
      queue.push(path.resolve(path.dirname(file), `${stem}.d.ts`));
      return `${lead}${quote}${stem}.cjs${quote}`;
    });
    fs.writeFileSync(file.replace(/\.d\.ts$/, '.d.cts'), twin);
  }
  return seen.size;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const dist = path.resolve(process.argv[2] ?? 'dist');
  console.log(`${path.relative(process.cwd(), dist) || '.'}: ${buildCjsTypes(dist)} .d.cts declarations for CommonJS consumers`);
}
