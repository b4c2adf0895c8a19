import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BlockError, BlockLayer, VirtualClock, openImage } from '../../src/index.js';
import type { BlockNode } from '../../src/node/node.js';
import { targetOptions } from '../../src/tools/image.js';
import { type RangeServer, startRangeServer } from '../helpers/range-server.js';
import { rejection } from '../helpers/rejection.js';
import { makeCerts } from '../helpers/tls-certs.js';
import { haveProgram, ok, run } from '../helpers/tools.js';
import { CLI } from '../helpers/cli.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const DATA = randomBytes(3 * MiB + 123);
const layer = new BlockLayer();
let server: RangeServer;
const nodes: BlockNode[] = [];

/** Opens an http node on the test server with fast retries (the options under test override these). */
async function openNode(extra: Record<string, unknown> = {}, url = server.url): Promise<BlockNode> {
  const node = await layer.openNode({ driver: 'http', url, retryDelay: 5, ...extra });
  nodes.push(node);
  return node;
}

async function read(node: BlockNode, offset: number, length: number): Promise<Buffer> {
  const b = Buffer.alloc(length);
  await node.read(offset, b);
  return b;
}

const gets = () => server.requests.filter((r) => r.method === 'GET').length;

const haveOpenssl = haveProgram('openssl');
if (!haveOpenssl && process.env.CI === 'true') throw new Error('openssl missing in CI: .ci/run must install it');
if (!haveOpenssl) console.log('http tests over https skipped: install openssl');
let certs: string | undefined;
/** A CA and a server certificate for 127.0.0.1, made once. */
function certDir(): string {
  if (certs === undefined) {
    certs = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-http-tls-'));
    makeCerts(certs);
  }
  return certs;
}
const tlsFiles = () => ({ key: fs.readFileSync(path.join(certDir(), 'server-key.pem')), cert: fs.readFileSync(path.join(certDir(), 'server-cert.pem')) });

