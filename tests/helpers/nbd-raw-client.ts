import net from 'node:net';
import * as P from '../../src/drivers/nbd/protocol.js';

/** A hand-driven NBD connection for hostile-client tests: raw bytes in, exact byte counts out. */
export class RawNbdClient {
  readonly socket: net.Socket;
  private chunks: Buffer[] = [];
  private size = 0;
  private waiter: (() => void) | null = null;
  /** Resolves when the server closed the connection. */
  readonly closed: Promise<void>;
  isClosed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.size += d.byteLength;
      this.wake();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.isClosed = true;
        this.wake();
        resolve();
      }),
    );
  }

  static connect(port: number): Promise<RawNbdClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => resolve(new RawNbdClient(s)));
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** Exactly `n` bytes; rejects if the connection closes first. */
  async read(n: number): Promise<Buffer> {
    while (this.size < n) {
      if (this.isClosed) throw new Error(`connection closed with ${this.size} of ${n} bytes`);
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
    // Copies only the chunks this read needs (joining all of them each time made big backlogs quadratic).
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0] as Buffer;
      const k = Math.min(c.byteLength, n - filled);
      c.copy(out, filled, 0, k);
      filled += k;
      if (k === c.byteLength) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.size -= n;
    return out;
  }

  write(b: Uint8Array): void {
    this.socket.write(b);
  }

  /** Bytes received and not read yet. */
  get pending(): number {
    return this.size;
  }

  /** Greeting, client flags (FIXED_NEWSTYLE | NO_ZEROES), NBD_OPT_EXPORT_NAME: returns size and flags. */
  async handshake(exportName: string): Promise<{ size: number; flags: number }> {
    const g = await this.read(P.SERVER_GREETING_SIZE);
    if (g.readBigUInt64BE(0) !== P.NBD_INIT_MAGIC) throw new Error('no NBDMAGIC');
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES);
    const name = Buffer.from(exportName);
    this.write(Buffer.concat([flags, P.encodeOptionHeader(P.NBD_OPT_EXPORT_NAME, name.byteLength), name]));
    const r = await this.read(10);
    return { size: Number(r.readBigUInt64BE(0)), flags: r.readUInt16BE(8) };
  }

  /** Sends an option and collects its replies up to the final ACK or error. */
  async option(option: number, data: Uint8Array = Buffer.alloc(0)): Promise<{ type: number; data: Buffer }[]> {
    this.write(Buffer.concat([P.encodeOptionHeader(option, data.byteLength), data]));
    const replies: { type: number; data: Buffer }[] = [];
    for (;;) {
      const h = P.decodeOptionReplyHeader(await this.read(P.OPTION_REPLY_HEADER_SIZE));
      if (h.option !== option) throw new Error(`reply to option ${h.option}, expected ${option}`);
      replies.push({ type: h.type, data: await this.read(h.length) });
      if (h.type === P.NBD_REP_ACK || h.type >= 0x80000000) return replies;
    }
  }

  /** Greeting and client flags, then STRUCTURED_REPLY, SET_META_CONTEXT base:allocation and GO. */
  async structuredGo(exportName: string): Promise<{ size: number; flags: number; contextId: number }> {
    await this.read(P.SERVER_GREETING_SIZE);
    this.write(Buffer.from([0, 0, 0, P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES]));
    const sr = await this.option(P.NBD_OPT_STRUCTURED_REPLY);
    if (sr[0]?.type !== P.NBD_REP_ACK) throw new Error('structured replies refused');
    const meta = await this.option(P.NBD_OPT_SET_META_CONTEXT, P.encodeMetaContextRequest(exportName, [P.NBD_META_BASE_ALLOCATION]));
    const ctx = meta.find((r) => r.type === P.NBD_REP_META_CONTEXT);
    if (!ctx) throw new Error('base:allocation not selected');
    const go = await this.option(P.NBD_OPT_GO, P.encodeInfoRequest(exportName));
    const info = go.find((r) => r.type === P.NBD_REP_INFO && r.data.readUInt16BE(0) === P.NBD_INFO_EXPORT);
    if (!info || go[go.length - 1]?.type !== P.NBD_REP_ACK) throw new Error('GO failed');
    return { size: Number(info.data.readBigUInt64BE(2)), flags: info.data.readUInt16BE(10), contextId: ctx.data.readUInt32BE(0) };
  }

  /** The chunks of one structured reply, up to the chunk flagged DONE. */
  async structuredReply(): Promise<{ type: number; cookie: bigint; payload: Buffer }[]> {
    const chunks: { type: number; cookie: bigint; payload: Buffer }[] = [];
    for (;;) {
      const h = P.decodeStructuredReplyHeader(await this.read(P.STRUCTURED_REPLY_HEADER_SIZE));
      chunks.push({ type: h.type, cookie: h.cookie, payload: await this.read(h.length) });
      if (h.flags & P.NBD_REPLY_FLAG_DONE) return chunks;
    }
  }

  request(type: number, offset: number, length: number, cookie: bigint, flags = 0, payload?: Uint8Array): void {
    const h = P.encodeRequest({ flags, type, cookie, offset, length });
    this.write(payload ? Buffer.concat([h, payload]) : h);
  }

  /** A simple reply (and `dataLength` bytes of data when it succeeded). */
  async simpleReply(dataLength = 0): Promise<{ error: number; cookie: bigint; data: Buffer }> {
    const r = P.decodeSimpleReply(await this.read(P.SIMPLE_REPLY_SIZE));
    const data = r.error === 0 && dataLength > 0 ? await this.read(dataLength) : Buffer.alloc(0);
    return { ...r, data };
  }

  destroy(): void {
    this.socket.destroy();
  }
}
