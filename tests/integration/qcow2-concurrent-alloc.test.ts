import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { patternBytes } from '../helpers/pattern-bytes.js';
import { assertChecksClean, convertedDifference, driveDifference, modelOfImage, openKind, requireQemuTools } from '../helpers/qcow2-judge.js';
import { type ImageKind, KINDS } from '../helpers/qcow2-kinds.js';
import { ok } from '../helpers/tools.js';

/**
 * Concurrent writes into the same unallocated cluster (different parts of it) must all land,
 * and the cluster must be allocated once: qemu-img map shows one host cluster for it and
 * qemu-img check finds no leak (a second allocation that lost the race would leak).
 */

const available = requireQemuTools('qcow2 concurrent allocation tests');

let dir: string;
const layer = new BlockLayer();
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-qcow2-alloc-'));
});
afterAll(async () => {
  await layer.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

interface MapEntry {
  start: number;
  length: number;
  data: boolean;
  offset?: number;
  depth: number;
}

/** Host offsets (per QEMU's map of the top image) of the first and last byte of a guest cluster's data. */
function hostClusters(map: MapEntry[], guest: number, clusterSize: number): Set<number> {
  const hosts = new Set<number>();
  for (const e of map) {
    const from = Math.max(guest, e.start);
    const to = Math.min(guest + clusterSize, e.start + e.length);
    if (from >= to || !e.data || e.depth !== 0 || e.offset === undefined) continue;
    hosts.add(Math.floor((e.offset + (from - e.start)) / clusterSize));
    hosts.add(Math.floor((e.offset + (to - 1 - e.start)) / clusterSize));
  }
  return hosts;
}

/** Parts of a cluster written concurrently: halves, or quarters 1 and 3 (the rest keeps the old content). */
const SPLITS: { name: string; parts: (c: number) => [number, number][] }[] = [
  { name: 'both halves', parts: (c) => [[0, c / 2], [c / 2, c / 2]] },
  { name: 'quarters 1 and 3', parts: (c) => [[0, c / 4], [c / 2, c / 4]] },
  { name: 'two unaligned pieces', parts: (c) => [[100, c / 3], [c / 2 + 7, c / 4]] },
];

const ALLOC_KINDS: ImageKind[] = [KINDS.raw, KINDS['v3-64k'], KINDS['v3-512'], KINDS['extl2-64k'], KINDS['backing-qcow2'], KINDS.snapshot];

describe.skipIf(!available)('qcow2: concurrent writes into one unallocated cluster allocate it once', () => {
  for (const kind of ALLOC_KINDS) {
    it(`${kind.name}: ${SPLITS.map((s) => s.name).join(', ')}; issued together in 6 clusters`, async () => {
      const image = await kind.make(dir, kind.name);
      const scratch = path.join(dir, `${kind.name}.converted.raw`);
      const model = await modelOfImage(kind, image, scratch);
      const c = kind.clusterSize;
      // Clusters 1, 2 (neighbours) and the last few: untouched by the kinds' own content writes
      // except the snapshot kind's, whose clusters are shared with the snapshot (COW, not fresh allocation).
      const targets = [1, 2, 5, kind.size / c - 3, kind.size / c - 2, kind.size / c - 1].map((k) => k * c);
      const writes: { offset: number; data: Buffer }[] = [];
      targets.forEach((t, i) => {
        for (const [j, [at, length]] of SPLITS[i % SPLITS.length].parts(c).entries()) writes.push({ offset: t + at, data: patternBytes(i * 16 + j + 1, length) });
      });
      const drive = await openKind(layer, kind, image);
      try {
        await Promise.all(writes.map((w) => drive.write(w.offset, w.data)));
        for (const w of writes) model.write(w.offset, w.data);
        const ours = await driveDifference(drive, model);
        if (ours !== null) throw new Error(`our reads differ from the model: ${ours}`);
      } finally {
        await drive.close();
      }
      await assertChecksClean(kind, image, { when: 'after concurrent writes into unallocated clusters' });
      const theirs = await convertedDifference(kind, image, model, scratch);
      if (theirs !== null) throw new Error(`qemu-img convert differs from the model: ${theirs}`);
      if (kind.format === 'qcow2') {
        const map = JSON.parse(await ok('qemu-img', ['map', '--output=json', '-f', 'qcow2', image])) as MapEntry[];
        for (const t of targets) expect([...hostClusters(map, t, c)], `host clusters of guest cluster at ${t}`).toHaveLength(1);
      }
    }, 60_000);
  }
});
