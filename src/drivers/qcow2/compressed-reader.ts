import { BlockError } from '../../errors.js';
import type { BlockNode } from '../../node/node.js';
import { decompressCluster } from './compressed.js';
import type { Qcow2Header } from './header.js';
import type { Refcounts } from './refcounts.js';

/**
 * Reads compressed clusters, one at a time, keeping the last one decompressed: sequential reads
 * of a compressed image hit it. The input and output buffers are shared, so reads queue: each
 * copies its part out before the next may overwrite them (concurrent reads otherwise got each
 * other's clusters).
 */
export class CompressedReader {
  private cachedHost = -1;
  private readonly cluster: Uint8Array;
  private input = new Uint8Array(0);
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly file: BlockNode,
    private readonly h: Qcow2Header,
    /** A writable image's refcounts: host bytes under a read are pinned (not reused until it is done). */
    private readonly refcounts: Refcounts | undefined,
  ) {
    this.cluster = new Uint8Array(h.clusterSize);
  }

  /** Copies bytes [from, from + part.length) of the compressed cluster at `host` (`csize` bytes) into `part`. */
  read(host: number, csize: number, from: number, part: Uint8Array): Promise<void> {
    const done = this.queue.then(async () => {
      const cluster = await this.decompressed(host, csize);
      part.set(cluster.subarray(from, from + part.length));
    });
    this.queue = done.catch(() => {});
    return done;
  }

  /** Forgets the kept cluster (its host bytes may be reused by a write). */
  invalidate(): void {
    this.cachedHost = -1;
  }

  private async decompressed(host: number, csize: number): Promise<Uint8Array> {
    if (this.cachedHost === host) return this.cluster;
    const n = Math.min(csize, Math.max(0, this.file.length - host));
    if (n <= 0) throw new BlockError('ECORRUPT', `qcow2: compressed data at ${host} is beyond the end of the file`, { offset: host });
    if (this.input.length < n) this.input = new Uint8Array(n);
    const input = this.input.subarray(0, n);
    const pin = this.refcounts?.pin(host, n);
    try {
      await this.file.read(host, input);
    } finally {
      if (pin) this.refcounts!.unpin(pin);
    }
    this.cachedHost = -1;
    decompressCluster(this.h.compressionType, input, this.cluster, host);
    this.cachedHost = host;
    return this.cluster;
  }
}
