/**
 * Two tenants, each with two drives in its own throttle group; tenant B's limit is raised at
 * runtime. Run: npx tsx examples/tenants.ts
 */
import { BlockLayer, type Drive } from 'blocklayer';

const layer = new BlockLayer();
const open = (id: string, group: string, iopsTotal: number) =>
  layer.openDrive({ id, driver: 'null', size: '1G', throttle: { iopsTotal, group } });

const drives: Drive[] = [await open('a1', 'tenantA', 200), await open('a2', 'tenantA', 200), await open('b1', 'tenantB', 100), await open('b2', 'tenantB', 100)];

/** Keeps `depth` 4 KiB reads in flight on a drive until `stop` is set; counts completions. */
function load(drive: Drive, depth: number, state: { stop: boolean; done: number }) {
  return Promise.all(
    Array.from({ length: depth }, async () => {
      const buf = new Uint8Array(4096);
      while (!state.stop) {
        await drive.read(0, buf);
        state.done++;
      }
    }),
  );
}

async function phase(label: string, ms: number) {
  const states = drives.map(() => ({ stop: false, done: 0 }));
  const runs = drives.map((d, i) => load(d, 8, states[i]));
  await new Promise((r) => setTimeout(r, ms));
  for (const s of states) s.stop = true;
  await Promise.all(runs);
  const rates = drives.map((d, i) => `${d.id} ${Math.round((states[i].done * 1000) / ms)}`);
  console.log(`${label}: IOPS per drive: ${rates.join(', ')}`);
}

await phase('tenantA 200 IOPS, tenantB 100 IOPS (shared per tenant)', 1500);
drives[2].setLimits({ iopsTotal: 400 }); // block_set_io_throttle on b1: the whole tenantB group follows
console.log('raised tenantB to', drives[3].getLimits());
await phase('tenantA 200 IOPS, tenantB 400 IOPS', 1500);
await layer.close();
