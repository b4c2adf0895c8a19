import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockError, BlockLayer, type Drive, NbdServer, openImage } from '../../src/index.js';
import { loadQemuTlsCredsDir, type NbdTlsOptions } from '../../src/drivers/nbd/tls.js';
import { makeCerts } from '../helpers/tls-certs.js';
import { haveProgram, waitForPort } from '../helpers/tools.js';

const CI = process.env.CI === 'true';
const MiB = 1024 * 1024;
const haveOpenssl = haveProgram('openssl');
const haveQemuNbd = haveProgram('qemu-nbd');
if (CI && !haveOpenssl) throw new Error('openssl missing in CI: .ci/run must install openssl');
if (CI && !haveQemuNbd) throw new Error('qemu-nbd missing in CI: .ci/run must install qemu-utils');
if (!haveOpenssl) console.log('nbd client x509 tests skipped: install openssl (apt-get install openssl) to make their certificates');
if (!haveQemuNbd) console.log('nbd client TLS tests against qemu-nbd skipped: install qemu-utils (apt-get install qemu-utils) to run them');

const layer = new BlockLayer();
let dir = '';
let pskDir = '';
let drive: Drive;
const image = Buffer.alloc(2 * MiB);
for (let i = 0; i < image.length; i += 512) image.writeUInt32BE(i ^ 0x5a5a5a5a, i);
const PSK = '00112233445566778899aabbccddeeff';

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbd-client-tls-'));
  if (haveOpenssl) makeCerts(dir);
  pskDir = path.join(dir, 'psk');
  fs.mkdirSync(pskDir);
  fs.writeFileSync(path.join(pskDir, 'keys.psk'), `qemu:${PSK}\nalice:${'ab'.repeat(16)}\n`);
  drive = await layer.openDrive({ driver: 'memory', size: image.length });
  await drive.write(0, image);
});
afterAll(async () => {
  await drive?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const inet = (port: number) => ({ type: 'inet' as const, host: '127.0.0.1', port });

/** Our server with the given TLS; counts clients that got as far as selecting an export. */
async function serve(tls?: NbdTlsOptions, extra: { tlsRequired?: boolean } = {}) {
  const server = new NbdServer({ exports: [{ name: 'img', drive }], ...(tls ? { tls } : {}), ...extra, handshakeTimeoutMs: 5000 });
  server.on('error', () => undefined);
  let selected = 0;
  server.on('connect', () => selected++);
  const a = await server.listen({ host: '127.0.0.1', port: 0 });
  if (!('port' in a)) throw new Error('expected TCP');
  return { server, port: a.port, selected: () => selected };
}

async function roundTrip(d: Drive): Promise<void> {
  expect(Buffer.from(await d.read(4096, 65536)).equals(image.subarray(4096, 4096 + 65536))).toBe(true);
  if (!d.readOnly) {
    const data = Buffer.alloc(8192, 0xc3);
    await d.write(MiB, data);
    await d.flush();
    expect(Buffer.from(await d.read(MiB, 8192)).equals(data)).toBe(true);
    await d.write(MiB, image.subarray(MiB, MiB + 8192));
  }
}

describe.skipIf(!haveOpenssl)('the nbd driver with x509 TLS against our NbdServer', () => {
  let srv: Awaited<ReturnType<typeof serve>>;
  beforeAll(async () => {
    srv = await serve(await loadQemuTlsCredsDir(dir, 'x509'));
  });
  afterAll(async () => {
    await srv?.server.close();
  });

  it('a tls-creds-x509 client dir (ca-cert.pem) verifies the server by its IP and reads and writes', async () => {
    const d = await layer.openDrive({ driver: 'nbd', server: inet(srv.port), export: 'img', tls: { mode: 'x509', dir } });
    expect(d.node.info()).toMatchObject({ tls: 'x509' });
    await roundTrip(d);
    await d.close();
  });

  it('tlsHostname names the certificate to expect (localhost is in it); and openImage takes nbds://…?tls-certificates=', async () => {
    const d = await layer.openDrive({ driver: 'nbd', server: inet(srv.port), export: 'img', tls: { mode: 'x509', ca: fs.readFileSync(path.join(dir, 'ca-cert.pem'), 'utf8') }, tlsHostname: 'localhost' });
    await roundTrip(d);
    await d.close();
    const i = await openImage(`nbds://127.0.0.1:${srv.port}/img?tls-certificates=${dir}`, {}, layer);
    expect(i.length).toBe(image.length);
    expect(Buffer.from(await i.read(0, 4096)).equals(image.subarray(0, 4096))).toBe(true);
    await i.close();
  });

  it('a server certificate from another CA is EACCES with the reason, and no export is selected in plain text', async () => {
    const before = srv.selected();
    const err = await layer
      .openDrive({ driver: 'nbd', server: inet(srv.port), export: 'img', tls: { mode: 'x509', ca: fs.readFileSync(path.join(dir, 'rogue-ca-cert.pem'), 'utf8') } })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BlockError);
    expect(err).toMatchObject({ code: 'EACCES', message: expect.stringMatching(/TLS handshake with 127\.0\.0\.1:\d+ failed: .*(certificate|verify)/i) });
    expect(srv.selected()).toBe(before);
  });

  it('a certificate that does not name tlsHostname is EACCES naming the host', async () => {
    const err = await layer.openDrive({ driver: 'nbd', server: inet(srv.port), export: 'img', tls: { mode: 'x509', dir }, tlsHostname: 'disk.example.org' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'EACCES', message: expect.stringContaining('disk.example.org') });
  });

  it('without tls the client is refused (the server requires TLS)', async () => {
    await expect(layer.openDrive({ driver: 'nbd', server: inet(srv.port), export: 'img' })).rejects.toMatchObject({ code: 'ENOTSUP', message: expect.stringContaining('requires TLS') });
  });

  it('a server that verifies its peers accepts the client certificate of the dir and refuses a client without one', async () => {
    const strict = await serve(await loadQemuTlsCredsDir(dir, 'x509', { verifyPeer: true }));
    try {
      const d = await layer.openDrive({ driver: 'nbd', server: inet(strict.port), export: 'img', tls: { mode: 'x509', dir }, readOnly: true });
      await roundTrip(d);
      await d.close();
      const ca = fs.readFileSync(path.join(dir, 'ca-cert.pem'), 'utf8');
      const err = await layer.openDrive({ driver: 'nbd', server: inet(strict.port), export: 'img', tls: { mode: 'x509', ca }, readOnly: true }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BlockError);
      // The server's alert, in one line with the reason first (not 'peer closed the connection').
      expect(err).toMatchObject({ code: 'EACCES', message: expect.stringMatching(/^NBD TLS (handshake|session) with 127\.0\.0\.1:\d+ failed: [^\n(]*certificate[^\n]* \(ERR_SSL_[A-Z0-9_]+[^\n]*\)$/) });
    } finally {
      await strict.server.close();
    }
  });
});

describe('the nbd driver with TLS against servers that do not do it as asked', () => {
  it('a server without TLS refuses STARTTLS: EACCES, and the client does not fall back to plain text', async () => {
    const plain = await serve();
    try {
      const err = await layer.openDrive({ driver: 'nbd', server: inet(plain.port), export: 'img', tls: { mode: 'psk', key: PSK } }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'EACCES', message: expect.stringContaining('refused STARTTLS') });
      expect(plain.selected()).toBe(0);
    } finally {
      await plain.server.close();
    }
  });

  it('bad tls options are EINVAL naming the field', async () => {
    await expect(layer.openDrive({ driver: 'nbd', server: inet(1), tls: { mode: 'psk' } })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringContaining('tls') });
    await expect(layer.openDrive({ driver: 'nbd', server: inet(1), tls: { mode: 'psk', key: 'xyz' } })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(layer.openDrive({ driver: 'nbd', server: inet(1), tls: { mode: 'kerberos' } })).rejects.toMatchObject({ code: 'EINVAL' });
  });
});

describe('the nbd driver with PSK TLS against our NbdServer', () => {
  let srv: Awaited<ReturnType<typeof serve>>;
  beforeAll(async () => {
    srv = await serve(await loadQemuTlsCredsDir(pskDir, 'psk'));
  });
  afterAll(async () => {
    await srv?.server.close();
  });

  it('a tls-creds-psk dir (username qemu by default), a keys.psk file with a username, and a hex key all work', async () => {
    for (const tls of [
      { mode: 'psk', dir: pskDir },
      { mode: 'psk', file: path.join(pskDir, 'keys.psk'), username: 'alice' },
      { mode: 'psk', username: 'alice', key: 'ab'.repeat(16) },
    ]) {
      const d = await layer.openDrive({ driver: 'nbd', server: inet(srv.port), export: 'img', tls });
      await roundTrip(d);
      await d.close();
    }
    const i = await openImage(`nbds://alice@127.0.0.1:${srv.port}/img?tls-psk-file=${path.join(pskDir, 'keys.psk')}`, {}, layer);
    expect(i.length).toBe(image.length);
    await i.close();
  });

  it('a wrong key is EACCES; an unknown username in the keys file is ENOENT before connecting', async () => {
    const before = srv.selected();
    await expect(layer.openDrive({ driver: 'nbd', server: inet(srv.port), export: 'img', tls: { mode: 'psk', key: 'ff'.repeat(16) } })).rejects.toMatchObject({ code: 'EACCES' });
    expect(srv.selected()).toBe(before);
    await expect(layer.openDrive({ driver: 'nbd', server: inet(srv.port), export: 'img', tls: { mode: 'psk', dir: pskDir, username: 'mallory' } })).rejects.toMatchObject({
      code: 'ENOENT',
      message: expect.stringContaining('mallory'),
    });
  });

  it('requests wait across a reconnection over TLS too', async () => {
    const d = await layer.openDrive({ driver: 'nbd', server: inet(srv.port), export: 'img', tls: { mode: 'psk', dir: pskDir }, reconnectDelay: 10, readOnly: true });
    await srv.server.close();
    const waiting = d.read(0, 4096);
    srv = await (async () => {
      const server = new NbdServer({ exports: [{ name: 'img', drive }], tls: await loadQemuTlsCredsDir(pskDir, 'psk') });
      server.on('error', () => undefined);
      await server.listen({ host: '127.0.0.1', port: srv.port });
      return { server, port: srv.port, selected: () => 0 };
    })();
    expect(Buffer.from(await waiting).equals(image.subarray(0, 4096))).toBe(true);
    await d.close();
  });
});

describe.skipIf(!haveQemuNbd)('the nbd driver with TLS against qemu-nbd', () => {
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) process.kill(c.pid, 'SIGTERM');
  });

  async function qemuNbd(object: string): Promise<number> {
    const file = path.join(dir, 'disk.raw');
    fs.writeFileSync(file, image);
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const child = spawn('qemu-nbd', ['--object', object, '--tls-creds', 'tls0', '-f', 'raw', '-x', 'img', '-b', '127.0.0.1', '-p', String(port), '--persistent', file], { stdio: ['ignore', 'ignore', 'inherit'] });
    children.push(child);
    if (await waitForPort(port)) return port;
    throw new Error('qemu-nbd did not start');
  }

  it.skipIf(!haveOpenssl)('tls-creds-x509 (GnuTLS): reads and writes with the CA of the dir; another CA is EACCES', async () => {
    const port = await qemuNbd(`tls-creds-x509,id=tls0,endpoint=server,dir=${dir},verify-peer=off`);
    const d = await layer.openDrive({ driver: 'nbd', server: inet(port), export: 'img', tls: { mode: 'x509', dir } });
    await roundTrip(d);
    await d.close();
    const rogue = fs.readFileSync(path.join(dir, 'rogue-ca-cert.pem'), 'utf8');
    await expect(layer.openDrive({ driver: 'nbd', server: inet(port), export: 'img', tls: { mode: 'x509', ca: rogue } })).rejects.toMatchObject({ code: 'EACCES' });
  });

  it('tls-creds-psk (GnuTLS): reads and writes with the key of username qemu; a wrong key is EACCES', async () => {
    const port = await qemuNbd(`tls-creds-psk,id=tls0,endpoint=server,dir=${pskDir}`);
    const d = await layer.openDrive({ driver: 'nbd', server: inet(port), export: 'img', tls: { mode: 'psk', dir: pskDir } });
    await roundTrip(d);
    await d.close();
    await expect(layer.openDrive({ driver: 'nbd', server: inet(port), export: 'img', tls: { mode: 'psk', key: 'ee'.repeat(16) } })).rejects.toMatchObject({ code: 'EACCES' });
  });
});
