/** Retry policy of the http driver: which failures are worth another attempt, and how long to wait before it. */
import type { Clock } from '../../clock.js';

/** A failure that may go away on another attempt (5xx, 408/429, network error, timeout, short body). */
export class TransientError extends Error {
  override readonly name = 'TransientError';
}

/** HTTP statuses retried like network errors: server errors, request timeout, too many requests. */
export function isRetryableStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

/** Exponential backoff: `base`, 2×base, 4×base, … capped at `max` milliseconds, for attempt 1, 2, 3, … */
export function backoffDelay(attempt: number, base: number, max = 10_000): number {
  return Math.min(max, base * 2 ** Math.max(0, attempt - 1));
}

/** Waits `ms` milliseconds of `clock` time; rejects with the signal's reason as soon as `signal` aborts. */
export function sleep(clock: Clock, ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => {
      timer.cancel();
      reject(signal.reason);
    };
    const timer = clock.setTimer(clock.now() + ms * 1e6, () => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
