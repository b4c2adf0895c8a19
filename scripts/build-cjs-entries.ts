/**
 * The CommonJS face of the package: a `.cjs` entry beside each ES entry, and `.d.cts` twins of the
 * declarations those entries reach.
 *
 * The code stays ES modules only, and Node ^20.19 / >=22.12 lets `require()` load them (no module
 * in the graph uses top-level await): one copy of every class for `import` and `require` alike, no
 * second build. Each `.cjs` entry re-exports what `require()` of its ES entry gives and, on a Node
 * whose `require()` cannot load ES modules, throws an error saying so instead of ERR_REQUIRE_ESM's
 * advice about the caller's file.
 *
 * TypeScript under `module: node16` refuses to let a CommonJS file import an ES module's `.d.ts`;
 * the `.d.cts` twins are the same declarations with their relative imports renamed to `.cjs`, which
 * it reads as CommonJS. They describe the module namespace (named exports only; the package has
 * no default export), and twins import only twins, so a class reached from two entries is still
 * one declaration.
 *
 * `npm run build` runs this after tsc; `tsx scripts/build-cjs-entries.ts [dist]` runs it alone.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

/** The exports map's entries, as paths inside dist/ without their extension. */
export const CJS_ENTRIES = ['index', 'adapters/v86', 'adapters/file-disk', 'worker/index'];

/** A relative module specifier ending in `.js`: after `from` or `import`, inside `import(…)`, or an augmented `declare module`. */
const RELATIVE_JS = /(\bfrom\s*|\bimport\s*\(?\s*|\bdeclare module\s*)(['"])(\.\.?\/[^'"]*?)\.js\2/g;

/** The `.cjs` entry for the ES module `./<base>.js` beside it. */
function cjsEntry(base: string): string {
  return `'use strict';
// CommonJS entry of blocklayer: require() of the ES module beside it (Node ^20.19 || >=22.12).
try {
  module.exports = require('./${base}.js');
} catch (e) {
  if (e === null || typeof e !== 'object' || e.code !== 'ERR_REQUIRE_ESM') throw e;
  const error = new Error(
    'blocklayer is ES modules only: require() of it needs a Node whose require() loads ES modules, ^20.19 or >=22.12 (this is ' +
      process.version +
      '). ' +
      "Upgrade Node, or load it with import('blocklayer').",
    { cause: e },
  );
  error.code = 'ERR_REQUIRE_ESM';
  throw error;
}
`;
}

/** Writes the `.cjs` entries and the `.d.cts` twins into `dist`; returns how many twins it wrote. */
export function buildCjsEntries(dist: string): number {
  for (const entry of CJS_ENTRIES) fs.writeFileSync(path.join(dist, `${entry}.cjs`), cjsEntry(path.basename(entry)));
  const seen = new Set<string>();
  const queue = CJS_ENTRIES.map((entry) => path.join(dist, `${entry}.d.ts`));
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
  const twins = buildCjsEntries(dist);
  console.log(`${path.relative(process.cwd(), dist) || '.'}: ${CJS_ENTRIES.length} .cjs entries, ${twins} .d.cts declarations`);
}
