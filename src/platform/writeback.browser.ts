// The browser's stand-in for writeback.ts: no local files, so no write-out to start.
import type { WritebackHint } from './writeback.js';

export type { WritebackHint };

export async function openWritebackHint(_filename: string): Promise<WritebackHint | null> {
  return null;
}
