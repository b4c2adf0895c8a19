// QMP integers past 2^53, sent as raw text (JSON.stringify would round them first), with the
// replies qemu-storage-daemon 7.2 gives: int64 values are taken, values outside int64 refused.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { QmpServer } from '../../src/qmp/server.js';

let dir: string;
let layer: BlockLayer;
let server: QmpServer;
let socket: net.Socket | undefined;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'qmp-big-'));
  layer = new BlockLayer();
  server = new QmpServer(layer);
});

afterEach(async () => {
  socket?.destroy();
  await server.close();
  await layer.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A QMP connection that sends lines as written and returns the replies' text. */
async function connect(): Promise<(line: string) => Promise<string>> {
  const path = join(dir, 'qmp.sock');
  await server.listen({ path });
  const s = net.connect(path);
  socket = s;
  s.setEncoding('utf8');
  let buffer = '';
  const lines: string[] = [];
  let wake: (() => void) | null = null;
  s.on('data', (d: string) => {
    buffer += d;
    for (let at = buffer.indexOf('\n'); at >= 0; at = buffer.indexOf('\n')) {
      const line = buffer.slice(0, at).trim();
      buffer = buffer.slice(at + 1);
      if (line !== '' && !line.includes('"event"')) lines.push(line);
    }
    wake?.();
  });
  const next = async () => {
    while (lines.length === 0) await new Promise<void>((r) => (wake = r));
    return lines.shift()!;
  };
  await next(); // greeting
  const send = async (line: string) => {
    s.write(`${line}\n`);
    return next();
  };
  expect(await send('{"execute":"qmp_capabilities"}')).toBe('{"return":{}}');
  return send;
}

const notInteger = (member: string) => `{"error":{"class":"GenericError","desc":"Invalid parameter type for '${member}', expected: integer"}}`;

describe('QMP integers past 2^53', () => {
  it('takes a speed anywhere in int64 (2^62, 2^63 - 1) and refuses one outside it, as QSD', async () => {
    const send = await connect();
    for (const n of ['s0', 't0']) expect(await send(`{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"${n}","size":1048576}}`)).toBe('{"return":{}}');
    expect(await send('{"execute":"blockdev-mirror","arguments":{"job-id":"m0","device":"s0","target":"t0","sync":"full","speed":4611686018427387904}}')).toBe('{"return":{}}');
    expect(await send('{"execute":"block-job-set-speed","arguments":{"device":"m0","speed":9223372036854775807}}')).toBe('{"return":{}}');
    expect(await send('{"execute":"block-job-set-speed","arguments":{"device":"m0","speed":9223372036854775808}}')).toBe(notInteger('speed'));
    expect(await send('{"execute":"block-job-set-speed","arguments":{"device":"m0","speed":-9223372036854775808}}')).toBe(
      `{"error":{"class":"GenericError","desc":"Parameter 'speed' expects a non-negative value"}}`,
    );
    expect(await send('{"execute":"block-job-set-speed","arguments":{"device":"m0","speed":-9223372036854775809}}')).toBe(notInteger('speed'));
    expect(await send('{"execute":"job-cancel","arguments":{"id":"m0"},"id":12345678901234567890}')).toBe('{"return":{},"id":12345678901234567890}');
  });

  it('refuses a size outside int64 as QSD does, and one past 2^53 it cannot hold exactly with its own error', async () => {
    const send = await connect();
    expect(await send('{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"b","size":9223372036854775808}}')).toBe(notInteger('size'));
    expect(await send('{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"b","size":18446744073709551615}}')).toBe(notInteger('size'));
    expect(await send('{"execute":"block_resize","arguments":{"node-name":"b","size":9223372036854775808}}')).toBe(notInteger('size'));
    const odd = JSON.parse(await send('{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"b","size":9007199254740993}}')) as { error: { desc: string } };
    expect(odd.error.desc).toContain('9007199254740993');
  });
});
