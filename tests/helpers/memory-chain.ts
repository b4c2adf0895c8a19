// A qcow2 backing chain on memory nodes, kept in a layer by node name (as blockdev-add would):
// base ← mid ← top, each image writable, for the stream and commit job tests.
import { type Qcow2CreateSettings, planQcow2 } from '../../src/drivers/qcow2/create-layout.js';
import type { BlockLayer } from '../../src/layer.js';
import type { BlockNode } from '../../src/node/node.js';

const MiB = 1 << 20;

/** A new qcow2 (64 KiB clusters) of `size` bytes on a memory node, named `name`, over `backing` (header name `backingName`). */
export async function memoryQcow2(layer: BlockLayer, name: string, size: number, backing?: BlockNode, backingName?: string, faults?: Record<string, unknown>[]): Promise<BlockNode> {
  const settings: Qcow2CreateSettings = {
    size,
    version: 3,
    clusterBits: 16,
    refcountOrder: 4,
    extendedL2: false,
    compressionType: 'zlib',
    lazyRefcounts: false,
    dataFileRaw: false,
    preallocation: 'off',
    ...(backing ? { backing: backingName ?? `${backing.name}.qcow2`, backingFormat: 'qcow2' as const } : {}),
  };
  const plan = planQcow2(settings);
  const file = await layer.openNode({ driver: 'memory', size: plan.fileLength });
  try {
    for (const w of plan.writes) await file.write(w.offset, w.data);
    // With `faults`, the image's file sits under a blkdebug node with those rules.
    const under = faults === undefined ? file : await layer.openNode({ driver: 'blkdebug', rules: faults, file });
    try {
      return await layer.addNode({ driver: 'qcow2', nodeName: name, file: under, backing: backing ?? null });
    } finally {
      if (under !== file) await under.unref();
    }
  } finally {
    await file.unref();
  }
}

/** Fills `[offset, offset+length)` of `node` with `byte`. */
export async function fill(node: BlockNode, offset: number, length: number, byte: number): Promise<void> {
  await node.write(offset, new Uint8Array(length).fill(byte));
}

/** Every byte of `node`. */
export async function readAll(node: BlockNode): Promise<Uint8Array> {
  const out = new Uint8Array(node.length);
  await node.read(0, out);
  return out;
}

/**
 * base ← mid ← top of 4 MiB: base holds 0x11 in [0, 2 MiB) and 0x44 in [3, 3.5 MiB); mid 0x22
 * in [1, 2 MiB) and zeroes over base's 0x44 in [3, 3.25 MiB); top 0x33 in [1.5, 2.5 MiB).
 */
export async function threeLayerChain(layer: BlockLayer, size = 4 * MiB): Promise<{ base: BlockNode; mid: BlockNode; top: BlockNode }> {
  const base = await memoryQcow2(layer, 'base', size);
  await fill(base, 0, 2 * MiB, 0x11);
  await fill(base, 3 * MiB, MiB / 2, 0x44);
  const mid = await memoryQcow2(layer, 'mid', size, base);
  await fill(mid, MiB, MiB, 0x22);
  await mid.writeZeroes(3 * MiB, MiB / 4);
  const top = await memoryQcow2(layer, 'top', size, mid);
  await fill(top, 1.5 * MiB, MiB, 0x33);
  return { base, mid, top };
}
