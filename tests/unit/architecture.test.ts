// The house's rules (docs/architecture.md), checked on the source itself: layers that only point
// down and no circles of imports (.dependency-cruiser.cjs states them), and no file that has grown
// into two concepts.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { cruise } from 'dependency-cruiser';
import { describe, expect, it } from 'vitest';

const root = path.join(import.meta.dirname, '../..');
const MAX_LINES = 600;

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sourceFiles(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

describe('architecture', () => {
  it('every import points down the layers, and no files import each other in a circle', async () => {
    const config = createRequire(import.meta.url)(path.join(root, '.dependency-cruiser.cjs'));
    const cwd = process.cwd();
    process.chdir(root);
    try {
      const result = await cruise(['src'], { ...config.options, validate: true, ruleSet: { forbidden: config.forbidden } });
      const output = result.output as { summary: { violations: { rule: { name: string }; from: string; to: string; cycle?: { name: string }[] }[]; totalCruised: number } };
      const violations = output.summary.violations.map((v) => `${v.rule.name}: ${v.from} → ${v.to}${v.cycle ? ` (${v.cycle.map((c) => c.name).join(' → ')})` : ''}`);
      expect(output.summary.totalCruised).toBeGreaterThan(100);
      expect(violations).toEqual([]);
    } finally {
      process.chdir(cwd);
    }
  });

  it(`no source file is longer than ${MAX_LINES} lines`, () => {
    const long = sourceFiles(path.join(root, 'src'))
      .map((f) => [path.relative(root, f), fs.readFileSync(f, 'utf8').split('\n').length] as const)
      .filter(([, n]) => n > MAX_LINES);
    expect(long).toEqual([]);
  });
});
