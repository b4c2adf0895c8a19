import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = path.join(import.meta.dirname, '../../src');

/**
 * Every module the given one imports, following relative imports, static and dynamic
 * (`import('./x.js')`, loaded on first use) alike (type-only ones skipped: they vanish at build). With `browser`, `x.js` resolves to its `x.browser.ts` twin when there is one,
 * as scripts/build-browser.ts does.
 */
function importGraph(entry: string, browser: boolean): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const visit = (file: string) => {
    if (graph.has(file)) return;
    const text = fs.readFileSync(file, 'utf8');
    const specs = [
      ...[...text.matchAll(/^import\s+(?!type\s)[^'"]*?from\s+'([^']+)'/gms)].map((m) => m[1]),
      ...[...text.matchAll(/\bimport\('([^']+)'\)/g)].map((m) => m[1]),
    ];
    graph.set(file, specs);
    for (const s of specs) {
      if (!s.startsWith('.')) continue;
      const twin = path.resolve(path.dirname(file), s.replace(/\.js$/, '.browser.ts'));
      visit(browser && fs.existsSync(twin) ? twin : path.resolve(path.dirname(file), s.replace(/\.js$/, '.ts')));
    }
  };
  visit(entry);
  return graph;
}

const nodeBuiltins = (graph: Map<string, string[]>) =>
  [...graph].flatMap(([file, specs]) => specs.filter((s) => s.startsWith('node:') || /^(fs|path|net|http|https|os|crypto|stream|buffer|util)$/.test(s)).map((s) => `${path.relative(SRC, file)}: ${s}`));

describe('http driver is browser-safe', () => {
  it('imports no Node built-in module in the browser build, directly or through its imports', () => {
    const graph = importGraph(path.join(SRC, 'drivers/http/index.ts'), true);
    expect(graph.size).toBeGreaterThan(3);
    expect(nodeBuiltins(graph)).toEqual([]);
  });

  it('in Node, reaches node:net and node:https only through the platform twin (the node transport)', () => {
    const nodeOnly = nodeBuiltins(importGraph(path.join(SRC, 'drivers/http/index.ts'), false));
    expect(nodeOnly.sort()).toEqual(['drivers/http/http1.ts: node:net', 'drivers/http/node-transport.ts: node:https']);
  });
});
