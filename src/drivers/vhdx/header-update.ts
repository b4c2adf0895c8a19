import type { BlockNode } from '../../node/node.js';
import { randomGuid } from './guid.js';
import { serializeHeader, type VhdxHeader } from './header.js';
import * as L from './limits.js';

/**
 * Header updates as the spec asks and QEMU does (vhdx_update_headers): the non-current header gets
 * the next sequence number, this session's file write GUID (and a new data write GUID before the
 * first guest-visible change, or a new log GUID), is written and flushed, and becomes current;
 * twice, so that both copies are valid and alike.
 */
export class HeaderUpdater {
  /** This open's file write GUID (a new one per session, as QEMU's session_guid). */
  private readonly sessionGuid = randomGuid();

  constructor(
    private readonly file: BlockNode,
    private current: VhdxHeader,
    private index: 0 | 1,
  ) {}

  get header(): VhdxHeader {
    return this.current;
  }

  async update(newDataWriteGuid: boolean, logGuid?: Uint8Array): Promise<void> {
    for (let round = 0; round < 2; round++) {
      const next: VhdxHeader = {
        ...this.current,
        sequence: this.current.sequence + 1n,
        fileWriteGuid: this.sessionGuid,
        dataWriteGuid: newDataWriteGuid ? randomGuid() : this.current.dataWriteGuid,
        logGuid: logGuid ?? this.current.logGuid,
      };
      const index = this.index === 0 ? 1 : 0;
      await this.file.write(index === 0 ? L.HEADER1_OFFSET : L.HEADER2_OFFSET, serializeHeader(next));
      await this.file.flush();
      this.current = next;
      this.index = index;
      newDataWriteGuid = false; // the second copy takes the same data write GUID
    }
  }
}
