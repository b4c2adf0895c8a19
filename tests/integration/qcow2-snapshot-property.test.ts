import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { haveQemuTools } from '../helpers/qemu-images.js';

/**
 * Random sequences of writes, zero writes, discards, snapshot creates, deletes and applies on a
 * qcow2 image, against a model (the guest view, and a copy of it per snapshot): after every
 * step the drive reads as the model; at the end qemu-img check finds nothing (no leak either)
 * and qemu-img convert -l reads every snapshot as the model kept it.
 */

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img missing in CI');

const SIZE = 3 * 1024 * 1024; // two L2 tables with 4 KiB clusters
const RUNS = Number(process.env.QCOW2_SNAPSHOT_PROPERTY_RUNS ?? 6);

type Op =
  | { kind: 'write'; offset: number; length: number; fill: number }
  | { kind: 'zero' | 'discard'; offset: number; length: number }
  | { kind: 'create' }
  | { kind: 'delete' | 'apply'; pick: number };

const range = fc.record({ offset: fc.integer({ min: 0, max: SIZE - 1 }), length: fc.integer({ min: 1, max: 200 * 1024 }) }).map((r) => ({ offset: r.offset, length: Math.min(r.length, SIZE - r.offset) }));
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(range, fc.integer({ min: 1, max: 255 })).map(([r, fill]) => ({ kind: 'write' as const, ...r, fill })) },
  { weight: 1, arbitrary: range.map((r) => ({ kind: 'zero' as const, ...r })) },
  { weight: 1, arbitrary: range.map((r) => ({ kind: 'discard' as const, ...r })) },
  { weight: 3, arbitrary: fc.constant({ kind: 'create' as const }) },
  { weight: 2, arbitrary: fc.nat(7).map((pick) => ({ kind: 'delete' as const, pick })) },
  { weight: 2, arbitrary: fc.nat(7).map((pick) => ({ kind: 'apply' as const, pick })) },
);

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-snapshot-property-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe.skipIf(!available)('qcow2 internal snapshots against a model', () => {
  it('random write/zero/discard/create/delete/apply sequences read as the model; qemu-img check and convert -l agree', { timeout: 600_000 }, async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 4, maxLength: 14 }), async (ops) => {
        const img = path.join(dir, `p${run++}.qcow2`);
        expect(spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', img, String(SIZE)]).status).toBe(0);
        const layer = new BlockLayer();
        const model = Buffer.alloc(SIZE);
        const snaps: { id: string; name: string; data: Buffer }[] = [];
        try {
          const d = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: img } });
          const s = d.node.snapshots!;
          for (const [i, o] of ops.entries()) {
            if (o.kind === 'write') {
              await d.write(o.offset, new Uint8Array(o.length).fill(o.fill));
              model.fill(o.fill, o.offset, o.offset + o.length);
            } else if (o.kind === 'zero') {
              await d.writeZeroes(o.offset, o.length);
              model.fill(0, o.offset, o.offset + o.length);
            } else if (o.kind === 'discard') {
              // Only whole clusters are dropped; with no backing file they read as zeros.
              const a = Math.ceil(o.offset / 4096) * 4096;
              const b = Math.floor((o.offset + o.length) / 4096) * 4096;
              await d.discard(o.offset, o.length);
              if (a < b) model.fill(0, a, b);
            } else if (o.kind === 'create') {
              const made = await s.create({ name: `n${i}` });
              snaps.push({ id: made.id, name: made.name, data: Buffer.from(model) });
            } else if ((o.kind === 'delete' || o.kind === 'apply') && snaps.length > 0) {
              const target = snaps[o.pick % snaps.length]!;
              if (o.kind === 'delete') {
                await s.delete(target.id, undefined);
                snaps.splice(snaps.indexOf(target), 1);
              } else {
                await s.apply(target.id);
                target.data.copy(model);
              }
            }
            const now = Buffer.alloc(SIZE);
            await d.read(0, now);
            expect(now.equals(model), `after step ${i} (${JSON.stringify(o)})`).toBe(true);
            expect(s.list().map((x) => x.id)).toEqual(snaps.map((x) => x.id));
          }
          await d.close();
        } finally {
          await layer.close();
        }
        const r = spawnSync('qemu-img', ['check', '--output=json', img], { encoding: 'utf8' });
        const verdict = JSON.parse(r.stdout) as Record<string, number>;
        expect({ corruptions: verdict.corruptions ?? 0, leaks: verdict.leaks ?? 0, errors: verdict['check-errors'] ?? 0 }, r.stderr).toEqual({ corruptions: 0, leaks: 0, errors: 0 });
        for (const sn of snaps) {
          const out = path.join(dir, 'snap.raw');
          expect(spawnSync('qemu-img', ['convert', '-O', 'raw', '-l', `snapshot.id=${sn.id}`, img, out]).status).toBe(0);
          expect(fs.readFileSync(out).equals(sn.data), `snapshot ${sn.id}`).toBe(true);
        }
        fs.rmSync(img);
      }),
      { numRuns: RUNS },
    );
  });
});
