import type { BenchResult } from './report.js';

const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A tick step of 1, 2 or 5 × 10^k giving about `n` ticks up to `max`. */
function step(max: number, n = 5): number {
  const raw = max / n;
  const p = 10 ** Math.floor(Math.log10(raw || 1));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? p * 10;
}

/**
 * An SVG of a result (made from the JSON only): achieved IOPS (or bandwidth when the limit is
 * in bytes) per drive over time, the group total, the limit as a dashed line, and the latency
 * histogram.
 */
export function plotSvg(r: BenchResult, title = 'blocklayer bench'): string {
  const W = 960;
  const H = 640;
  const m = { l: 80, r: 160, t: 50, b: 40 };
  const byBytes = Object.keys(r.limits).some((k) => k.startsWith('bps') && !k.endsWith('Length'));
  const key = byBytes ? 'bandwidth' : 'iops';
  const unit = byBytes ? 'MiB/s' : 'IOPS';
  const scale = byBytes ? 1 / 2 ** 20 : 1;
  const series = r.series.drives.map((d) => d[key].map((v) => v * scale));
  const n = Math.max(1, ...series.map((s) => s.length));
  const total = Array.from({ length: n }, (_, i) => series.reduce((a, s) => a + (s[i] ?? 0), 0));
  const limitEntry = Object.entries(r.limits).find(([k]) => (byBytes ? /^bps(Total|Read|Write)$/ : /^iops(Total|Read|Write)$/).test(k));
  const limit = limitEntry ? limitEntry[1] * scale : undefined;
  const showTotal = series.length > 1;
  const yMax = Math.max(1, ...(showTotal ? total : series.flat()), limit ?? 0) * 1.1;
  const plotH = 330;
  const plotW = W - m.l - m.r;
  const x = (i: number) => m.l + (i / n) * plotW;
  const y = (v: number) => m.t + plotH - (v / yMax) * plotH;
  const sliceS = r.series.sliceMs / 1000;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${m.l}" y="24" font-size="16" font-weight="bold">${esc(title)}</text>`);
  const jobText = `${(r.job as { rw: string }).rw}, bs ${(r.job as { bs: number }).bs}, QD ${(r.job as { iodepth: number }).iodepth}, ${r.drives.length} drive(s)${r.group ? ` in group ${r.group}` : ''}, ${r.clock} clock`;
  out.push(`<text x="${m.l}" y="40" fill="#555">${esc(jobText)}</text>`);
  // Axes and grid.
  const ys = step(yMax);
  for (let v = 0; v <= yMax; v += ys) {
    out.push(`<line x1="${m.l}" x2="${m.l + plotW}" y1="${y(v)}" y2="${y(v)}" stroke="#eee"/>`);
    out.push(`<text x="${m.l - 6}" y="${y(v) + 4}" text-anchor="end">${+v.toFixed(2)}</text>`);
  }
  const xs = step(n * sliceS, 10);
  for (let t = 0; t <= n * sliceS + 1e-9; t += xs) {
    const px = m.l + (t / (n * sliceS)) * plotW;
    out.push(`<line x1="${px}" x2="${px}" y1="${m.t + plotH}" y2="${m.t + plotH + 4}" stroke="#333"/>`);
    out.push(`<text x="${px}" y="${m.t + plotH + 18}" text-anchor="middle">${+t.toFixed(2)} s</text>`);
  }
  out.push(`<rect x="${m.l}" y="${m.t}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`);
  out.push(`<text x="18" y="${m.t + plotH / 2}" transform="rotate(-90 18 ${m.t + plotH / 2})" text-anchor="middle">achieved ${unit} per ${r.series.sliceMs} ms slice</text>`);
  const poly = (values: number[], color: string, width = 1.6) =>
    `<polyline fill="none" stroke="${color}" stroke-width="${width}" points="${values.map((v, i) => `${x(i + 0.5).toFixed(1)},${y(v).toFixed(1)}`).join(' ')}"/>`;
  const legend: [string, string, string][] = [];
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    out.push(poly(s, c));
    if (i < 8) legend.push([c, r.series.drives[i].id, '']);
  });
  if (showTotal) {
    out.push(poly(total, '#000', 2.2));
    legend.push(['#000', 'group total', '']);
  }
  if (limit !== undefined) {
    out.push(`<line x1="${m.l}" x2="${m.l + plotW}" y1="${y(limit)}" y2="${y(limit)}" stroke="#d00" stroke-width="1.5" stroke-dasharray="6 4"/>`);
    legend.push(['#d00', `limit ${limitEntry![0]} ${+limit.toFixed(2)}`, 'stroke-dasharray="6 4"']);
  }
  legend.forEach(([c, label, dash], i) => {
    const ly = m.t + 10 + i * 18;
    out.push(`<line x1="${m.l + plotW + 12}" x2="${m.l + plotW + 36}" y1="${ly}" y2="${ly}" stroke="${c}" stroke-width="2" ${dash}/>`);
    out.push(`<text x="${m.l + plotW + 42}" y="${ly + 4}">${esc(label)}</text>`);
  });
  // Latency histogram (log2 buckets of the recorded histogram).
  const hTop = m.t + plotH + 60;
  const hH = H - hTop - m.b;
  const bins = new Map<number, number>();
  for (const [lo, , count] of r.histogram) {
    const b = lo <= 0 ? 0 : Math.floor(Math.log2(lo));
    bins.set(b, (bins.get(b) ?? 0) + count);
  }
  const keys = [...bins.keys()].sort((a, b) => a - b);
  out.push(`<text x="${m.l}" y="${hTop - 8}" font-weight="bold">latency histogram (count per power-of-two bucket)</text>`);
  if (keys.length > 0) {
    const first = keys[0];
    const last = keys[keys.length - 1];
    const cols = last - first + 1;
    const cmax = Math.max(...bins.values());
    const bw = plotW / cols;
    for (let k = first; k <= last; k++) {
      const c = bins.get(k) ?? 0;
      const bh = (c / cmax) * (hH - 20);
      const bx = m.l + (k - first) * bw;
      out.push(`<rect x="${(bx + 1).toFixed(1)}" y="${(hTop + hH - 20 - bh).toFixed(1)}" width="${Math.max(1, bw - 2).toFixed(1)}" height="${bh.toFixed(1)}" fill="#4a90d9"/>`);
      if (cols <= 24 || (k - first) % Math.ceil(cols / 24) === 0) {
        const ns = 2 ** k;
        const label = ns >= 1e9 ? `${+(ns / 1e9).toPrecision(2)}s` : ns >= 1e6 ? `${+(ns / 1e6).toPrecision(2)}ms` : ns >= 1e3 ? `${+(ns / 1e3).toPrecision(2)}µs` : `${ns}ns`;
        out.push(`<text x="${(bx + bw / 2).toFixed(1)}" y="${hTop + hH - 6}" text-anchor="middle" font-size="10">${label}</text>`);
      }
    }
  }
  out.push('</svg>');
  return out.join('\n');
}
