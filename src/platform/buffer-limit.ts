// The largest buffer this platform allocates; the browser build swaps in buffer-limit.browser.ts.
import { constants } from 'node:buffer';

export const MAX_BUFFER_LENGTH: number = constants.MAX_LENGTH;
