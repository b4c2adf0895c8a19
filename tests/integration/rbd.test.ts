import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, type Drive, parseRbdFilename } from '../../src/index.js';
import { rejection } from '../helpers/rejection.js';
import { CLI } from '../helpers/cli.js';

/*
 * Against a real Ceph cluster: scripts/ceph-test-cluster.sh start prints the env to export.
 * Without BLOCKLAYER_CEPH_CONF these tests are skipped, except in CI (CI=true) where a
 * missing cluster fails.
 */
const conf = process.env.BLOCKLAYER_CEPH_CONF;
const pool = process.env.BLOCKLAYER_CEPH_POOL ?? 'rbd';
const inCi = process.env.CI === 'true';
const HOWTO = 'eval "$(scripts/ceph-test-cluster.sh start)" && npx vitest run tests/integration/rbd';
const MiB = 1 << 20;

function cli(cmd: 'rbd' | 'ceph', ...args: string[]): string {
  return execFileSync(cmd, ['-c', conf!, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function same(actual: Uint8Array, expected: Uint8Array): boolean {
  return Buffer.compare(Buffer.from(actual.buffer, actual.byteOffset, actual.length), Buffer.from(expected.buffer, expected.byteOffset, expected.length)) === 0;
}


if (!conf && !inCi) console.info(`rbd integration tests skipped: no Ceph cluster; to run them: ${HOWTO}`);

if (!conf && inCi) {
  describe('rbd against a real Ceph cluster', () => {
    it('has a cluster to test against (CI=true: a missing cluster is a failure)', () => {
      throw new Error(`BLOCKLAYER_CEPH_CONF is not set; CI must start a cluster first: ${HOWTO}`);
    });
  });
}

describe.skipIf(!conf)(`rbd against a real Ceph cluster${conf ? '' : ` (skipped: no cluster; run: ${HOWTO})`}`, () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-rbd-test-'));
  const prefix = `bl-test-${process.pid}`;
  let n = 0;
  const images: string[] = [];
  const layer = new BlockLayer();
  const open: Drive[] = [];

  /** A fresh image name (removed after the tests). */
  const image = () => {
    const name = `${prefix}-${n++}`;
    images.push(name);
    return name;
  };
  const openRbd = async (options: Record<string, unknown>) => {
    const d = await layer.openDrive({ driver: 'rbd', pool, conf, ...options });
    open.push(d);
    return d;
  };

  beforeAll(() => {
    cli('ceph', 'health');
  });

  afterAll(async () => {
    await Promise.all(open.map((d) => d.close()));
    for (const name of images) {
      try {
        cli('rbd', 'snap', 'purge', `${pool}/${name}`);
        cli('rbd', 'rm', '--no-progress', `${pool}/${name}`);
      } catch {
        // never created
      }
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('reads an image written by `rbd import` back byte-identical', async () => {
    const name = image();
    const data = randomBytes(9 * MiB + 12_345);
    fs.writeFileSync(path.join(tmp, 'in.img'), data);
    cli('rbd', 'import', '--no-progress', '--object-size', '1M', path.join(tmp, 'in.img'), `${pool}/${name}`);
    const d = await openRbd({ image: name, readOnly: true });
    expect(d.length).toBe(data.length);
    expect(d.node.info()).toMatchObject({ pool, image: name, objectSize: MiB });
    expect(same(await d.read(0, data.length), data)).toBe(true);
    for (const [offset, length] of [[1, 1], [MiB - 7, 20], [3 * MiB + 5, 2 * MiB + 3], [data.length - 100, 100]]) {
      expect(same(await d.read(offset, length), data.subarray(offset, offset + length))).toBe(true);
    }
    await d.close();
  });

  it('what we write, `rbd export` reads back byte-identical', async () => {
    const name = image();
    cli('rbd', 'create', '--size', '8M', '--object-size', '1M', `${pool}/${name}`);
    const expected = new Uint8Array(8 * MiB);
    const d = await openRbd({ image: name });
    const writes: [number, number][] = [[0, 4096], [MiB - 3, 10], [2 * MiB + 100, 3 * MiB], [8 * MiB - 1, 1]];
    for (const [offset, length] of writes) {
      const chunk = randomBytes(length);
      expected.set(chunk, offset);
      await d.write(offset, chunk);
    }
    await d.close();
    cli('rbd', 'export', '--no-progress', `${pool}/${name}`, path.join(tmp, 'out.img'));
    expect(same(fs.readFileSync(path.join(tmp, 'out.img')), expected)).toBe(true);
  });

  it('after flush, another client sees the writes while the drive stays open', async () => {
    const name = image();
    cli('rbd', 'create', '--size', '4M', `${pool}/${name}`);
    const d = await openRbd({ image: name });
    const chunk = randomBytes(64 * 1024);
    await d.write(4096, chunk);
    await d.flush();
    cli('rbd', 'export', '--no-progress', `${pool}/${name}`, path.join(tmp, 'flushed.img'));
    expect(same(fs.readFileSync(path.join(tmp, 'flushed.img')).subarray(4096, 4096 + chunk.length), chunk)).toBe(true);
    await d.close();
  });

  it('discard of whole objects and write-zeroes make ranges read as zeros', async () => {
    const name = image();
    cli('rbd', 'create', '--size', '4M', '--object-size', '1M', `${pool}/${name}`);
    const d = await openRbd({ image: name });
    await d.write(0, randomBytes(4 * MiB));
    await d.discard(MiB, 2 * MiB);
    await d.writeZeroes(100, 1000);
    await d.flush();
    const back = await d.read(0, 4 * MiB);
    expect(back.subarray(MiB, 3 * MiB).every((b) => b === 0)).toBe(true);
    expect(back.subarray(100, 1100).every((b) => b === 0)).toBe(true);
    expect(back.subarray(1100, MiB).some((b) => b !== 0)).toBe(true);
    await d.close();
    // The discarded objects are gone from the cluster, not just zero-filled.
    const extents = JSON.parse(cli('rbd', 'diff', '--format', 'json', `${pool}/${name}`)) as { offset: number }[];
    expect(extents.map((e) => e.offset).filter((o) => o >= MiB && o < 3 * MiB)).toEqual([]);
  });

  it('a snapshot opens read-only with its contents; opening it read-write is EROFS', async () => {
    const name = image();
    const data = randomBytes(MiB);
    fs.writeFileSync(path.join(tmp, 'snap.img'), data);
    cli('rbd', 'import', '--no-progress', path.join(tmp, 'snap.img'), `${pool}/${name}`);
    cli('rbd', 'snap', 'create', `${pool}/${name}@s1`);
    const d = await openRbd({ image: name });
    await d.write(0, new Uint8Array(4096).fill(0xee));
    await d.flush();
    const s = await openRbd({ image: name, snapshot: 's1', readOnly: true });
    expect(s.readOnly).toBe(true);
    expect(same(await s.read(0, MiB), data)).toBe(true);
    expect(await rejection(s.write(0, new Uint8Array(1)))).toMatchObject({ code: 'EROFS' });
    expect(await rejection(openRbd({ image: name, snapshot: 's1' }))).toMatchObject({ code: 'EROFS', field: 'snapshot' });
    expect((await d.read(0, 1))[0]).toBe(0xee);
    await s.close();
    await d.close();
  });

  it('a missing image, pool or snapshot is ENOENT naming it', async () => {
    const name = image();
    cli('rbd', 'create', '--size', '1M', `${pool}/${name}`);
    expect(await rejection(openRbd({ image: `${prefix}-nonexistent` }))).toMatchObject({
      code: 'ENOENT',
      message: expect.stringContaining(`image '${pool}/${prefix}-nonexistent' not found`),
    });
    expect(await rejection(openRbd({ pool: 'no-such-pool', image: name }))).toMatchObject({
      code: 'ENOENT',
      message: expect.stringContaining("pool 'no-such-pool' does not exist"),
    });
    expect(await rejection(openRbd({ image: name, snapshot: 'nosnap', readOnly: true }))).toMatchObject({ code: 'ENOENT', field: 'snapshot' });
  });

  it('a wrong key or an unknown user is EACCES saying the cluster refused the user', async () => {
    const name = image();
    cli('rbd', 'create', '--size', '1M', `${pool}/${name}`);
    const wrongKey = 'AQBy7iRpAAAAABAAdWQgTmKiGUqbGCWNHXTrbA==';
    expect(await rejection(openRbd({ image: name, keySecret: wrongKey }))).toMatchObject({
      code: 'EACCES',
      message: expect.stringContaining('refused client.admin'),
    });
    expect(await rejection(openRbd({ image: name, user: 'nobody-here' }))).toMatchObject({
      code: 'EACCES',
      message: expect.stringContaining('refused client.nobody-here'),
    });
  });

  it('a restricted user opens an image with a keyring file or with key-secret', async () => {
    const name = image();
    cli('rbd', 'create', '--size', '1M', `${pool}/${name}`);
    const user = `bltest${process.pid}`;
    const keyring = path.join(tmp, 'user.keyring');
    cli('ceph', 'auth', 'get-or-create', `client.${user}`, 'mon', 'profile rbd', 'osd', `profile rbd pool=${pool}`, '-o', keyring);
    try {
      const a = await openRbd({ image: name, user, keyring });
      await a.write(0, new Uint8Array([1, 2, 3]));
      await a.close();
      const key = cli('ceph', 'auth', 'get-key', `client.${user}`).trim();
      const b = await openRbd({ image: name, user, 'key-secret': key, readOnly: true });
      expect([...(await b.read(0, 3))]).toEqual([1, 2, 3]);
      await b.close();
    } finally {
      cli('ceph', 'auth', 'del', `client.${user}`);
    }
  });

  it('keeps hundreds of requests in flight and completes them all correctly', async () => {
    const name = image();
    cli('rbd', 'create', '--size', '64M', `${pool}/${name}`);
    const d = await openRbd({ image: name });
    const count = 512;
    const chunks = Array.from({ length: count }, () => randomBytes(4096));
    // Distinct 4 KiB slots in random order.
    const slots = Array.from({ length: count }, (_, i) => i * 31 % 16384);
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 1);
    await Promise.all(chunks.map((c, i) => d.write(slots[i] * 4096, c)));
    const back = await Promise.all(slots.map((s) => d.read(s * 4096, 4096)));
    clearInterval(ticker);
    expect(back.every((b, i) => same(b, chunks[i]))).toBe(true);
    // The event loop kept running while librbd worked.
    expect(ticks).toBeGreaterThan(0);
    await d.close();
  });

  it('close releases the image: no watcher is left', async () => {
    const name = image();
    cli('rbd', 'create', '--size', '1M', `${pool}/${name}`);
    const d = await openRbd({ image: name });
    await d.write(0, new Uint8Array([1]));
    expect(cli('rbd', 'status', `${pool}/${name}`)).toMatch(/watcher=/);
    await d.close();
    expect(cli('rbd', 'status', `${pool}/${name}`)).not.toMatch(/watcher=/);
  });

  it('opens an image in a namespace and through a parsed rbd: filename', async () => {
    const ns = `ns${process.pid}`;
    cli('rbd', 'namespace', 'create', `${pool}/${ns}`);
    const name = `${prefix}-ns`;
    try {
      cli('rbd', 'create', '--size', '1M', `${pool}/${ns}/${name}`);
      const d = await layer.openDrive(parseRbdFilename(`rbd:${pool}/${ns}/${name}:conf=${conf}:id=admin`));
      await d.write(10, new Uint8Array([42]));
      expect(d.node.info()).toMatchObject({ namespace: ns, image: name });
      await d.close();
      cli('rbd', 'export', '--no-progress', `${pool}/${ns}/${name}`, path.join(tmp, 'ns.img'));
      expect(fs.readFileSync(path.join(tmp, 'ns.img'))[10]).toBe(42);
    } finally {
      cli('rbd', 'rm', '--no-progress', `${pool}/${ns}/${name}`);
      cli('rbd', 'namespace', 'remove', `${pool}/${ns}`);
    }
  });

  it('the CLI works on rbd: targets (info, bench)', async () => {
    const name = image();
    cli('rbd', 'create', '--size', '4M', `${pool}/${name}`);
    const target = `rbd:${pool}/${name}:conf=${conf}:id=admin`;
    const run = (...args: string[]) => execFileSync(process.execPath, [...CLI, ...args], { encoding: 'utf8' });
    expect(JSON.parse(run('info', target, '--json'))).toMatchObject({ format: 'raw', 'virtual-size': 4 * MiB });
    const r = JSON.parse(run('bench', '--filename', target, '--rw', 'randwrite', '--bs', '4k', '--iodepth', '8', '--runtime', '1', '--iops', '100', '--json'));
    expect(r.total.writeOps).toBeGreaterThan(50);
    expect(r.total.iops).toBeLessThan(100 * 1.2 + 11);
  });

  it('an iops limit of 50 holds on an rbd drive (real clock, within timer jitter)', async () => {
    const name = image();
    cli('rbd', 'create', '--size', '4M', `${pool}/${name}`);
    const d = await openRbd({ image: name, throttle: { iopsTotal: 50 } });
    let stop = false;
    let done = 0;
    const start = performance.now();
    const workers = Array.from({ length: 16 }, async (_, i) => {
      const buf = new Uint8Array(4096);
      while (!stop) {
        if (i % 2) await d.read(i * 4096, buf);
        else await d.write(i * 4096, buf);
        done++;
      }
    });
    await new Promise((r) => setTimeout(r, 1500));
    stop = true;
    const elapsed = (performance.now() - start) / 1000;
    const admitted = done;
    await d.close();
    await Promise.all(workers);
    // QEMU semantics from empty buckets: avg/10 + 1 = 6 at once, then 50/s.
    const expected = 6 + 50 * elapsed;
    expect(admitted).toBeLessThanOrEqual(expected * 1.05 + 2);
    expect(admitted).toBeGreaterThanOrEqual(expected * 0.8);
  });
});
