/**
 * The bench history: every run of `npm run bench` is written to bench/results/<time>.json
 * (reference runs are committed), and each ratio is printed next to the same ratio of the
 * latest earlier run of the same kind (quick or --full), so a regression shows at once.
 */
import fs from 'node:fs';
import path from 'node:path';

/** Ratios a result tree holds, by path (`driveOverhead.Drive(null) QD32`…), with their direction. */
export function ratiosOf(tree: unknown, prefix = '', out = new Map<string, { ratio: number; lowerIsBetter: boolean }>()) {
  if (tree === null || typeof tree !== 'object') return out;
  const o = tree as Record<string, unknown>;
  if (typeof o.ratio === 'number' && Number.isFinite(o.ratio)) {
    out.set(prefix, { ratio: o.ratio, lowerIsBetter: typeof o.unit === 'string' && o.unit.includes('lower is better') });
  }
  for (const [k, v] of Object.entries(o)) if (v !== null && typeof v === 'object') ratiosOf(v, prefix ? `${prefix} › ${k}` : k, out);
  return out;
}

/** The newest earlier result file of the same kind in `dir`, or undefined. */
export function previousRun(dir: string, full: boolean, except: string): { file: string; data: unknown } | undefined {
  if (!fs.existsSync(dir)) return undefined;
  const files = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json') && path.join(dir, f) !== except)
    .sort()
    .reverse();
  for (const f of files) {
    try {
      const data = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as { full?: unknown };
      if (data.full === full) return { file: f, data };
    } catch {
      // a broken file is not history
    }
  }
  return undefined;
}

/** Lines comparing `now` with `before`; a ratio that moved more than `threshold` the wrong way is marked. */
export function compareRuns(now: unknown, before: unknown, threshold = 0.15): string[] {
  const a = ratiosOf(before);
  const lines: string[] = [];
  for (const [key, cur] of ratiosOf(now)) {
    const prev = a.get(key);
    if (!prev) continue;
    const change = cur.ratio / prev.ratio - 1;
    const worse = cur.lowerIsBetter ? change > threshold : change < -threshold;
    const sign = change >= 0 ? '+' : '';
    lines.push(`${worse ? 'REGRESSION? ' : ''}${key}: ${prev.ratio.toFixed(3)} → ${cur.ratio.toFixed(3)} (${sign}${(change * 100).toFixed(1)} %)`);
  }
  return lines;
}
