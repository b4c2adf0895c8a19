// The path of a checked request (QEMU: blk_aio_prwv and its completion): the gate, the
// throttle queue, the node, accounting, the error policy; each request one pooled record.
import type { EventEmitter } from 'eventemitter3';
import type { Clock } from '../clock.js';
import { BlockError, fromErrno } from '../errors.js';
import { SETTLED } from '../node/driver.js';
import type { BlockNode } from '../node/node.js';
import type { StatsAccounting } from '../stats.js';
import type { Direction } from '../throttle/bucket.js';
import { DispatchOrder } from '../throttle/dispatch-order.js';
import type { QueuedRequestSink, QueueListener, Settle, ThrottledRequestQueue } from '../throttle/queue.js';
import { canceledError } from './args.js';
import { type ErrorPolicy, ErrorPolicyRules } from './error-policy.js';
import type { DriveEvents } from './events.js';
import { type GateOwner, HoldGate } from './gate.js';
import {
  DriveRequest,
  OP_DISCARD,
  OP_KINDS,
  OP_NAMES,
  OP_READ,
  OP_WRITE,
  OP_WRITE_ZEROES,
  type Op,
  type RequestCompletion,
  RequestPool,
  type RequestValue,
} from './request.js';

const DIRECTION_NAMES = ['read', 'write'] as const;

/**
 * A drive's requests past their argument checks: held by the gate, throttled, sent to the node,
 * accounted, and settled once (the error policy deciding on failures). The Drive is its front.
 */
export class RequestPath implements RequestCompletion, QueuedRequestSink, GateOwner, QueueListener {
  /** Requests past the gate (throttle queue, driver), not yet settled. */
  inFlight = 0;
  /** Throttle queue; null while the drive has no limits. */
  throttle: ThrottledRequestQueue | null = null;
  readonly gate = new HoldGate(this);
  readonly policy: ErrorPolicyRules;
  private readonly pool = new RequestPool(this);
  private readonly order = new DispatchOrder();
  private idle: (() => void) | null = null;
  /** Arrival number of the next request (retries after a pause keep arrival order). */
  private seq = 0;
  /** The request `new Promise` is about to queue (see {@link enqueueExecutor}); never pooled nor run. */
  private readonly staging = new DriveRequest(this);

  /** Turns the queue's news into the drive's events: the path itself (methods, not a listener object and closures per drive). */
  get queueListener(): QueueListener {
    return this;
  }

  /** (QueueListener) A queued request's run settles the caller's promise itself, in the same microtask as a direct request's would: a request arriving right after an admission need not yield. */
  released(): void {}

  /** (QueueListener) */
  throttled(direction: Direction, queued: number): void {
    if (this.events.listenerCount('throttled') > 0) this.events.emit('throttled', { direction: DIRECTION_NAMES[direction], queued });
  }

  /** (QueueListener) */
  unthrottled(direction: Direction, delayedNs: number): void {
    if (this.events.listenerCount('unthrottled') > 0) this.events.emit('unthrottled', { direction: DIRECTION_NAMES[direction], delayedNs });
  }

  constructor(
    /** The drive's root node; swapped by Drive.replaceNode in a drained section. */
    public node: BlockNode,
    private readonly clock: Clock,
    private readonly accounting: StatsAccounting,
    private readonly events: EventEmitter<DriveEvents>,
    private readonly device: string,
    policy: ErrorPolicy,
  ) {
    this.policy = new ErrorPolicyRules(policy, events, this.gate, device, node.name);
  }

  /** Requests accepted and not settled: in flight, held by the gate, parked by the error policy. */
  get outstanding(): number {
    return this.inFlight + this.gate.size + this.policy.size;
  }

  /**
   * Passes a checked request on: held while the drive is drained or paused; otherwise through
   * the throttle (reads, writes, write-zeroes), now or later as a queued request.
   */
  submit(op: Op, offset: number, payload: Uint8Array | null, length: number, signal: AbortSignal | undefined): Promise<RequestValue> {
    if (this.gate.holding) return this.gate.hold(this.pool.claim(op, offset, payload, length, signal));
    this.inFlight++;
    const start = this.clock.now();
    const seq = this.seq++;
    if (this.mayGo(op, length, start)) {
      const r = this.pool.claim(op, offset, payload, length, signal);
      r.start = start;
      r.seq = seq;
      // Requests just released from the queue settle a microtask later than a direct one would:
      // in that window a new request waits a tick too, so completions keep their order.
      if (this.order.pending) return Promise.resolve().then(() => this.run(r));
      return this.run(r);
    }
    // The request waits as a few columns of the queue: no object, no async frame, no inner
    // promise, and no executor closure either (the executor reads the request from the
    // staging record). Not a pooled record: claiming and recycling one per queued request
    // cost a third more CPU per request in bench/throttle.ts's scale scenario.
    const r = this.staging;
    r.op = op;
    r.offset = offset;
    r.payload = payload;
    r.length = length;
    r.signal = signal;
    r.start = start;
    // Only a drive that can park requests needs their arrival number while they wait.
    r.seq = this.policy.canPark ? seq : 0;
    return new Promise(this.enqueueExecutor);
  }

