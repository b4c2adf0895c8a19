/**
 * Child process for the locking tests: opens a file through the library, prints one JSON line
 * ({ ok } or { ok: false, code, message }) and keeps the drive open until stdin closes.
 */
import { BlockLayer, isBlockError } from '../../src/index.js';

const [filename, mode, locking] = process.argv.slice(2);
const layer = new BlockLayer();
try {
  const drive = await layer.openDrive({ driver: 'file', filename, readOnly: mode === 'ro', locking: locking ?? 'auto' });
  process.stdout.write(`${JSON.stringify({ ok: true })}\n`);
  process.stdin.resume();
  process.stdin.on('end', async () => {
    await drive.close();
    process.exit(0);
  });
} catch (e) {
  process.stdout.write(`${JSON.stringify({ ok: false, code: isBlockError(e) ? e.code : 'other', message: String((e as Error).message) })}\n`);
  process.exit(0);
}