/** node with these arguments and extra environment, without blocking this process (the servers live here). */
function runWithEnv(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

beforeAll(async () => {
  server = await startRangeServer(Buffer.from(DATA));
});
afterEach(async () => {
  for (const n of nodes.splice(0)) await n.unref();
  server.data = Buffer.from(DATA);
  server.etag = '"v1"';
  Object.assign(server, { ranges: true, acceptRanges: true, headStatus: undefined, ifRange: true, faults: [], requests: [], authorizations: [], redirectTo: undefined });
});
afterAll(async () => {
  await layer.close();
  await server.close();
  if (certs !== undefined) fs.rmSync(certs, { recursive: true, force: true });
});

describe('http driver: transport choice', () => {
  it('uses node:http by default in Node, and fetch when asked; info names it', async () => {
    expect((await openNode()).info()).toMatchObject({ transport: 'node' });
    expect((await openNode({ transport: 'fetch' })).info()).toMatchObject({ transport: 'fetch' });
  });
});

// Every behaviour holds with both transports: node:http (the default in Node) and the global fetch.
describe.each(['node', 'fetch'] as const)('%s transport', (transport) => {
  const open = (extra: Record<string, unknown> = {}, url = server.url) => openNode({ transport, ...extra }, url);

  describe('http driver: reads', () => {
    it('reads byte-identical data, learning the size from HEAD', async () => {
      const node = await open();
      expect(node.length).toBe(DATA.length);
      expect(server.requests[0]).toEqual({ method: 'HEAD', range: undefined });
      for (const [o, l] of [[0, 512], [4095, 3], [MiB - 7, 2 * MiB], [DATA.length - 100, 100], [12345, 1]]) {
        expect((await read(node, o, l)).equals(DATA.subarray(o, o + l))).toBe(true);
      }
      expect(node.info()).toMatchObject({ url: server.url, etag: '"v1"' });
    });

    it('reads the whole file in 1 MiB pieces, several in flight', async () => {
      const node = await open();
      const out = Buffer.alloc(DATA.length);
      await Promise.all(
        Array.from({ length: Math.ceil(DATA.length / MiB) }, (_, i) => node.read(i * MiB, out.subarray(i * MiB, Math.min(DATA.length, (i + 1) * MiB)))),
      );
      expect(out.equals(DATA)).toBe(true);
    });

    it('falls back to a one-byte range GET when HEAD is refused', async () => {
      server.headStatus = 405;
      const node = await open();
      expect(node.length).toBe(DATA.length);
      expect(server.requests[1]).toEqual({ method: 'GET', range: 'bytes=0-0' });
      expect((await read(node, 1000, 5000)).equals(DATA.subarray(1000, 6000))).toBe(true);
    });

    it('extends small sequential reads to the read-ahead window: N 4 KiB reads cost N*4K/readahead requests', async () => {
      const node = await open({ readahead: 64 * KiB });
      const before = gets();
      const n = 64;
      for (let i = 0; i < n; i++) expect((await read(node, i * 4 * KiB, 4 * KiB)).equals(DATA.subarray(i * 4 * KiB, (i + 1) * 4 * KiB))).toBe(true);
      expect(gets() - before).toBe((n * 4 * KiB) / (64 * KiB));
      // Without read-ahead every read is its own request.
      const plain = await open({ readahead: 0 });
      const b2 = gets();
      for (let i = 0; i < 8; i++) await read(plain, i * 4 * KiB, 4 * KiB);
      expect(gets() - b2).toBe(8);
    });

    it('concurrent small reads inside one in-flight read-ahead window share its request', async () => {
      const node = await open({ readahead: 256 * KiB });
      const before = gets();
      const parts = await Promise.all([0, 1, 2, 3].map((i) => read(node, i * 4096, 4096)));
      expect(Buffer.concat(parts).equals(DATA.subarray(0, 16384))).toBe(true);
      expect(gets() - before).toBe(1);
    });

    it('a read longer than the read-ahead window is kept (as QEMU curl keeps its last transfers): a later read inside it sends no request', async () => {
      const node = await open({ readahead: 64 * KiB });
      const before = gets();
      expect((await read(node, 0, 300 * KiB)).equals(DATA.subarray(0, 300 * KiB))).toBe(true);
      expect(server.requests.at(-1)?.range).toBe(`bytes=0-${300 * KiB - 1}`);
      // a qcow2 image's L1 table inside the header cluster it read first
      expect((await read(node, 196 * KiB + 8, 8)).equals(DATA.subarray(196 * KiB + 8, 196 * KiB + 16))).toBe(true);
      expect((await read(node, 100 * KiB, 200 * KiB)).equals(DATA.subarray(100 * KiB, 300 * KiB))).toBe(true);
      expect(gets() - before).toBe(1);
      // without read-ahead nothing is kept
      const plain = await open({ readahead: 0 });
      const b2 = gets();
      await read(plain, 0, 300 * KiB);
      await read(plain, 8, 8);
      expect(gets() - b2).toBe(2);
    });

    it('the read-ahead window stops at the end of the file', async () => {
      const node = await open({ readahead: MiB });
      const o = DATA.length - 1000;
      expect((await read(node, o, 10)).equals(DATA.subarray(o, o + 10))).toBe(true);
      expect(server.requests.at(-1)?.range).toBe(`bytes=${o}-${DATA.length - 1}`);
    });
  });

  describe('http driver: refusals', () => {
    it('refuses a server without range support at open (ENOTSUP naming the url), without downloading the file', async () => {
      const big = await startRangeServer(Buffer.alloc(64 * MiB));
      try {
        big.ranges = false;
        big.acceptRanges = false;
        const e = await rejection(layer.openNode({ driver: 'http', transport, url: big.url }));
        expect(e).toBeInstanceOf(BlockError);
        expect((e as BlockError).code).toBe('ENOTSUP');
        expect((e as BlockError).message).toContain(big.url);
        await new Promise((r) => setTimeout(r, 100));
        expect(big.fullBodiesCompleted).toBe(0);
        expect(big.wholeBytesSent).toBeLessThan(32 * MiB);
      } finally {
        await big.close();
      }
    });

    it('refuses a 200 answer to a read range request (server ignoring Range): EIO, not data', async () => {
      const node = await open();
      server.faults.push('ignore-range');
      const e = await rejection(read(node, 100, 100));
      expect((e as BlockError).code).toBe('EIO');
      expect((e as BlockError).message).toMatch(/HTTP 200/);
    });

    it('refuses a wrong Content-Range with EIO at once', async () => {
      const node = await open({ readahead: 0 });
      server.faults.push('bad-range');
      const before = gets();
      const e = await rejection(read(node, 100, 100));
      expect((e as BlockError).code).toBe('EIO');
      expect((e as BlockError).message).toContain('Content-Range');
      expect(gets() - before).toBe(1);
    });

    it('404 at open is ENOENT; 404 on a read fails at once', async () => {
      const e = await rejection(layer.openNode({ driver: 'http', transport, url: server.url.replace('disk.img', 'nope'), retryDelay: 5 }));
      expect((e as BlockError).code).toBe('ENOENT');
      expect((e as BlockError).message).toContain('/nope');
      server.headStatus = 404;
      const e2 = await rejection(layer.openNode({ driver: 'http', transport, url: server.url }));
      server.headStatus = undefined;
      expect((e2 as BlockError).code).toBe('ENOENT');
      const node = await open({ readahead: 0 });
      server.faults.push('status404');
      const before = gets();
      expect(((await rejection(read(node, 0, 10))) as BlockError).code).toBe('ENOENT');
      expect(gets() - before).toBe(1);
    });

    it('refuses sslverify: false with ENOTSUP rather than ignoring it', async () => {
      const e = await rejection(layer.openNode({ driver: 'http', transport, url: server.url.replace('http:', 'https:'), sslverify: false }));
      expect((e as BlockError).code).toBe('ENOTSUP');
      expect((e as BlockError).field).toBe('sslverify');
    });

    it('rejects bad options', async () => {
      for (const bad of [{ url: 'ftp://x/y' }, { url: 'not a url' }, { url: server.url, timeout: 0 }, { url: server.url, headers: { 'Bad Name': 'x' } }, { url: server.url, retries: -1 }, { url: server.url, transport: 'curl' }]) {
        expect(((await rejection(layer.openNode({ driver: 'http', transport, ...bad }))) as BlockError).code).toBe('EINVAL');
      }
    });

    it('is read-only', async () => {
      expect(((await rejection(layer.openNode({ driver: 'http', transport, url: server.url, readOnly: false }))) as BlockError).code).toBe('EROFS');
    });
  });

  describe('http driver: a file changing while open', () => {
    it('If-Range: a new version answers 200, refused as ESTALE, never mixed data', async () => {
      const node = await open({ readahead: 0 });
      const first = await read(node, 0, 4096);
      expect(first.equals(DATA.subarray(0, 4096))).toBe(true);
      server.data = randomBytes(DATA.length);
      server.etag = '"v2"';
      const b = Buffer.alloc(4096);
      const e = await rejection(node.read(4096, b));
      expect((e as BlockError).code).toBe('ESTALE');
      expect((e as BlockError).message).toContain('"v1"');
      expect(b.equals(Buffer.alloc(4096))).toBe(true);
    });

    it('a server ignoring If-Range but sending the new ETag: refused as ESTALE', async () => {
      const node = await open({ readahead: 0 });
      server.ifRange = false;
      server.etag = '"v2"';
      server.data = randomBytes(DATA.length);
      expect(((await rejection(read(node, 0, 100))) as BlockError).code).toBe('ESTALE');
      server.etag = '"v1"';
      server.data = Buffer.from(DATA);
      server.faults.push('new-etag');
      expect(((await rejection(read(node, 0, 100))) as BlockError).code).toBe('ESTALE');
    });

    it('a file that changed size is refused', async () => {
      const node = await open({ readahead: 0 });
      server.ifRange = false;
      server.data = Buffer.concat([DATA, Buffer.alloc(10)]);
      expect(((await rejection(read(node, 0, 100))) as BlockError).code).toBe('ESTALE');
    });
  });

  describe('http driver: retries', () => {
    it('5xx then success: succeeds after a retry', async () => {
      const node = await open({ readahead: 0 });
      server.faults.push('status500', 'status500');
      const before = gets();
      expect((await read(node, 5000, 3000)).equals(DATA.subarray(5000, 8000))).toBe(true);
      expect(gets() - before).toBe(3);
    });

    it('5xx on every attempt: EIO naming url and offset after retries+1 attempts', async () => {
      const node = await open({ readahead: 0, retries: 2 });
      server.faults.push('status500', 'status500', 'status500');
      const before = gets();
      const e = (await rejection(read(node, 777, 10))) as BlockError;
      expect(e.code).toBe('EIO');
      expect(e.message).toContain(server.url);
      expect(e.message).toContain('777');
      expect(e.offset).toBe(777);
      expect(gets() - before).toBe(3);
    });

    it('a connection reset mid-body is retried', async () => {
      const node = await open({ readahead: 0 });
      server.faults.push('reset');
      const before = gets();
      expect((await read(node, 0, 2 * MiB)).equals(DATA.subarray(0, 2 * MiB))).toBe(true);
      expect(gets() - before).toBe(2);
    });

    it('a short body is retried', async () => {
      const node = await open({ readahead: 0 });
      server.faults.push('short');
      const before = gets();
      expect((await read(node, 10, 1000)).equals(DATA.subarray(10, 1010))).toBe(true);
      expect(gets() - before).toBe(2);
    });

    it('a server slower than timeout: retried, then EIO', async () => {
      const node = await open({ readahead: 0, timeout: 0.2, retries: 2 });
      server.faults.push('stall', 'stall', 'stall');
      const before = gets();
      const e = (await rejection(read(node, 4096, 10))) as BlockError;
      expect(e.code).toBe('EIO');
      expect(e.message).toMatch(/within 0.2 s/);
      expect(gets() - before).toBe(3);
    });

    it('a stall then an answer: the retry succeeds', async () => {
      const node = await open({ readahead: 0, timeout: 0.2 });
      server.faults.push('stall');
      expect((await read(node, 4096, 10)).equals(DATA.subarray(4096, 4106))).toBe(true);
    });
  });

  describe('http driver: close', () => {
    it('close aborts reads in flight: they reject with ECLOSED, nothing hangs', async () => {
      const node = await layer.openNode({ driver: 'http', transport, url: server.url, timeout: 60 });
      server.faults.push('stall', 'stall');
      const pending = [read(node, 0, 100).catch((e) => e), read(node, MiB, MiB).catch((e) => e)];
      await new Promise((r) => setTimeout(r, 50));
      await node.unref();
      const errors = await Promise.all(pending);
      for (const e of errors) expect((e as BlockError).code).toBe('ECLOSED');
    });
  });

  describe('http driver: bodies, connections, redirects, TLS', () => {
    for (const fault of ['cut', 'reset'] as const) {
      it(`a body ${fault === 'cut' ? 'ended early by the server' : 'cut by a connection reset'} on every attempt: EIO after retries+1 attempts, never a partial success`, async () => {
        const node = await open({ readahead: 0, retries: 2 });
        server.faults.push(fault, fault, fault);
        const before = gets();
        const b = Buffer.alloc(MiB);
        const e = (await rejection(node.read(4096, b))) as BlockError;
        expect(e.code).toBe('EIO');
        expect(e.offset).toBe(4096);
        expect(e.message).toContain('3 attempt(s)');
        expect(gets() - before).toBe(3);
        // The node still works afterwards.
        expect((await read(node, 4096, MiB)).equals(DATA.subarray(4096, 4096 + MiB))).toBe(true);
      });
    }

    it('a body longer than the range asked for: EIO at once', async () => {
      const node = await open({ readahead: 0 });
      server.faults.push('long');
      const before = gets();
      const e = (await rejection(read(node, 100, 1000))) as BlockError;
      expect(e.code).toBe('EIO');
      expect(e.message).toMatch(/longer than the 1000 bytes/);
      expect(gets() - before).toBe(1);
    });

    it('sequential reads reuse one kept-alive connection', async () => {
      const node = await open({ readahead: 0 });
      await read(node, 0, 10);
      const before = server.connections;
      for (let i = 0; i < 20; i++) expect((await read(node, i * 64 * KiB, 64 * KiB)).equals(DATA.subarray(i * 64 * KiB, (i + 1) * 64 * KiB))).toBe(true);
      expect(server.connections - before).toBeLessThanOrEqual(1);
    });

    it('a refused connection is retried, then EIO naming the url', async () => {
      const gone = await startRangeServer(Buffer.from(DATA));
      await gone.close();
      const e = (await rejection(layer.openNode({ driver: 'http', transport, url: gone.url, retries: 1, retryDelay: 5 }))) as BlockError;
      expect(e.code).toBe('EIO');
      expect(e.message).toContain(gone.url);
      expect(e.message).toContain('2 attempt(s)');
    });

    it('an idle connection the server has closed is replaced, not counted as a failed attempt', async () => {
      const short = await startRangeServer(Buffer.from(DATA));
      try {
        short.setKeepAliveTimeout(30);
        const node = await open({ readahead: 0, retries: 0 }, short.url);
        for (let i = 0; i < 4; i++) {
          expect((await read(node, i * 1000, 1000)).equals(DATA.subarray(i * 1000, (i + 1) * 1000))).toBe(true);
          await new Promise((r) => setTimeout(r, 80));
        }
        expect(short.requests.filter((r) => r.method === 'GET').length).toBe(4);
      } finally {
        await short.close();
      }
    });

    it('follows redirects; credentials go along to the same origin only', async () => {
      server.redirectTo = server.url;
      const moved = server.url.replace('disk.img', 'old.img');
      const same = await open({ headers: { Authorization: 'Bearer t' } }, moved);
      expect((await read(same, 10, 100)).equals(DATA.subarray(10, 110))).toBe(true);
      expect(server.authorizations.every((a) => a === 'Bearer t')).toBe(true);
      const other = await startRangeServer(Buffer.from(DATA));
      try {
        other.redirectTo = server.url;
        server.authorizations = [];
        const cross = await open({ headers: { Authorization: 'Bearer t' } }, other.url.replace('disk.img', 'old.img'));
        expect((await read(cross, 10, 100)).equals(DATA.subarray(10, 110))).toBe(true);
        expect(other.authorizations.every((a) => a === 'Bearer t')).toBe(true);
        expect(server.authorizations.length).toBeGreaterThan(0);
        expect(server.authorizations.every((a) => a === undefined)).toBe(true);
      } finally {
        await other.close();
      }
    });

    it.skipIf(!haveOpenssl)('https with a certificate from an unknown CA is refused (verified, never ignored)', async () => {
      const tlsServer = await startRangeServer(Buffer.from(DATA), '"v1"', '/disk.img', tlsFiles());
      try {
        const e = (await rejection(layer.openNode({ driver: 'http', transport, url: tlsServer.url, retries: 0 }))) as BlockError;
        expect(e.code).toBe('EIO');
        expect(tlsServer.requests).toEqual([]);
      } finally {
        await tlsServer.close();
      }
    });

    it.skipIf(!haveOpenssl)('https with a trusted CA (NODE_EXTRA_CA_CERTS) reads byte-identical data', async () => {
      const tlsServer = await startRangeServer(Buffer.from(DATA), '"v1"', '/disk.img', tlsFiles());
      try {
        const script = `import { BlockLayer } from ${JSON.stringify(path.join(import.meta.dirname, '../../src/index.ts'))};
const layer = new BlockLayer();
const node = await layer.openNode({ driver: 'http', url: process.argv[1], transport: ${JSON.stringify(transport)} });
const b = Buffer.alloc(node.length);
await node.read(0, b);
console.log(node.length, (await import('node:crypto')).createHash('sha256').update(b).digest('hex'));
await layer.close();`;
        const r = await runWithEnv(['--import', 'tsx', '--input-type=module', '-e', script, tlsServer.url], { NODE_EXTRA_CA_CERTS: path.join(certDir(), 'ca-cert.pem') });
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout.trim()).toBe(`${DATA.length} ${createHash('sha256').update(DATA).digest('hex')}`);
      } finally {
        await tlsServer.close();
      }
    });
  });
});