  /** (GateOwner) A held request goes on like {@link submit}, settling its caller's promise directly (no extra hop that would reorder completions). */
  release(r: DriveRequest): void {
    this.inFlight++;
    const start = this.clock.now();
    r.start = start;
    r.seq = this.seq++;
    if (this.mayGo(r.op, r.length, start)) {
      // It settles a microtask later than a direct request: new ones in this tick yield too.
      this.order.released();
      const resolve = r.resolve!;
      const reject = r.reject!;
      r.resolve = r.reject = null;
      this.run(r).then(resolve, reject);
      return;
    }
    if (!this.policy.canPark) r.seq = 0;
    r.settle = r.resolve;
    r.resolve = null;
    this.throttle!.enqueueRequest(r.op === OP_READ ? 0 : 1, r);
    // The queue keeps the request's fields, not the record.
    this.pool.recycle(r);
  }

  /** Whether a request may go to the node now: not throttled (discard, flush, no limits), or admitted (charged) by the throttle. */
  private mayGo(op: Op, length: number, start: number): boolean {
    const queue = this.throttle;
    return op > OP_WRITE_ZEROES || queue === null || queue.tryAdmit(op === OP_READ ? 0 : 1, length, start);
  }

  /** Hands the staged request to the throttle queue from inside `new Promise`, without a closure per request. */
  private readonly enqueueExecutor = (resolve: Settle, reject: (e: unknown) => void): void => {
    const r = this.staging;
    r.settle = resolve;
    r.reject = reject;
    this.throttle!.enqueueRequest(r.op === OP_READ ? 0 : 1, r);
    // Nothing of the request stays referenced here once it is queued.
    r.payload = null;
    r.signal = undefined;
    r.settle = r.reject = null;
  };

  /** (QueuedRequestSink) A record for a request the queue lets go. */
  claim(): DriveRequest {
    return this.pool.claim(OP_READ, 0, null, 0, undefined);
  }

  /** (QueuedRequestSink) A queued request may go (already charged). */
  admitQueued(direction: Direction, r: DriveRequest): void {
    r.op = direction === 0 ? OP_READ : r.payload === null ? OP_WRITE_ZEROES : OP_WRITE;
    const signal = r.signal;
    if (signal?.aborted) {
      const reject = r.reject!;
      const error = this.canceled(r, signal.reason);
      this.pool.recycle(r);
      this.leave();
      reject(error);
      return;
    }
    // The queue keeps the low 32 bits of the arrival number (fewer than 2^32 requests arrive
    // while one waits), and only for a drive that can park requests (the only use of it).
    r.seq = this.policy.canPark ? this.seq - ((this.seq - r.seq) >>> 0) : 0;
    r.reject = null;
    // The run settles the caller's promise itself (a failure by resolving it with a rejected
    // promise): no promise of the run's own, no reject function kept per queued request.
    void this.run(r);
  }

  /** (QueuedRequestSink) A queued request was aborted while waiting. */
  cancelQueued(reject: (e: unknown) => void, error: BlockError): void {
    this.leave();
    reject(error);
  }

  /** (GateOwner) ECANCELED for a request whose signal aborted. */
  canceled(r: DriveRequest, reason: unknown): BlockError {
    return canceledError(OP_NAMES[r.op], r.offset, reason, this.node.name);
  }

  /**
   * Sends a request to the node; its pooled continuations finish it. A direct request's promise
   * is the one `then` derives from the node's: no async frame, no closure per request, and it
   * settles in the same microtask as `await node.read(); return …` in an async function would.
   * A request admitted from the queue settles its caller's promise through `settle` instead.
   */
  private run(r: DriveRequest): Promise<RequestValue> {
    let io: Promise<void>;
    try {
      io = this.send(r);
    } catch (e) {
      if (r.settle !== null) io = Promise.reject(e);
      else {
        // A driver that threw instead of rejecting: handled at once, as the catch of an async function would.
        try {
          const value = r.rejected(e);
          return new Promise((resolve) => resolve(value));
        } catch (error) {
          return Promise.reject(error);
        }
      }
    }
    // A driver that finished before returning: completed now, without a reaction job (the
    // caller's promise settles a microtask earlier, as a direct await of the driver's would).
    if (io === SETTLED) return Promise.resolve(this.completed(r));
    // Promise.resolve adopts a native promise as is (a foreign thenable costs the same hop as await).
    return Promise.resolve(io).then(r.fulfilled, r.rejected);
  }

