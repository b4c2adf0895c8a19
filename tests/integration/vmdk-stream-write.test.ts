import crypto from 'node:crypto';
import fs from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { convertImage, vmdkDriver } from '../../src/index.js';
import { imageSuite } from '../helpers/image-suite.js';
import { haveQemuTools, qemuImg } from '../helpers/qemu-images.js';
import { recordingFilter } from '../helpers/recording-filter.js';

const available = haveQemuTools();
const MiB = 1024 * 1024;

const { driver: recorder, log } = recordingFilter('stream-recorder');

const suite = imageSuite('blocklayer-vmdk-stream-');
const { p, layer } = suite;

beforeAll(() => {
  layer.registerDriver(recorder);
});

/** 40 MiB (past a grain table's 32 MiB and several append flushes): random, repeating and zero MiBs, and an odd tail. */
function makeRaw(file: string): Buffer {
  const size = 40 * MiB + 3 * 512;
  const b = Buffer.alloc(size);
  for (let m = 0; m * MiB < size; m++) {
    const piece = b.subarray(m * MiB, Math.min(size, (m + 1) * MiB));
    if (m % 3 === 0) crypto.randomFillSync(piece);
    else if (m % 3 === 1) for (let i = 0; i < piece.length; i++) piece[i] = (i * 13) % 241;
  }
  fs.writeFileSync(file, b);
  return b;
}

describe.skipIf(!available)('vmdk streamOptimized writes (grains deflated in parallel, appended in windows)', () => {
  it('convertImage raw -> streamOptimized: qemu-img check is clean, compare equal, and its raw convert is byte-identical', async () => {
    const raw = makeRaw(p('in.raw'));
    await convertImage(p('in.raw'), p('out.vmdk'), { format: 'raw', outputFormat: 'vmdk', formatOptions: { subformat: 'streamOptimized' } });
    qemuImg('check', '-q', p('out.vmdk'));
    qemuImg('compare', '-q', '-f', 'vmdk', '-F', 'raw', p('out.vmdk'), p('in.raw'));
    qemuImg('convert', '-f', 'vmdk', '-O', 'raw', p('out.vmdk'), p('back.raw'));
    expect(fs.readFileSync(p('back.raw')).equals(raw)).toBe(true);
    const info = JSON.parse(qemuImg('info', '--output=json', p('out.vmdk'))) as { 'format-specific': { data: { 'create-type': string } } };
    expect(info['format-specific'].data['create-type']).toBe('streamOptimized');
    // Ends with the end-of-stream marker (a zero sector) as QEMU's close writes it.
    const out = fs.readFileSync(p('out.vmdk'));
    expect(out.subarray(out.length - 512).every((x) => x === 0)).toBe(true);
  });

  it('no grain table entry reaches the file before the grains it names are flushed; all are read back before and after close', async () => {
    const file = p('order.vmdk');
    fs.writeFileSync(file, '');
    const node = await layer.openNode({ driver: 'file', filename: file });
    const size = 40 * MiB;
    await vmdkDriver.create!.create(node, size, { subformat: 'streamOptimized' });
    await node.unref();
    const metadataEnd = fs.statSync(file).size;
    const d = await layer.openDrive({ driver: 'vmdk', file: { driver: 'stream-recorder', file: { driver: 'file', filename: file } } } as never);
    log.length = 0;
    const model = Buffer.alloc(size);
    for (let o = 0; o < size; o += MiB) {
      const piece = model.subarray(o, o + MiB);
      for (let i = 0; i < MiB; i += 4096) piece.writeUInt32LE((o + i) >>> 0, i);
      await d.write(o, piece);
    }
    // Read back while some entries are only in memory (not yet in the file).
    expect(Buffer.from(await d.read(0, size)).equals(model)).toBe(true);
    await d.close();
    let unflushed = 0;
    let tableWrites = 0;
    for (const op of log) {
      if (op.kind === 'flush') unflushed = 0;
      else if (op.offset >= metadataEnd) unflushed++;
      else if (op.offset >= 512 * 21) {
        tableWrites++;
        expect(unflushed, `grain table write at ${op.offset} after unflushed grains`).toBe(0);
      }
    }
    // Entries go in batches: far fewer table writes (and flushes) than the 640 grains.
    expect(tableWrites).toBeGreaterThan(0);
    expect(tableWrites).toBeLessThan(64);
    const d2 = await layer.openDrive({ driver: 'vmdk', readOnly: true, file: { driver: 'file', filename: file } });
    expect(Buffer.from(await d2.read(0, size)).equals(model)).toBe(true);
    await d2.close();
    qemuImg('check', '-q', file);
  });
});