const haveQemuImg = haveProgram('qemu-img');
if (!haveQemuImg && process.env.CI === 'true') throw new Error('qemu-img missing in CI: .ci/run must install qemu-utils');
if (!haveQemuImg) console.log('http tests with qemu-img (qcow2 comparison, serve) skipped: install qemu-utils');

/** The CLI in a child process, without blocking this process (the server lives here). */
const cli = (...args: string[]) => run(process.execPath, [...CLI, ...args]);

describe('http driver: time comes from the layer clock', () => {
  it('a retry waits for the clock: on a VirtualClock the read completes only once the clock passes the retry delay', async () => {
    const clock = new VirtualClock();
    const virtual = new BlockLayer({ clock });
    try {
      const node = await virtual.openNode({ driver: 'http', url: server.url, readahead: 0, retryDelay: 10_000 });
      server.faults.push('status500');
      let settled = false;
      const pending = read(node, 100, 10).then((b) => {
        settled = true;
        return b;
      });
      // The failed attempt is answered in real time; the retry waits 10 s of the layer's time (twice
      // the test's own time limit, so only the clock can end it in time; the request deadline of
      // the retry, 5 s later on the same clock, is never reached).
      await expect.poll(() => gets(), { timeout: 5000 }).toBe(1);
      await new Promise((r) => setTimeout(r, 200));
      expect(settled).toBe(false);
      await clock.advance(10_000);
      expect((await pending).equals(DATA.subarray(100, 110))).toBe(true);
      expect(gets()).toBe(2);
      await node.unref();
    } finally {
      await virtual.close();
    }
  }, 5000);
});

