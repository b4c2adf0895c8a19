// Browsers allow typed arrays of up to 2^32 bytes at most (less on some engines; an allocation
// failure there is still refused as ENOMEM by the caller).
export const MAX_BUFFER_LENGTH: number = 2 ** 32;
