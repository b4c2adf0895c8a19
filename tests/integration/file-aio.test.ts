import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sharedUring } from '../../src/drivers/file/uring.js';
import { BlockLayer } from '../../src/index.js';
import { patternBytes } from '../helpers/pattern-bytes.js';

// io_uring can be refused by the kernel (sysctl kernel.io_uring_disabled, a container's
// seccomp profile): then 'io_uring' must fall back to threads, and these tests check that.
const ring = sharedUring();
const haveUring = typeof ring !== 'string';
if (!haveUring) console.log(`io_uring unavailable here, testing the fallback: ${ring}`);

const KiB = 1024;
const MiB = 1024 * KiB;
let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-aio-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("file driver, aio: 'io_uring'", () => {
  it('reports the engine in use: io_uring where the kernel allows it, else threads after a warning', async () => {
    const file = path.join(dir, 'a.img');
    fs.writeFileSync(file, patternBytes(1, 64 * KiB));
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'file', filename: file, aio: 'io_uring' });
    expect(d.node.info()).toMatchObject({ filename: file, aio: haveUring ? 'io_uring' : 'threads' });
    const t = await layer.openDrive({ driver: 'file', filename: file, aio: 'threads', readOnly: true, locking: 'off' });
    expect(t.node.info()).toMatchObject({ aio: 'threads' });
    await t.close();
    await d.close();
  });

  it('keeps data intact under 1000 concurrent random reads and writes (more than the ring holds), as the threads engine sees it', async () => {
    const size = 8 * MiB;
    const file = path.join(dir, 'b.img');
    const model = patternBytes(2, size);
    fs.writeFileSync(file, model);
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'file', filename: file, aio: 'io_uring' });
    const ops: Promise<unknown>[] = [];
    const reads: [number, Uint8Array, Uint8Array][] = [];
    let x = 12345;
    const next = () => {
      x = (x * 1103515245 + 12345) >>> 0;
      return x;
    };
    // Writes go to disjoint 4 KiB blocks (even ones), reads to odd ones: concurrency cannot
    // make the expected content ambiguous.
    for (let i = 0; i < 1000; i++) {
      const block = next() % (size / (4 * KiB) / 2);
      const length = 1 + (next() % (4 * KiB));
      if (i % 3 === 0) {
        const offset = block * 2 * 4 * KiB;
        const data = patternBytes(i + 7, length);
        model.set(data, offset);
        ops.push(d.write(offset, data));
      } else {
        const offset = (block * 2 + 1) * 4 * KiB + (next() % 128);
        const buffer = new Uint8Array(length);
        reads.push([offset, buffer, model.slice(offset, offset + length)]);
        ops.push(d.read(offset, buffer));
      }
    }
    await Promise.all(ops);
    for (const [offset, got, want] of reads) {
      if (Buffer.compare(got, want) !== 0) throw new Error(`read at ${offset}+${got.length} returned wrong data`);
    }
    await d.flush();
    await d.close();
    expect(Buffer.compare(fs.readFileSync(file), model)).toBe(0);
    const t = await layer.openDrive({ driver: 'file', filename: file, aio: 'threads', readOnly: true });
    const whole = new Uint8Array(size);
    await t.read(0, whole);
    expect(Buffer.compare(whole, model)).toBe(0);
    await t.close();
  });

  it('reads into and writes from views at an offset inside larger buffers (pooled Buffers, subarrays)', async () => {
    const file = path.join(dir, 'v.img');
    fs.writeFileSync(file, new Uint8Array(64 * KiB));
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'file', filename: file, aio: 'io_uring' });
    const backing = patternBytes(9, 16 * KiB);
    await d.write(4 * KiB, backing.subarray(1000, 1000 + 3 * KiB));
    await d.write(20 * KiB, Buffer.from('hello, pooled buffer'));
    const big = new Uint8Array(10 * KiB).fill(0xee);
    await d.read(4 * KiB, big.subarray(777, 777 + 3 * KiB));
    expect(Buffer.compare(big.subarray(777, 777 + 3 * KiB), backing.subarray(1000, 1000 + 3 * KiB))).toBe(0);
    expect(big[776]).toBe(0xee);
    expect(big[777 + 3 * KiB]).toBe(0xee);
    await d.close();
    expect(fs.readFileSync(file).subarray(20 * KiB, 20 * KiB + 20).toString()).toBe('hello, pooled buffer');
  });

  it('lets the event loop run while a reader keeps the ring busy with page-cache hits (a timer fires while it reads)', async () => {
    const file = path.join(dir, 'busy.img');
    fs.writeFileSync(file, patternBytes(7, 4 * MiB));
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'file', filename: file, aio: 'io_uring' });
    fs.readFileSync(file); // in the page cache: reads complete inside the submit
    // 32 readers stop when the timer fires, or after MAX reads if it never gets a turn.
    const MAX = 200_000;
    let reads = 0;
    let fired = false;
    const timer = setTimeout(() => {
      fired = true;
    }, 5);
    await Promise.all(
      Array.from({ length: 32 }, async (_, k) => {
        const b = new Uint8Array(4096);
        let i = k;
        while (!fired && reads < MAX) {
          await d.read(((i * 7919) % 1024) * 4096, b);
          i += 32;
          reads++;
        }
      }),
    );
    clearTimeout(timer);
    expect(fired).toBe(true);
    expect(reads).toBeLessThan(MAX);
    await layer.close();
  });

  it('reads zeros past a shrunken end (a short read, then EOF)', async () => {
    const file = path.join(dir, 'c.img');
    fs.writeFileSync(file, patternBytes(3, 4 * MiB));
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'file', filename: file, aio: 'io_uring', locking: 'off' });
    fs.truncateSync(file, 1 * MiB + 100);
    const buffer = new Uint8Array(2 * MiB).fill(0xee);
    await d.read(0, buffer);
    expect(Buffer.compare(buffer.subarray(0, MiB + 100), patternBytes(3, 4 * MiB).subarray(0, MiB + 100))).toBe(0);
    expect(buffer.subarray(MiB + 100).every((b) => b === 0)).toBe(true);
    await d.close();
  });

  it('refuses an engine it does not have, naming the option', async () => {
    const file = path.join(dir, 'd.img');
    fs.writeFileSync(file, new Uint8Array(4096));
    const layer = new BlockLayer();
    await expect(layer.openDrive({ driver: 'file', filename: file, aio: 'native' } as never)).rejects.toMatchObject({
      code: 'EINVAL',
      message: expect.stringContaining('aio'),
    });
  });

  it('falls back to threads with one BLOCKLAYER_AIO_FALLBACK warning when io_uring cannot be loaded', () => {
    const file = path.join(dir, 'f.img');
    fs.writeFileSync(file, patternBytes(5, 64 * KiB));
    // The child cannot load koffi (as on a platform without it): io_uring is unavailable there.
    const noKoffi = path.join(dir, 'no-koffi.cjs');
    fs.writeFileSync(
      noKoffi,
      `const M = require('node:module'); const load = M._load;
       M._load = function (req, ...rest) { if (req === 'koffi') throw new Error('koffi hidden by the test'); return load.call(this, req, ...rest); };`,
    );
    const script = `
      import { BlockLayer } from ${JSON.stringify(path.resolve('src/index.ts'))};
      const warnings = [];
      process.on('warning', (w) => warnings.push(w.code + ': ' + w.message));
      const layer = new BlockLayer();
      const a = await layer.openDrive({ driver: 'file', filename: ${JSON.stringify(file)}, aio: 'io_uring', readOnly: true });
      const b = await layer.openDrive({ driver: 'file', filename: ${JSON.stringify(file)}, aio: 'io_uring', readOnly: true });
      const buf = new Uint8Array(4);
      await b.read(100, buf);
      await new Promise((r) => setImmediate(r));
      console.log(JSON.stringify({ engines: [a.node.info().aio, b.node.info().aio], bytes: [...buf], warnings }));
      await layer.close();
    `;
    const scriptFile = path.join(dir, 'fallback.mts');
    fs.writeFileSync(scriptFile, script);
    const out = execFileSync(process.execPath, ['--require', noKoffi, '--import', 'tsx', scriptFile], { timeout: 20_000, encoding: 'utf8' });
    const got = JSON.parse(out.trim().split('\n').pop() as string);
    expect(got.engines).toEqual(['threads', 'threads']);
    expect(got.bytes).toEqual([...patternBytes(5, 64 * KiB).subarray(100, 104)]);
    expect(got.warnings).toHaveLength(1);
    expect(got.warnings[0]).toMatch(/^BLOCKLAYER_AIO_FALLBACK: .*io_uring.*threads.*koffi hidden by the test/);
  });

  it('does not keep an idle process alive, and a flush waits for the disk (completion through the eventfd)', () => {
    const file = path.join(dir, 'e.img');
    fs.writeFileSync(file, new Uint8Array(MiB));
    const script = `
      import { BlockLayer } from ${JSON.stringify(path.resolve('src/index.ts'))};
      const layer = new BlockLayer();
      const d = await layer.openDrive({ driver: 'file', filename: ${JSON.stringify(file)}, aio: 'io_uring' });
      await d.write(4096, new Uint8Array(4096).fill(9));
      await d.flush();
      const b = new Uint8Array(4096);
      await d.read(4096, b);
      console.log(d.node.info().aio, b[0], b[4095]);
      await d.close();
    `;
    const scriptFile = path.join(dir, 'child.mts');
    fs.writeFileSync(scriptFile, script);
    // A ring or eventfd read left referenced would hang the child: the timeout catches that.
    const out = execFileSync(process.execPath, ['--import', 'tsx', scriptFile], { timeout: 20_000, encoding: 'utf8' });
    expect(out.trim()).toBe(`${haveUring ? 'io_uring' : 'threads'} 9 9`);
  });
});
