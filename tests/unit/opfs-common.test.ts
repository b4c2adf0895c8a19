// The opfs driver's pieces that need no browser: the preallocation modes it honours, and the
// storage facts of info() with persist() asked once per realm, by writers only, never fatal.
import { describe, expect, it } from 'vitest';
import { allData, preallocMode } from '../../src/drivers/opfs/common.js';
import { storageFacts } from '../../src/drivers/opfs/storage-facts.js';

describe('opfs common pieces', () => {
  it('honours off and full preallocation and refuses metadata and falloc with ENOTSUP naming prealloc', () => {
    expect(preallocMode(undefined, 'n', 'p')).toBe('off');
    expect(preallocMode('full', 'n', 'p')).toBe('full');
    for (const m of ['metadata', 'falloc'] as const) expect(() => preallocMode(m, 'n', 'p')).toThrow(expect.objectContaining({ code: 'ENOTSUP', field: 'prealloc' }));
  });

  it('reports every range as data', async () => {
    expect(await allData(4096, 512)).toMatchObject({ offset: 4096, length: 512, data: true, zero: false, allocated: true });
  });

  it('asks persist() once, for the first writer only; a refusal or failure never fails; shows estimate and persisted', async () => {
    let asks = 0;
    let persisted = false;
    const storage = {
      getDirectory: () => Promise.reject(new Error('unused')),
      estimate: async () => ({ usage: 1234, quota: 5678 }),
      persist: async () => {
        asks++;
        throw new Error('denied');
      },
      persisted: async () => persisted,
    };
    expect(await storageFacts(storage, false)).toEqual({ storageUsage: 1234, storageQuota: 5678, storagePersisted: false });
    expect(asks).toBe(0);
    persisted = true;
    // the failed request counts as not persisted
    expect(await storageFacts(storage, true)).toMatchObject({ storagePersisted: false });
    expect(await storageFacts(storage, true)).toMatchObject({ storageUsage: 1234 });
    expect(asks).toBe(1);
    // no estimate() (older browsers): no usage or quota, and no failure
    expect(await storageFacts({ getDirectory: storage.getDirectory }, false)).not.toHaveProperty('storageQuota');
  });
});