  /** The node's promise for a request (a driver may throw instead of rejecting: the caller handles both). */
  private send(r: DriveRequest): Promise<void> {
    const op = r.op;
    if (op === OP_READ) return this.node.read(r.offset, r.payload!);
    // Recorded in the node's bitmaps by completed/failed: the continuation that exists anyway.
    if (op === OP_WRITE) return this.node.writeUnrecorded(r.offset, r.payload!);
    if (op === OP_WRITE_ZEROES) return this.node.writeZeroes(r.offset, r.length);
    if (op === OP_DISCARD) return this.node.discard(r.offset, r.length);
    return this.node.flush();
  }

  /** (RequestCompletion) The node finished a request. */
  completed(r: DriveRequest): RequestValue {
    if (r.op === OP_WRITE) this.node.recordWrite(r.offset, r.length);
    const value = r.op === OP_READ ? r.payload! : undefined;
    const settle = r.settle;
    this.done(r);
    this.pool.recycle(r);
    this.leave();
    if (settle === null) return value;
    settle(value);
    return undefined;
  }

  /** (RequestCompletion) The node failed a request: the error policy decides. */
  failed(r: DriveRequest, e: unknown): RequestValue | Promise<RequestValue> {
    if (r.op === OP_WRITE) this.node.recordWrite(r.offset, r.length);
    const settle = r.settle;
    r.settle = null;
    if (settle === null) return this.applyPolicy(r, e);
    try {
      settle(this.applyPolicy(r, e));
    } catch (error) {
      settle(Promise.reject(error));
    }
    return undefined;
  }

  /** The error policy on a failed request: report (throw), ignore (complete), stop (park, pausing the drive). */
  private applyPolicy(r: DriveRequest, e: unknown): RequestValue | Promise<RequestValue> {
    const error = fromErrno(e, `${OP_NAMES[r.op]} at offset ${r.offset}`, { node: this.node.name, offset: r.offset, length: r.length });
    const action = this.policy.decide(r, error);
    if (action === 'report') this.accounting.failedOp(OP_KINDS[r.op], r.start, this.clock.now());
    this.policy.emitIoError(r, error, action);
    if (action === 'stop') {
      this.leave();
      // The record stays with the policy until resume() retries it or close() fails it.
      return this.policy.park(r, error);
    }
    if (action === 'report') {
      this.pool.recycle(r);
      this.leave();
      throw error;
    }
    // 'ignore': the request completes as if it had succeeded (QEMU's rerror/werror=ignore).
    const value = r.op === OP_READ ? r.payload! : undefined;
    this.done(r);
    this.pool.recycle(r);
    this.leave();
    return value;
  }

  private done(r: DriveRequest): void {
    if (r.op === OP_WRITE || r.op === OP_WRITE_ZEROES) this.accounting.wrote(r.offset + r.length);
    this.accounting.done(OP_KINDS[r.op], r.length, r.start, this.clock.now());
  }

  /**
   * After a `stop` policy paused the drive: retries the parked requests in their order of
   * arrival, then lets those held meanwhile go, in order. Returns how many were retried.
   */
  resume(): number {
    const parked = this.policy.unpause();
    this.policy.status = 'ok';
    // Retries go first, synchronously, so they reach the driver before anything held.
    if (parked.length > 0) this.order.released();
    for (const r of parked) {
      this.inFlight++;
      const resolve = r.resolve!;
      const reject = r.reject!;
      r.resolve = r.reject = null;
      r.error = null;
      this.run(r).then(resolve, reject);
    }
    this.gate.update();
    return parked.length;
  }

  /** Closing a paused drive: the parked requests fail with their error, the held ones with ECLOSED. */
  failPaused(): void {
    const parked = this.policy.unpause();
    const held = this.gate.takeAll();
    this.gate.update();
    for (const r of parked) {
      this.accounting.failedOp(OP_KINDS[r.op], r.start, this.clock.now());
      r.reject!(r.error);
    }
    for (const r of held) {
      r.reject!(new BlockError('ECLOSED', `${OP_NAMES[r.op]}: drive ${this.device} was closed while paused by an I/O error`, { node: this.node.name, offset: r.offset }));
    }
  }

  /** Resolves when no request is in flight (held and parked ones are not in flight). */
  whenIdle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.idle;
      this.idle = () => {
        previous?.();
        resolve();
      };
    });
  }

  private leave(): void {
    if (--this.inFlight === 0 && this.idle !== null) {
      const idle = this.idle;
      this.idle = null;
      idle();
    }
  }
}
