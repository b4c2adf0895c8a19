/**
 * Pieces of a copy in flight at once (QEMU mirror.c's in-flight operations): each piece is read
 * from one node into a buffer of its own and written to another, while the job goes on finding
 * the next pieces. A fixed set of buffers bounds the memory; a piece waits for a free one.
 */
import type { BlockNode } from '../node/node.js';
import { writeCopied } from './commit-chain.js';

/** Bytes of one piece in flight at most (QEMU mirror's MAX_IO_BYTES): a piece of this size costs half the trips through the formats of QEMU's 512 KiB chunk. */
export const FLIGHT_PIECE = 1024 * 1024;

/** A piece on its way: its range, and its buffer; one record per buffer, reused piece after piece. */
interface Flight {
  offset: number;
  length: number;
  readonly buffer: Uint8Array;
  done: Promise<void>;
}

const ignore = (): void => {};

/** Decides what a failed piece does: throw to fail it (the job's `report`), return to let it settle. */
export type FlightFailure = (offset: number, length: number, op: 'read' | 'write', error: unknown) => Promise<void>;

export class CopyFlights {
  /** Records whose buffer is free. */
  private readonly free: Flight[];
  /** Oldest first. */
  private readonly flights: Flight[] = [];
  /** The first piece that failed for good (a rejected `done`), kept until {@link settleAll}. */
  private failure: { reason: unknown } | undefined;

  constructor(
    private readonly source: BlockNode,
    private readonly target: BlockNode,
    /** Pieces at once. */
    depth: number,
    /** Bytes of one piece at most. */
    readonly pieceSize: number,
    /** Called once per settled piece with its bytes (the job's progress). */
    private readonly onCopied: (bytes: number) => void,
    private readonly onFailure: FlightFailure,
  ) {
    this.free = Array.from({ length: depth }, () => ({ offset: 0, length: 0, buffer: new Uint8Array(pieceSize), done: Promise.resolve() }));
  }

  /** Bytes of the pieces in flight. */
  get bytesInFlight(): number {
    let n = 0;
    for (const f of this.flights) n += f.length;
    return n;
  }

  get idle(): boolean {
    return this.flights.length === 0;
  }

  /** Whether a piece failed for good (the job should stop starting more). */
  get failed(): boolean {
    return this.failure !== undefined;
  }

  /** Waits until a buffer is free (the oldest piece settled if none is). */
  async slot(): Promise<void> {
    while (this.free.length === 0) await this.settleOldest();
  }

  /** Waits for the oldest piece in flight, if any. */
  async settleOldest(): Promise<void> {
    const f = this.flights[0];
    if (f !== undefined) await f.done.catch(ignore);
  }

  /** The settling of a piece in flight over `[offset, offset+length)`, or null (a copy of the range must not overtake it). */
  overlapping(offset: number, length: number): Promise<void> | null {
    for (const f of this.flights) if (f.offset < offset + length && offset < f.offset + f.length) return f.done.catch(ignore);
    return null;
  }

  /** Starts copying `[offset, offset+length)` (at most a piece); call after {@link slot}. */
  start(offset: number, length: number): void {
    const flight = this.free.pop()!;
    flight.offset = offset;
    flight.length = length;
    flight.done = this.copy(flight);
    // Settled through settleAll or overlapping; a failure meanwhile is not unhandled.
    flight.done.catch(ignore);
    this.flights.push(flight);
  }

  /** Waits for every piece; rejects with the first failure, if any. */
  async settleAll(): Promise<void> {
    while (this.flights.length > 0) await this.settleOldest();
    const failure = this.failure;
    this.failure = undefined;
    if (failure !== undefined) throw failure.reason;
  }

  private async copy(flight: Flight): Promise<void> {
    const { offset, length } = flight;
    const part = length === flight.buffer.length ? flight.buffer : flight.buffer.subarray(0, length);
    let op: 'read' | 'write' = 'read';
    try {
      await this.source.read(offset, part);
      op = 'write';
      await writeCopied(this.target, offset, part);
      this.onCopied(length);
    } catch (e) {
      try {
        await this.onFailure(offset, length, op, e);
      } catch (reason) {
        this.failure ??= { reason };
        throw reason;
      } finally {
        this.release(flight);
      }
      return;
    }
    this.release(flight);
  }

  private release(flight: Flight): void {
    this.flights.splice(this.flights.indexOf(flight), 1);
    this.free.push(flight);
  }
}
