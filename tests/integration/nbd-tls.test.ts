import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, type Drive, NbdServer } from '../../src/index.js';
import * as P from '../../src/drivers/nbd/protocol.js';
import { isTlsError, loadPskFile, loadQemuTlsCredsDir, parsePskFile, tlsErrorText } from '../../src/drivers/nbd/tls.js';
import { RawNbdClient } from '../helpers/nbd-raw-client.js';
import { makeCerts } from '../helpers/tls-certs.js';
import { haveProgram, run } from '../helpers/tools.js';

const CI = process.env.CI === 'true';
const MiB = 1024 * 1024;


const haveOpenssl = haveProgram('openssl');
const haveQemuImg = haveProgram('qemu-img') && haveProgram('qemu-io');
const haveNbdinfo = haveProgram('nbdinfo');
if (CI && !haveOpenssl) throw new Error('openssl missing in CI: .ci/run must install openssl');
if (CI && !haveQemuImg) throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (CI && !haveNbdinfo) throw new Error('nbdinfo missing in CI: .ci/run must install libnbd-bin');
if (!haveOpenssl) console.log('NBD TLS tests skipped: install openssl (apt-get install openssl) to make their certificates');
if (!haveQemuImg) console.log('NBD TLS tests with qemu-img/qemu-io skipped: install qemu-utils (apt-get install qemu-utils) to run them');
if (!haveNbdinfo) console.log('NBD TLS test with nbdinfo skipped: install libnbd-bin (apt-get install libnbd-bin) to run it');

/** Sends NBD_OPT_STARTTLS on a raw connection, then runs the TLS handshake as a Node client. */
async function startTls(c: RawNbdClient, extra: tls.ConnectionOptions = {}): Promise<tls.TLSSocket> {
  expect((await c.option(P.NBD_OPT_STARTTLS))[0]?.type).toBe(P.NBD_REP_ACK);
  const secure = tls.connect({ socket: c.socket, ca: fs.readFileSync(path.join(dir, 'ca-cert.pem')), servername: 'localhost', ...extra });
  await new Promise<void>((resolve, reject) => {
    secure.once('secureConnect', resolve);
    secure.once('error', reject);
  });
  return secure;
}

/** Bytes read in exact counts from a TLS socket. */
class Stream {
  private buf = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private closed = false;
  constructor(readonly socket: tls.TLSSocket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    socket.on('error', () => {});
  }
  async read(n: number): Promise<Buffer> {
    while (this.buf.byteLength < n) {
      if (this.closed) throw new Error('closed');
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
      this.waiter = null;
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
  async option(option: number, data: Uint8Array = Buffer.alloc(0)): Promise<{ type: number; data: Buffer }[]> {
    this.socket.write(Buffer.concat([P.encodeOptionHeader(option, data.byteLength), data]));
    const replies: { type: number; data: Buffer }[] = [];
    for (;;) {
      const h = P.decodeOptionReplyHeader(await this.read(P.OPTION_REPLY_HEADER_SIZE));
      replies.push({ type: h.type, data: await this.read(h.length) });
      if (h.type === P.NBD_REP_ACK || h.type >= 0x80000000) return replies;
    }
  }
}

/** Greeting and client flags on a raw connection. */
async function newstyle(c: RawNbdClient): Promise<void> {
  await c.read(P.SERVER_GREETING_SIZE);
  c.write(Buffer.from([0, 0, 0, P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES]));
}

const layer = new BlockLayer();
let dir = '';
let image: Buffer;
let drive: Drive;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbd-tls-'));
  if (haveOpenssl) makeCerts(dir);
  image = Buffer.alloc(2 * MiB);
  for (let i = 0; i < image.byteLength; i += 4096) image.fill((i / 4096) & 0xff, i, i + 1000);
  drive = await layer.openDrive({ driver: 'memory', size: image.byteLength });
  await drive.write(0, image);
});

