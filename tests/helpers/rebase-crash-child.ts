// Rebases IMAGE onto BACKING (qcow2) and says "go" on stdout at the first progress, so that the
// parent can SIGKILL it while data is being copied; "done" when the header changed.
import { rebaseImage } from '../../src/index.js';

const [image, backing] = process.argv.slice(2);
let said = false;
await rebaseImage(image!, backing!, {
  backingFormat: 'qcow2',
  onProgress: () => {
    if (said) return;
    said = true;
    process.stdout.write('go\n');
  },
});
process.stdout.write('done\n');
