import { execFile, spawnSync } from 'node:child_process';
import { lstatSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockError, BlockLayer, type ExportManager, QmpServer } from '../../src/index.js';
import { haveProgram } from '../helpers/tools.js';

type Message = Record<string, unknown> & { return?: unknown; error?: { class: string; desc: string }; event?: string; id?: unknown };

/** A small QMP client: reads CRLF-framed JSON, keeps events apart from responses. */
class Client {
  readonly events: Message[] = [];
  readonly raw: string[] = [];
  private buffer = '';
  private readonly responses: Message[] = [];
  private waiting: (() => void) | null = null;
  closed = false;

  private constructor(readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      let at = this.buffer.indexOf('\r\n');
      while (at >= 0) {
        const line = this.buffer.slice(0, at);
        this.buffer = this.buffer.slice(at + 2);
        this.raw.push(line);
        const m = JSON.parse(line) as Message;
        if (m.event !== undefined) this.events.push(m);
        else this.responses.push(m);
        at = this.buffer.indexOf('\r\n');
      }
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiting;
    this.waiting = null;
    w?.();
  }

  static async connect(path: string): Promise<{ client: Client; greeting: Message }> {
    const socket = net.connect(path);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const client = new Client(socket);
    return { client, greeting: await client.next() };
  }

  /** Connects and negotiates capabilities. */
  static async ready(path: string): Promise<Client> {
    const { client } = await Client.connect(path);
    expect(await client.cmd('qmp_capabilities')).toEqual({ return: {} });
    return client;
  }

  async until(cond: () => boolean): Promise<void> {
    while (!cond()) {
      if (this.closed) throw new Error('connection closed');
      await new Promise<void>((resolve) => {
        this.waiting = resolve;
      });
    }
  }

  /** The next response (not event). */
  async next(): Promise<Message> {
    await this.until(() => this.responses.length > 0);
    return this.responses.shift()!;
  }

  send(text: string): void {
    this.socket.write(text);
  }

  cmd(execute: string, args?: Record<string, unknown>, id?: unknown): Promise<Message> {
    const req: Record<string, unknown> = { execute };
    if (args !== undefined) req.arguments = args;
    if (id !== undefined) req.id = id;
    this.send(JSON.stringify(req));
    return this.next();
  }

  close(): void {
    this.socket.destroy();
  }
}

let dir: string;
let path: string;
let layer: BlockLayer;
let server: QmpServer;
const clients: Client[] = [];

async function client(): Promise<Client> {
  const c = await Client.ready(path);
  clients.push(c);
  return c;
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'qmp-'));
  path = join(dir, 'qmp.sock');
  layer = new BlockLayer();
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await server?.close();
  await layer.close();
  rmSync(dir, { recursive: true, force: true });
});

async function start(exports?: ExportManager): Promise<QmpServer> {
  server = new QmpServer(layer, { exports });
  await server.listen({ path });
  return server;
}

