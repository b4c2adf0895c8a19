// The origin's storage as info() shows it: usage and quota (navigator.storage.estimate()) and
// whether the browser keeps it under storage pressure, which a writer asks for once.
import type { StorageManager } from './web-types.js';

/** The one persist() request of this realm: a browser may prompt or decide from engagement, so it is asked once. */
let persistRequest: Promise<boolean> | undefined;

/**
 * What info() shows of the storage. `writable`: the open will write, so an eviction would lose
 * data, and persistence is requested (once per realm; a refusal or failure never fails the open).
 */
export async function storageFacts(storage: StorageManager, writable: boolean): Promise<Record<string, unknown>> {
  if (writable && typeof storage.persist === 'function') persistRequest ??= storage.persist().catch(() => false);
  const [estimate, persisted] = await Promise.all([
    storage.estimate?.().catch(() => undefined),
    (persistRequest ?? storage.persisted?.())?.catch(() => undefined),
  ]);
  return {
    ...(estimate ? { storageUsage: estimate.usage, storageQuota: estimate.quota } : {}),
    ...(typeof persisted === 'boolean' ? { storagePersisted: persisted } : {}),
  };
}