describe('http targets (CLI and openImage)', () => {
  it('blocklayer info and convert take an http URL', async () => {
    const info = await cli('info', '--json', server.url);
    expect(info.code).toBe(0);
    expect(JSON.parse(info.stdout)).toMatchObject({ filename: server.url, format: 'raw', 'virtual-size': DATA.length });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-http-cli-'));
    try {
      const out = path.join(dir, 'out.raw');
      const r = await cli('convert', '-q', server.url, out);
      expect(r.code, r.stderr).toBe(0);
      expect(fs.readFileSync(out).equals(DATA)).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });


  it.skipIf(!haveQemuImg)('opens a qcow2 base over http fetching its header cluster, not the first 2 MiB of the file', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-http-qcow2-'));
    try {
      const img = path.join(dir, 'base.qcow2');
      await ok('qemu-img', ['create', '-q', '-f', 'qcow2', img, '16M']);
      await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 4M', img]);
      const base = await startRangeServer(fs.readFileSync(img));
      try {
        const node = await layer.openNode({ driver: 'qcow2', file: { driver: 'http', url: base.url } });
        nodes.push(node);
        // the header cluster read (64 KiB) grows to one read-ahead window (256 KiB), which holds the
        // refcount table and the L1 table qemu-img put in clusters 1 and 3: one GET for the open
        const fetched = base.requests.filter((r) => r.method === 'GET').map((r) => r.range);
        expect(fetched).toEqual(['bytes=0-262143']);
        expect((await read(node, 3 * MiB, 512)).equals(Buffer.alloc(512, 0x5a))).toBe(true);
      } finally {
        await base.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!haveQemuImg)('blocklayer serve exports an http URL over NBD, read-only', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-http-serve-'));
    const sock = path.join(dir, 'nbd.sock');
    const child = spawn(process.execPath, [...CLI, 'serve', server.url, '-x', 'h', '-k', sock], { stdio: ['ignore', 'ignore', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    try {
      let err = '';
      await new Promise<void>((resolve, reject) => {
        child.stderr.setEncoding('utf8');
        child.stderr.on('data', (c: string) => {
          err += c;
          if (/listening on unix:/.test(err)) resolve();
        });
        void exited.then((code) => reject(new Error(`serve exited with ${code}: ${err}`)));
      });
      await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `nbd+unix:///h?socket=${sock}`, path.join(dir, 'out.raw')]);
      const got = fs.readFileSync(path.join(dir, 'out.raw'));
      // qemu's NBD client rounds an export size up to 512 bytes (reading zeros past the end).
      expect(got.length).toBe(Math.ceil(DATA.length / 512) * 512);
      expect(got.subarray(0, DATA.length).equals(DATA)).toBe(true);
      const w = await run('qemu-io', ['-f', 'raw', '-c', 'write 0 512', `nbd+unix:///h?socket=${sock}`]);
      expect(`${w.stdout}${w.stderr}`).toMatch(/read-only|Permission|not permitted|failed/i);
    } finally {
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a raw file over http: probed, opened read-only', async () => {
    const o = await targetOptions(server.url);
    expect(o).toMatchObject({ driver: 'raw', file: { driver: 'http', url: server.url } });
    const drive = await openImage(server.url, {}, layer);
    try {
      const b = Buffer.alloc(1000);
      await drive.read(500, b);
      expect(b.equals(DATA.subarray(500, 1500))).toBe(true);
    } finally {
      await drive.close();
    }
  });
});


describe('qcow2 over http', () => {
  const fixtures = path.join(import.meta.dirname, '..', 'fixtures', 'qcow2');
  for (const name of ['v3.qcow2', 'zlib.qcow2']) {
    it.skipIf(!haveQemuImg)(`${name}: {driver:'qcow2', file:{driver:'http'}} reads what qemu-img convert -O raw gives`, async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-http-'));
      try {
        const image = fs.readFileSync(path.join(fixtures, name));
        await ok('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', path.join(fixtures, name), path.join(dir, 'ref.raw')]);
        const ref = fs.readFileSync(path.join(dir, 'ref.raw'));
        const qs = await startRangeServer(image);
        try {
          const node = await layer.openNode({ driver: 'qcow2', file: { driver: 'http', url: qs.url } });
          try {
            expect(node.length).toBe(ref.length);
            expect((await read(node, 0, ref.length)).equals(ref)).toBe(true);
          } finally {
            await node.unref();
          }
          // Probing picks qcow2 by its magic.
          expect(await targetOptions(qs.url)).toMatchObject({ driver: 'qcow2', file: { driver: 'http', url: qs.url } });
        } finally {
          await qs.close();
        }
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