describe('QMP server over a unix socket', () => {
  it('greets with the QMP banner, refuses commands before qmp_capabilities, then accepts them', async () => {
    await start();
    const { client: c, greeting } = await Client.connect(path);
    clients.push(c);
    expect(greeting).toEqual({
      QMP: { version: { qemu: { major: expect.any(Number), minor: expect.any(Number), micro: expect.any(Number) }, package: expect.stringMatching(/^blocklayer /) }, capabilities: [] },
    });
    expect(await c.cmd('query-block', undefined, 'q1')).toEqual({
      error: { class: 'CommandNotFound', desc: "Expecting capabilities negotiation with 'qmp_capabilities'" },
      id: 'q1',
    });
    expect(await c.cmd('qmp_capabilities', { enable: ['oob'] })).toEqual({ error: { class: 'GenericError', desc: "Capability 'oob' not available" } });
    expect(await c.cmd('qmp_capabilities', undefined, 7)).toEqual({ return: {}, id: 7 });
    expect((await c.cmd('qmp_capabilities')).error).toEqual({ class: 'CommandNotFound', desc: 'Capabilities negotiation is already complete, command ignored' });
    expect(await c.cmd('query-block')).toEqual({ return: [] });
    const names = ((await c.cmd('query-commands')).return as { name: string }[]).map((x) => x.name);
    expect(names).toEqual(expect.arrayContaining(['qmp_capabilities', 'query-block', 'query-blockstats', 'block_set_io_throttle', 'query-named-block-nodes', 'cont', 'quit']));
    // no export manager: the export commands are not offered
    expect(names).not.toContain('block-export-add');
    // every message ends with CRLF, one JSON text per line
    expect(c.raw.every((l) => !l.includes('\n'))).toBe(true);
  });

  it('answers malformed JSON, non-objects and bad members with GenericError, and reads objects sent back to back', async () => {
    await start();
    const c = await client();
    c.send('{"execute": "query-block", "id": 1}{"execute":');
    expect(await c.next()).toEqual({ return: [], id: 1 });
    c.send(' }');
    expect(await c.next()).toMatchObject({ error: { class: 'GenericError', desc: expect.stringMatching(/^JSON parse error, /) } });
    c.send('[1, 2]\n');
    expect(await c.next()).toEqual({ error: { class: 'GenericError', desc: 'QMP input must be a JSON object' } });
    c.send('{"id": "x"}');
    expect(await c.next()).toEqual({ error: { class: 'GenericError', desc: "QMP input lacks member 'execute'" }, id: 'x' });
    c.send('{"execute": "query-block", "foo": 1}');
    expect(await c.next()).toEqual({ error: { class: 'GenericError', desc: "QMP input member 'foo' is unexpected" } });
    expect(await c.cmd('no-such-command')).toEqual({ error: { class: 'CommandNotFound', desc: 'The command no-such-command has not been found' } });
    expect(await c.cmd('query-block', { x: 1 })).toEqual({ error: { class: 'GenericError', desc: "Parameter 'x' is unexpected" } });
    // the connection is still good
    expect(await c.cmd('query-block', undefined, 'after')).toEqual({ return: [], id: 'after' });
  });

  it('query-block and query-named-block-nodes describe each drive, query-blockstats counts its I/O', async () => {
    await start();
    const d = await layer.openDrive({ id: 'disk0', driver: 'raw', file: { driver: 'memory', size: '1M' }, throttle: { bpsTotal: 1e9, iopsRead: 5000 } });
    await d.write(8192, new Uint8Array(4096).fill(7));
    await d.read(0, 512);
    await d.read(0, 1024);
    await d.flush();
    await expect(d.read(1 << 20, 512)).rejects.toMatchObject({ code: 'EINVAL' });
    const c = await client();

    const block = (await c.cmd('query-block')).return as Record<string, unknown>[];
    expect(block).toHaveLength(1);
    expect(block[0]).toMatchObject({
      device: 'disk0',
      'io-status': 'ok',
      inserted: {
        'node-name': d.node.name,
        ro: false,
        drv: 'raw',
        file: 'memory://',
        bps: 1e9,
        bps_rd: 0,
        bps_wr: 0,
        iops: 0,
        iops_rd: 5000,
        iops_wr: 0,
        group: 'disk0',
        image: { format: 'raw', 'virtual-size': 1 << 20 },
      },
    });

    const stats = (await c.cmd('query-blockstats')).return as { device: string; 'node-name': string; stats: Record<string, number> }[];
    expect(stats).toHaveLength(1);
    expect(stats[0].device).toBe('disk0');
    expect(stats[0]['node-name']).toBe(d.node.name);
    expect(stats[0].stats).toMatchObject({
      rd_bytes: 1536,
      wr_bytes: 4096,
      rd_operations: 2,
      wr_operations: 1,
      flush_operations: 1,
      unmap_operations: 0,
      failed_rd_operations: 0,
      invalid_rd_operations: 1,
      wr_highest_offset: 8192 + 4096,
      account_invalid: true,
      account_failed: true,
    });
    expect(stats[0].stats.rd_total_time_ns).toBeGreaterThan(0);
    expect(stats[0].stats.idle_time_ns).toBeGreaterThanOrEqual(0);

    const nodes = (await c.cmd('query-named-block-nodes')).return as Record<string, unknown>[];
    expect(nodes.map((n) => [n['node-name'], n.drv])).toEqual([
      [d.node.name, 'raw'],
      [d.node.child('file')!.name, 'memory'],
    ]);
    expect(nodes[1]).toMatchObject({ iops: 0, bps: 0, image: { 'virtual-size': 1 << 20 } });
  });

  it('block_set_io_throttle changes a drive’s limits, and its I/O is then throttled on the real clock', async () => {
    await start();
    const d = await layer.openDrive({ id: 'disk0', driver: 'null', size: '1M' });
    const c = await client();
    const zero = { bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 };
    expect(await c.cmd('block_set_io_throttle', { ...zero, device: 'disk0', iops_rd: 20 }, 'set')).toEqual({ return: {}, id: 'set' });
    expect(d.getLimits()).toEqual({ iopsRead: 20, group: 'disk0' });
    expect(((await c.cmd('query-block')).return as { inserted: Record<string, unknown> }[])[0].inserted).toMatchObject({ iops_rd: 20, group: 'disk0' });
    // An empty bucket admits 20/10 + 1 = 3 reads at once, then one every 50 ms.
    const t0 = performance.now();
    await Promise.all(Array.from({ length: 6 }, () => d.read(0, 512)));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(120);
    // QEMU's checks, with its messages
    expect(await c.cmd('block_set_io_throttle', { ...zero, device: 'disk0', iops: -1 })).toEqual({
      error: { class: 'GenericError', desc: 'iops: bps/iops/max values must be within [0, 1000000000000000]' },
    });
    expect(await c.cmd('block_set_io_throttle', { ...zero, device: 'nope', iops: 5 }, 9)).toEqual({
      error: { class: 'DeviceNotFound', desc: "Device 'nope' not found" },
      id: 9,
    });
    expect((await c.cmd('block_set_io_throttle', { device: 'disk0' })).error).toEqual({ class: 'GenericError', desc: "Parameter 'bps' is missing" });
    // all zero: throttling off
    expect(await c.cmd('block_set_io_throttle', { ...zero, device: 'disk0' })).toEqual({ return: {} });
    expect(d.getLimits()).toBeNull();
  });

  it('sends BLOCK_IO_ERROR to negotiated clients for a drive opened after the server started, and cont resumes the paused drive', async () => {
    await start();
    const c = await client();
    const { client: fresh } = await Client.connect(path);
    clients.push(fresh);
    const d = await layer.openDrive({
      id: 'faulty',
      driver: 'blkdebug',
      rules: [{ event: 'write', code: 'ENOSPC', once: true }],
      file: { driver: 'memory', size: '1M' },
      werror: 'stop',
    });
    let settled = false;
    const write = d.write(4096, new Uint8Array(512).fill(3)).then(() => {
      settled = true;
    });
    await c.until(() => c.events.length > 0);
    expect(c.events[0]).toEqual({
      event: 'BLOCK_IO_ERROR',
      data: { device: 'faulty', 'node-name': d.node.name, operation: 'write', action: 'stop', nospace: true, reason: expect.stringContaining('ENOSPC') },
      timestamp: { seconds: expect.any(Number), microseconds: expect.any(Number) },
    });
    const ts = c.events[0].timestamp as { seconds: number; microseconds: number };
    expect(Math.abs(ts.seconds - Date.now() / 1000)).toBeLessThan(60);
    expect(ts.microseconds).toBeLessThan(1e6);
    expect(d.isPaused).toBe(true);
    expect(((await c.cmd('query-block')).return as Record<string, unknown>[])[0]['io-status']).toBe('nospace');
    expect(settled).toBe(false);
    expect(await c.cmd('cont', undefined, 'go')).toEqual({ return: {}, id: 'go' });
    await write;
    expect(d.isPaused).toBe(false);
    expect(((await c.cmd('query-block')).return as Record<string, unknown>[])[0]['io-status']).toBe('ok');
    expect((await d.read(4096, 1))[0]).toBe(3);
    // the client that never negotiated got no event
    expect(await fresh.cmd('qmp_capabilities')).toEqual({ return: {} });
    expect(fresh.events).toEqual([]);
  });

  it('keeps a negotiation state per client', async () => {
    await start();
    const a = await client();
    const { client: b } = await Client.connect(path);
    clients.push(b);
    expect(server.clientCount).toBe(2);
    expect(await a.cmd('query-block')).toEqual({ return: [] });
    expect((await b.cmd('query-block')).error?.class).toBe('CommandNotFound');
  });

  it('delegates block-export-add/del to the export manager; without one they are disabled', async () => {
    await start();
    const c = await client();
    expect(await c.cmd('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'n' })).toEqual({
      error: { class: 'GenericError', desc: 'The command block-export-add has been disabled for this instance' },
    });
    await server.close();

    const calls: [string, Record<string, unknown>][] = [];
    const manager: ExportManager = {
      async add(args) {
        calls.push(['add', args]);
        if (args.id === 'bad') throw new BlockError('EINVAL', "Node 'x' not found");
      },
      async del(args) {
        calls.push(['del', args]);
      },
    };
    await start(manager);
    const c2 = await client();
    expect(await c2.cmd('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'n', writable: true })).toEqual({ return: {} });
    expect(await c2.cmd('block-export-add', { type: 'nbd', id: 'bad', 'node-name': 'x' })).toEqual({ error: { class: 'GenericError', desc: "Node 'x' not found" } });
    expect(await c2.cmd('block-export-del', { id: 'e' })).toEqual({ return: {} });
    expect(calls).toEqual([
      ['add', { type: 'nbd', id: 'e', 'node-name': 'n', writable: true }],
      ['add', { type: 'nbd', id: 'bad', 'node-name': 'x' }],
      ['del', { id: 'e' }],
    ]);
    expect(((await c2.cmd('query-commands')).return as { name: string }[]).map((x) => x.name)).toContain('block-export-add');
  });

  it('quit answers, emits quit and closes the server and its connections', async () => {
    await start();
    const c = await client();
    const other = await client();
    const d = await layer.openDrive({ id: 'd', driver: 'null', size: '64K' });
    expect(d.listenerCount('io-error')).toBe(1);
    const quit = new Promise<void>((resolve) => server.once('quit', resolve));
    expect(await c.cmd('quit', undefined, 'bye')).toEqual({ return: {}, id: 'bye' });
    await quit;
    await server.close();
    await c.until(() => c.closed);
    await other.until(() => other.closed);
    await expect(Client.connect(path)).rejects.toThrow();
    // the server no longer listens to the drive
    expect(d.listenerCount('io-error')).toBe(0);
    expect(d.listenerCount('closed')).toBe(0);
  });

  it('listens on TCP too, on the port the system chose', async () => {
    server = new QmpServer(layer);
    await server.listen({ host: '127.0.0.1', port: 0 });
    const address = server.address() as net.AddressInfo;
    expect(address.port).toBeGreaterThan(0);
    const socket = net.connect(address.port, '127.0.0.1');
    const first = await new Promise<string>((resolve, reject) => {
      socket.once('data', (b) => resolve(b.toString()));
      socket.once('error', reject);
    });
    socket.destroy();
    expect(first.endsWith('\r\n')).toBe(true);
    expect(JSON.parse(first)).toHaveProperty('QMP.capabilities', []);
  });

  it('replaces a stale socket file but leaves a regular file alone', async () => {
    writeFileSync(path, 'not a socket');
    server = new QmpServer(layer);
    await expect(server.listen({ path })).rejects.toMatchObject({ code: 'EBUSY', message: expect.stringContaining('EADDRINUSE') });
    rmSync(path);
    // a socket left by a process that died without removing it
    const child = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(child.signal).toBe('SIGKILL');
    expect(lstatSync(path).isSocket()).toBe(true);
    await start();
    const c = await client();
    expect(await c.cmd('query-block')).toEqual({ return: [] });
  });

  it('does not take over a socket another server is listening on', async () => {
    const live = net.createServer();
    await new Promise<void>((r) => live.listen(path, r));
    try {
      server = new QmpServer(layer);
      await expect(server.listen({ path })).rejects.toMatchObject({ code: 'EBUSY', message: expect.stringContaining('EADDRINUSE') });
    } finally {
      await new Promise<void>((r) => live.close(() => r()));
    }
  });
});

const hasSocat = haveProgram('socat');
if (!hasSocat && process.env.CI === 'true') throw new Error('socat missing in CI: .ci/run must install it');
if (!hasSocat) console.log('QMP socat test skipped: install socat (apt-get install socat) to run it');

describe.skipIf(!hasSocat)('QMP server driven by socat', () => {
  it('answers a scripted session from an outside client', async () => {
    await start();
    await layer.openDrive({ id: 'd0', driver: 'null', size: '64K' });
    const script = '{"execute":"qmp_capabilities"}\n{"execute":"query-block","id":"b"}\n{"execute":"quit"}\n';
    const out = await new Promise<string>((resolve, reject) => {
      const child = execFile('socat', ['-t5', '-', `UNIX-CONNECT:${path}`], { timeout: 10_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
      child.stdin!.end(script);
    });
    const lines = out.split('\r\n').filter((l) => l.length > 0).map((l) => JSON.parse(l) as Message);
    expect(lines[0]).toHaveProperty('QMP');
    expect(lines[1]).toEqual({ return: {} });
    expect(lines[2]).toMatchObject({ return: [{ device: 'd0', inserted: { drv: 'null' } }], id: 'b' });
    expect(lines[3]).toEqual({ return: {} });
  });
});
