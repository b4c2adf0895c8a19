import type { BenchFigures, BenchResult } from './report.js';

const ms = (ns: number) => (ns / 1e6 >= 100 ? (ns / 1e6).toFixed(0) : (ns / 1e6).toFixed(ns / 1e6 >= 1 ? 2 : 3));
const rate = (v: number) => (v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : v >= 1e4 ? `${(v / 1e3).toFixed(1)}k` : v.toFixed(1));
const mib = (v: number) => `${(v / 2 ** 20).toFixed(2)} MiB/s`;

function line(id: string, f: BenchFigures, delay?: string): string {
  const l = f.latencyNs;
  return [
    id.padEnd(8),
    rate(f.iops).padStart(9),
    mib(f.bandwidth).padStart(14),
    String(f.ops).padStart(10),
    ms(l.min).padStart(9),
    ms(l.mean).padStart(9),
    ms(l.p50).padStart(9),
    ms(l.p90).padStart(9),
    ms(l.p99).padStart(9),
    ms(l.p999).padStart(9),
    ms(l.max).padStart(9),
    (delay ?? '').padStart(12),
  ].join(' ');
}

/** A readable fio-like table of a result (made from the JSON only). */
export function formatTable(r: BenchResult): string {
  const j = r.job as { rw: string; bs: number; iodepth: number; drives: number };
  const limits = Object.entries(r.limits)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  const head = [
    `job: rw=${j.rw} bs=${j.bs} iodepth=${j.iodepth} drives=${j.drives} ${r.clock} clock, ${r.durationS.toFixed(2)} s${limits ? `, limits ${limits}${r.group ? ` (group ${r.group})` : ''}` : ''}`,
    `${'drive'.padEnd(8)} ${'IOPS'.padStart(9)} ${'bandwidth'.padStart(14)} ${'ops'.padStart(10)} ${'min ms'.padStart(9)} ${'mean'.padStart(9)} ${'p50'.padStart(9)} ${'p90'.padStart(9)} ${'p99'.padStart(9)} ${'p99.9'.padStart(9)} ${'max'.padStart(9)} ${'delayed'.padStart(12)}`,
  ];
  const rows = r.drives.map((d) => line(d.id, d, d.throttle ? String(d.throttle.delayedRequests) : '-'));
  if (r.drives.length > 1) rows.push(line('total', r.total));
  return [...head, ...rows].join('\n');
}
