// Compression in the browser build: raw DEFLATE with fflate; zstd has no compressor here.
import { deflateSync, zlibSync } from 'fflate';
import { BlockError } from '../errors.js';

export async function deflateRaw(data: Uint8Array): Promise<Uint8Array> {
  return deflateSync(data, { level: 6 });
}

export async function deflateZlib(data: Uint8Array): Promise<Uint8Array> {
  return zlibSync(data, { level: 6 });
}

export async function zstdCompress(_data: Uint8Array): Promise<Uint8Array> {
  throw new BlockError('ENOTSUP', 'zstd compression is not available in the browser build (use compression_type zlib)', { field: 'compression_type' });
}
