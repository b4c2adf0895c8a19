import { defineDriver } from '../../node/driver.js';
import { vpcCreator } from './create.js';
import { vpcFacts } from './facts.js';
import { openVpc } from './open.js';

/**
 * QEMU's `vpc` format (VHD: Virtual PC, Hyper-V, Azure, Xen): fixed, dynamic and differencing
 * images (a differencing image's parent opens as its `backing` child); writes grow dynamic images.
 */
export const vpcDriver = defineDriver({
  name: vpcFacts.name,
  capabilities: vpcFacts.capabilities,
  schema: vpcFacts.schema(),
  probe: vpcFacts.probe,
  children: vpcFacts.children,
  open: (ctx) => openVpc(ctx),
  create: vpcCreator,
});
