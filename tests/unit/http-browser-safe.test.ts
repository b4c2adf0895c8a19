import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = path.join(import.meta.dirname, '../../src');

/** Every module the given one imports, following relative imports (type-only ones skipped: they vanish at build). */
function importGraph(entry: string): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const visit = (file: string) => {
    if (graph.has(file)) return;
    const text = fs.readFileSync(file, 'utf8');
    const specs = [...text.matchAll(/^import\s+(?!type\s)[^'"]*?from\s+'([^']+)'/gms)].map((m) => m[1]);
    graph.set(file, specs);
    for (const s of specs) if (s.startsWith('.')) visit(path.resolve(path.dirname(file), s.replace(/\.js$/, '.ts')));
  };
  visit(entry);
  return graph;
}

describe('http driver is browser-safe', () => {
  it('imports no Node built-in module, directly or through its imports', () => {
    const graph = importGraph(path.join(SRC, 'drivers/http/index.ts'));
    expect(graph.size).toBeGreaterThan(3);
    const nodeOnly = [...graph].flatMap(([file, specs]) => specs.filter((s) => s.startsWith('node:') || /^(fs|path|net|http|https|os|crypto|stream|buffer|util)$/.test(s)).map((s) => `${path.relative(SRC, file)}: ${s}`));
    expect(nodeOnly).toEqual([]);
  });
});
