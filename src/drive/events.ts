// The events a Drive emits, as types: below the Drive class, so the modules that emit them
// (the request path, the error policy) need not import it.
import type { BlockError } from '../errors.js';
import type { IoOperation } from './request.js';

/** Payload of the `io-error` event (QEMU's BLOCK_IO_ERROR, plus the request). */
export interface IoErrorEvent {
  /** The drive's id (QEMU: device). */
  device: string;
  /** The root node's name (QEMU: node-name). */
  nodeName: string;
  /** The kind of request that failed. */
  operation: IoOperation;
  /** What the drive did: failed the request, completed it anyway, or held it and paused. */
  action: 'report' | 'ignore' | 'stop';
  /** The error was "no space left" (ENOSPC). */
  nospace: boolean;
  /** Human-readable reason (the error's message). */
  reason: string;
  /** Byte offset of the request. */
  offset: number;
  /** Byte length of the request. */
  length: number;
  /** The error the node returned. */
  error: BlockError;
}

/** QEMU's io-status of a drive: `ok`, or why it paused. */
export type IoStatus = 'ok' | 'failed' | 'nospace';

/** Typed events of a Drive. Listening is optional; unobserved events cost nothing. */
export interface DriveEvents {
  /** A request reached the driver and failed (whatever the error policy did with it). */
  'io-error': (event: IoErrorEvent) => void;
  /** A failed request was held by a `stop` policy: the drive holds new requests until Drive.resume(). */
  paused: (event: { reason: 'io-error'; ioStatus: IoStatus; error: BlockError }) => void;
  /** Drive.resume() retried the held requests and let new ones go again. */
  resumed: (event: { retried: number }) => void;
  /** The drive started holding back requests because a limit was reached. */
  throttled: (event: { direction: 'read' | 'write'; queued: number }) => void;
  /** The drive's queues emptied again. */
  unthrottled: (event: { direction: 'read' | 'write'; delayedNs: number }) => void;
  /** The limits of the drive changed. */
  'limits-changed': (event: { group: string | null }) => void;
  /** A block job or a snapshot put another node under the drive (Drive.replaceNode): later requests go to `newNode`. */
  'node-replaced': (event: { oldNode: string; newNode: string }) => void;
  /** The drive's disk was resized (Drive.resize, QMP block_resize). */
  resize: (event: { oldSize: number; newSize: number }) => void;
  /** The drive closed; every request has settled. */
  closed: () => void;
}
