import { BlockError } from '../../errors.js';
import type { LockManager } from './web-types.js';

/**
 * Takes the Web Lock `name` without waiting, as flock(LOCK_NB) would: `exclusive` for a writer,
 * `shared` for a reader; a lock another tab, worker or node holds in a conflicting mode is
 * ELOCKED. Resolves to the function that releases it (the lock lives until then, across awaits);
 * that function's promise settles once the lock manager has let the lock go, so that an open
 * right after a close finds it free.
 */
export function takeWebLock(locks: LockManager, name: string, mode: 'exclusive' | 'shared', context: { node: string; path: string }): Promise<() => Promise<void>> {
  return new Promise((resolve, reject) => {
    // settles after the callback's promise has settled and the lock is gone
    const released: Promise<unknown> = locks
      .request(name, { mode, ifAvailable: true }, (lock) => {
        if (lock === null) {
          const held = mode === 'exclusive' ? 'is open elsewhere' : 'is open read-write elsewhere';
          reject(new BlockError('ELOCKED', `opfs: '${context.path}' ${held} (Web Lock '${name}' not available for ${mode === 'exclusive' ? 'writing' : 'reading'})`, { ...context, field: 'path' }));
          return undefined;
        }
        // the lock is held while this promise is pending
        return new Promise<void>((release) =>
          resolve(() => {
            release();
            return released.then(
              () => undefined,
              () => undefined,
            );
          }),
        );
      })
      .catch((e: unknown) => {
        reject(new BlockError('EIO', `opfs: could not take Web Lock '${name}'`, { ...context, cause: e }));
      });
  });
}