afterAll(async () => {
  await drive?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('TLS credentials files', () => {
  it('tlsErrorText: OpenSSL\'s multi-line error queue becomes one line, the reason first', () => {
    const queue = Object.assign(
      new Error('80ABCD:error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:../deps/openssl/openssl/ssl/statem/statem_clnt.c:1889:\n80ABCD:error:0A000197:SSL routines:other:shutdown while in init:ssl/x.c:1:\n'),
      { code: 'ERR_SSL_CERTIFICATE_VERIFY_FAILED' },
    );
    expect(tlsErrorText(queue)).toBe('certificate verify failed (ERR_SSL_CERTIFICATE_VERIFY_FAILED)');
    expect(tlsErrorText(Object.assign(new Error('80:error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:r.c:1601:SSL alert number 116\n'), { code: 'X' }))).toBe('tlsv13 alert certificate required (X, SSL alert number 116)');
    expect(tlsErrorText(Object.assign(new Error('self-signed certificate'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' }))).toBe('self-signed certificate (DEPTH_ZERO_SELF_SIGNED_CERT)');
    expect(tlsErrorText(new Error('first\nsecond'))).toBe('first');
    expect(isTlsError(queue)).toBe(true);
    expect(isTlsError(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }))).toBe(false);
  });

  it("parsePskFile reads QEMU's keys.psk lines and refuses malformed ones", () => {
    const ids = parsePskFile('alice:00ff10\n\nbob:ABCD\n');
    expect(Object.keys(ids)).toEqual(['alice', 'bob']);
    expect(ids.alice?.toString('hex')).toBe('00ff10');
    expect(ids.bob?.toString('hex')).toBe('abcd');
    expect(() => parsePskFile('alice 00ff')).toThrow(/line 1/);
    expect(() => parsePskFile('alice:0g')).toThrow(/hex/);
    expect(() => parsePskFile('a:00\na:11')).toThrow(/twice/);
  });

  it('loadPskFile and loadQemuTlsCredsDir reject missing files with ENOENT', async () => {
    await expect(loadPskFile(path.join(os.tmpdir(), 'no-such-dir-xyz', 'keys.psk'))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(loadQemuTlsCredsDir(path.join(os.tmpdir(), 'no-such-dir-xyz'), 'x509')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('NbdServer refuses tlsRequired without credentials and unusable credentials', () => {
    expect(() => new NbdServer({ tlsRequired: true })).toThrow(/tlsRequired/);
    expect(() => new NbdServer({ tls: { mode: 'x509', key: 'nope', cert: 'nope' } })).toThrow(/x509/);
    expect(() => new NbdServer({ tls: { mode: 'psk', identities: {} } })).toThrow(/identity/);
  });
});

describe.skipIf(!haveOpenssl)('NbdServer with x509 TLS (required)', () => {
  let server: NbdServer;
  let port: number;
  let scratch: Drive;

  beforeAll(async () => {
    const creds = await loadQemuTlsCredsDir(dir, 'x509');
    scratch = await layer.openDrive({ driver: 'memory', size: MiB });
    server = new NbdServer({ exports: [{ name: 'img', drive }, { name: 'scratch', drive: scratch }], tls: creds, handshakeTimeoutMs: 5000 });
    server.on('error', () => {});
    port = ((await server.listen({ host: '127.0.0.1', port: 0 })) as { port: number }).port;
  });
  afterAll(async () => {
    await server?.close();
    await scratch?.close();
  });

  it.skipIf(!haveQemuImg)('qemu-io writes over TLS (plain, FUA, write -z) land on the drive', async () => {
    const r = await run('qemu-io', [
      '--object',
      `tls-creds-x509,id=tls0,endpoint=client,dir=${dir}`,
      '--image-opts',
      `driver=nbd,host=127.0.0.1,port=${port},export=scratch,tls-creds=tls0`,
      '-c',
      'write -P 0x5a 0 200k',
      '-c',
      'write -f -P 0xa5 300k 64k',
      '-c',
      'write -z 8k 4k',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const got = await scratch.read(0, 400 * 1024);
    const want = Buffer.alloc(400 * 1024);
    want.fill(0x5a, 0, 200 * 1024);
    want.fill(0, 8 * 1024, 12 * 1024);
    want.fill(0xa5, 300 * 1024, 364 * 1024);
    expect(Buffer.from(got).equals(want)).toBe(true);
  });

  it.skipIf(!haveQemuImg)('qemu-img info over tls-creds-x509 sees the export', async () => {
    const r = await run('qemu-img', ['info', '--output=json', '--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${dir}`, '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},export=img,tls-creds=tls0`]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)['virtual-size']).toBe(image.byteLength);
  });

  it.skipIf(!haveQemuImg)('qemu-img convert over TLS is byte-identical to the drive', async () => {
    const out = path.join(dir, 'copy.raw');
    const r = await run('qemu-img', ['convert', '-O', 'raw', '--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${dir}`, '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},export=img,tls-creds=tls0`, out]);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readFileSync(out).equals(image)).toBe(true);
  });

  it.skipIf(!haveNbdinfo)('nbdinfo nbds:// with tls-certificates reports TLS and the size', async () => {
    const r = await run('nbdinfo', [`nbds://127.0.0.1:${port}/img?tls-certificates=${dir}`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/with TLS/);
    expect(r.stdout).toMatch(new RegExp(`export-size: ${image.byteLength}`));
  });

  it.skipIf(!haveQemuImg)('a plain qemu-img client is refused (TLS required)', async () => {
    const r = await run('qemu-img', ['info', `nbd://127.0.0.1:${port}/img`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/TLS/);
  });

  it('without TLS, INFO and GO get ERR_TLS_REQD, ABORT is honoured', async () => {
    const c = await RawNbdClient.connect(port);
    await newstyle(c);
    for (const opt of [P.NBD_OPT_INFO, P.NBD_OPT_GO]) {
      const [r] = await c.option(opt, P.encodeInfoRequest('img'));
      expect(r?.type).toBe(P.NBD_REP_ERR_TLS_REQD);
    }
    expect((await c.option(P.NBD_OPT_LIST))[0]?.type).toBe(P.NBD_REP_ERR_TLS_REQD);
    expect((await c.option(P.NBD_OPT_ABORT))[0]?.type).toBe(P.NBD_REP_ACK);
    await c.closed;
  });

  it('NBD_OPT_EXPORT_NAME without TLS is disconnected with no reply', async () => {
    const c = await RawNbdClient.connect(port);
    await newstyle(c);
    c.write(Buffer.concat([P.encodeOptionHeader(P.NBD_OPT_EXPORT_NAME, 3), Buffer.from('img')]));
    await c.closed;
    expect(c.pending).toBe(0);
  });

  it('bytes sent after STARTTLS before its reply are not TLS: the client is disconnected', async () => {
    const c = await RawNbdClient.connect(port);
    await newstyle(c);
    c.write(Buffer.concat([P.encodeOptionHeader(P.NBD_OPT_STARTTLS, 0), Buffer.from('not a ClientHello')]));
    await c.closed;
  });

  it('STARTTLS with data gets ERR_INVALID; after the upgrade options work, a second STARTTLS gets ERR_INVALID', async () => {
    const c = await RawNbdClient.connect(port);
    await newstyle(c);
    expect((await c.option(P.NBD_OPT_STARTTLS, Buffer.from([1])))[0]?.type).toBe(P.NBD_REP_ERR_INVALID);
    const secure = await startTls(c);
    const s = new Stream(secure);
    expect((await s.option(P.NBD_OPT_STARTTLS))[0]?.type).toBe(P.NBD_REP_ERR_INVALID);
    const list = await s.option(P.NBD_OPT_LIST);
    expect(list.map((r) => r.type)).toEqual([P.NBD_REP_SERVER, P.NBD_REP_SERVER, P.NBD_REP_ACK]);
    const info = await s.option(P.NBD_OPT_INFO, P.encodeInfoRequest('img'));
    expect(info[0]?.type).toBe(P.NBD_REP_INFO);
    expect(Number(info[0]?.data.readBigUInt64BE(2))).toBe(image.byteLength);
    expect((await s.option(P.NBD_OPT_ABORT))[0]?.type).toBe(P.NBD_REP_ACK);
    secure.destroy();
  });
});

describe.skipIf(!haveOpenssl)('NbdServer with x509 TLS and verifyPeer', () => {
  it('a client certificate signed by another CA is refused after the handshake', async () => {
    const creds = await loadQemuTlsCredsDir(dir, 'x509', { verifyPeer: true });
    await using server = new NbdServer({ exports: [{ name: 'img', drive }], tls: creds, handshakeTimeoutMs: 5000 });
    const errors: string[] = [];
    server.on('error', (e) => errors.push(e.error.message));
    const port = ((await server.listen({ host: '127.0.0.1', port: 0 })) as { port: number }).port;
    const read = (f: string) => fs.readFileSync(path.join(dir, f));
    // The CA's own client certificate is accepted: options work inside TLS.
    const good = await RawNbdClient.connect(port);
    await newstyle(good);
    const ok = new Stream(await startTls(good, { cert: read('client-cert.pem'), key: read('client-key.pem') }));
    expect((await ok.option(P.NBD_OPT_LIST)).map((r) => r.type)).toEqual([P.NBD_REP_SERVER, P.NBD_REP_ACK]);
    ok.socket.destroy();
    const bad = await RawNbdClient.connect(port);
    await newstyle(bad);
    const secure = await startTls(bad, { cert: read('rogue-cert.pem'), key: read('rogue-key.pem') }).catch(() => null);
    if (secure) {
      // TLS 1.3: the client finishes its side before the server has checked the certificate.
      const s = new Stream(secure);
      await expect(s.option(P.NBD_OPT_LIST)).rejects.toThrow(/closed/);
    }
    await bad.closed;
    expect(errors.join('\n')).toMatch(/client certificate refused/);
  });

  it('TLS failures are reported in one line, the reason first: not TLS after STARTTLS, no client certificate, one from another CA', async () => {
    const creds = await loadQemuTlsCredsDir(dir, 'x509', { verifyPeer: true });
    await using server = new NbdServer({ exports: [{ name: 'img', drive }], tls: creds, handshakeTimeoutMs: 5000 });
    const errors: string[] = [];
    const reasons: string[] = [];
    server.on('error', (e) => errors.push(e.error.message));
    server.on('disconnect', (c) => reasons.push(c.reason ?? '(none)'));
    const port = ((await server.listen({ host: '127.0.0.1', port: 0 })) as { port: number }).port;
    const read = (f: string) => fs.readFileSync(path.join(dir, f));
    const expected = [
      /^TLS handshake failed: wrong version number \(ERR_SSL_WRONG_VERSION_NUMBER\)$/,
      /^TLS handshake failed: peer did not return a certificate \(ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE\)$/,
      /^TLS handshake failed: client certificate refused: unable to verify the first certificate \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)$/,
    ];
    for (const [i, how] of (['garbage', 'no certificate', 'rogue'] as const).entries()) {
      const c = await RawNbdClient.connect(port);
      await newstyle(c);
      if (how === 'garbage') {
        expect((await c.option(P.NBD_OPT_STARTTLS))[0]?.type).toBe(P.NBD_REP_ACK);
        c.write(Buffer.alloc(64, 0x41));
      } else {
        const extra = how === 'rogue' ? { cert: read('rogue-cert.pem'), key: read('rogue-key.pem') } : {};
        const secure = await startTls(c, extra).catch(() => null);
        secure?.on('error', () => {});
        // TLS 1.3: the client is through before the server has judged its certificate; a request shows the hang-up.
        secure?.write(P.encodeOptionHeader(P.NBD_OPT_LIST, 0));
      }
      await c.closed;
      for (let k = 0; k < 100 && reasons.length <= i; k++) await new Promise((r) => setTimeout(r, 10));
      expect(errors[i], how).toMatch(expected[i] as RegExp);
      expect(reasons[i], how).toMatch(expected[i] as RegExp);
    }
    expect(errors).toHaveLength(3);
  });

  it.skipIf(!haveQemuImg)('a client with a certificate from the CA gets in; one without is refused', async () => {
    const creds = await loadQemuTlsCredsDir(dir, 'x509', { verifyPeer: true });
    await using server = new NbdServer({ exports: [{ name: 'img', drive }], tls: creds, handshakeTimeoutMs: 5000 });
    server.on('error', () => {});
    const port = ((await server.listen({ host: '127.0.0.1', port: 0 })) as { port: number }).port;
    const withCert = await run('qemu-img', ['info', '--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${dir}`, '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},export=img,tls-creds=tls0`]);
    expect(withCert.code, withCert.stderr).toBe(0);
    const caOnly = path.join(dir, 'ca-only');
    fs.mkdirSync(caOnly, { recursive: true });
    fs.copyFileSync(path.join(dir, 'ca-cert.pem'), path.join(caOnly, 'ca-cert.pem'));
    const without = await run('qemu-img', ['info', '--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${caOnly}`, '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},export=img,tls-creds=tls0`]);
    expect(without.code).not.toBe(0);
  });
});

describe('NbdServer with tlsRequired: false', () => {
  it.skipIf(!haveOpenssl)('nothing negotiated before STARTTLS carries over: structured replies must be asked for again', async () => {
    const creds = await loadQemuTlsCredsDir(dir, 'x509');
    await using server = new NbdServer({ exports: [{ name: 'img', drive }], tls: creds, tlsRequired: false });
    const port = ((await server.listen({ host: '127.0.0.1', port: 0 })) as { port: number }).port;
    const c = await RawNbdClient.connect(port);
    await newstyle(c);
    expect((await c.option(P.NBD_OPT_STRUCTURED_REPLY))[0]?.type).toBe(P.NBD_REP_ACK);
    const s = new Stream(await startTls(c));
    const query = P.encodeMetaContextRequest('img', [P.NBD_META_BASE_ALLOCATION]);
    expect((await s.option(P.NBD_OPT_SET_META_CONTEXT, query))[0]?.type).toBe(P.NBD_REP_ERR_INVALID);
    expect((await s.option(P.NBD_OPT_STRUCTURED_REPLY))[0]?.type).toBe(P.NBD_REP_ACK);
    expect((await s.option(P.NBD_OPT_SET_META_CONTEXT, query)).map((r) => r.type)).toEqual([P.NBD_REP_META_CONTEXT, P.NBD_REP_ACK]);
    s.socket.destroy();
  });

  it.skipIf(!haveOpenssl)('a plain client may select an export without TLS', async () => {
    const creds = await loadQemuTlsCredsDir(dir, 'x509');
    await using server = new NbdServer({ exports: [{ name: 'img', drive }], tls: creds, tlsRequired: false });
    const port = ((await server.listen({ host: '127.0.0.1', port: 0 })) as { port: number }).port;
    const c = await RawNbdClient.connect(port);
    const r = await c.handshake('img');
    expect(r.size).toBe(image.byteLength);
    c.destroy();
  });

  it('without credentials STARTTLS is refused with ERR_POLICY', async () => {
    await using server = new NbdServer({ exports: [{ name: 'img', drive }] });
    const port = ((await server.listen({ host: '127.0.0.1', port: 0 })) as { port: number }).port;
    const c = await RawNbdClient.connect(port);
    await newstyle(c);
    expect((await c.option(P.NBD_OPT_STARTTLS))[0]?.type).toBe(P.NBD_REP_ERR_POLICY);
    c.destroy();
  });
});

describe('NbdServer with PSK TLS', () => {
  let server: NbdServer;
  let port: number;
  const key = '0123456789abcdef0123456789abcdef';

  beforeAll(async () => {
    const pskDir = path.join(dir, 'psk');
    fs.mkdirSync(pskDir, { recursive: true });
    fs.writeFileSync(path.join(pskDir, 'keys.psk'), `alice:${key}\n`);
    server = new NbdServer({ exports: [{ name: 'img', drive }], tls: await loadQemuTlsCredsDir(pskDir, 'psk'), handshakeTimeoutMs: 5000 });
    server.on('error', () => {});
    port = ((await server.listen({ host: '127.0.0.1', port: 0 })) as { port: number }).port;
  });
  afterAll(async () => {
    await server?.close();
  });

  async function qemuPsk(user: string, hex: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const d = fs.mkdtempSync(path.join(dir, 'client-psk-'));
    fs.writeFileSync(path.join(d, 'keys.psk'), `${user}:${hex}\n`);
    return run('qemu-img', ['info', '--output=json', '--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${d},username=${user}`, '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},export=img,tls-creds=tls0`]);
  }

  it.skipIf(!haveQemuImg)('qemu-img with tls-creds-psk and the right key sees the export', async () => {
    const r = await qemuPsk('alice', key);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)['virtual-size']).toBe(image.byteLength);
  });

  it.skipIf(!haveQemuImg)('qemu-img with a wrong key or an unknown identity fails the handshake', async () => {
    const wrong = await qemuPsk('alice', 'ff'.repeat(16));
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/TLS/);
    const unknown = await qemuPsk('bob', key);
    expect(unknown.code).not.toBe(0);
  });

  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    it(`a ${version} PSK client (Node) negotiates and lists the exports`, async () => {
      const c = await RawNbdClient.connect(port);
      await newstyle(c);
      expect((await c.option(P.NBD_OPT_STARTTLS))[0]?.type).toBe(P.NBD_REP_ACK);
      const secure = tls.connect({
        socket: c.socket,
        minVersion: version,
        maxVersion: version,
        ciphers: version === 'TLSv1.2' ? 'PSK' : 'TLS_AES_128_GCM_SHA256',
        checkServerIdentity: () => undefined,
        pskCallback: () => ({ identity: 'alice', psk: Buffer.from(key, 'hex') }),
      });
      await new Promise<void>((resolve, reject) => {
        secure.once('secureConnect', resolve);
        secure.once('error', reject);
      });
      expect(secure.getProtocol()).toBe(version);
      const s = new Stream(secure);
      expect((await s.option(P.NBD_OPT_LIST)).map((r) => r.type)).toEqual([P.NBD_REP_SERVER, P.NBD_REP_ACK]);
      secure.destroy();
    });
  }

  it.skipIf(!haveNbdinfo)('nbdinfo with tls-psk-file works too', async () => {
    const r = await run('nbdinfo', [`nbds://alice@127.0.0.1:${port}/img?tls-psk-file=${path.join(dir, 'psk', 'keys.psk')}`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/with TLS/);
  });
});
