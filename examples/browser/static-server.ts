import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

const TYPES: Record<string, string> = { '.js': 'text/javascript', '.mjs': 'text/javascript', '.html': 'text/html', '.map': 'application/json', '.css': 'text/css', '.wasm': 'application/wasm' };

/** One request the server answered, with when (ms since the epoch, sub-millisecond: comparable to a page's `performance.timeOrigin + performance.now()`). */
export interface ServedRequest {
  /** `METHOD /path range`, as in `requests`. */
  request: string;
  start: number;
  /** When the answer's last byte was handed to the socket (0 until then). */
  end: number;
  status: number;
  /** Content-Length of the answer. */
  bytes: number;
}

const now = () => performance.timeOrigin + performance.now();

/**
 * A static file server on 127.0.0.1 for browser tests: files by URL path from `routes`
 * (URL prefix → directory), with HEAD, single byte ranges (206, Content-Range, Accept-Ranges) and an ETag; `requests` lists what it was asked, `timeline` also when and what it answered.
 */
export async function serveStatic(routes: Record<string, string>, listenPort = 0): Promise<{ url: string; requests: string[]; timeline: ServedRequest[]; close: () => Promise<void> }> {
  const requests: string[] = [];
  const timeline: ServedRequest[] = [];
  const server = http.createServer((req, res) => {
    const urlPath = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    requests.push(`${req.method} ${urlPath} ${req.headers.range ?? ''}`.trim());
    const served: ServedRequest = { request: requests[requests.length - 1], start: now(), end: 0, status: 0, bytes: 0 };
    timeline.push(served);
    res.on('finish', () => {
      served.end = now();
      served.status = res.statusCode;
    });
    const prefix = Object.keys(routes)
      .sort((a, b) => b.length - a.length)
      .find((p) => urlPath.startsWith(p));
    const file = prefix === undefined ? undefined : path.join(routes[prefix], urlPath.slice(prefix.length));
    if (!file || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    const st = fs.statSync(file);
    const etag = `"${createHash('sha1').update(`${st.size}-${st.mtimeMs}`).digest('hex').slice(0, 16)}"`;
    const headers: Record<string, string | number> = { 'Accept-Ranges': 'bytes', ETag: etag, 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream' };
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    let start = 0;
    let end = st.size - 1;
    let status = 200;
    if (m) {
      start = Number(m[1]);
      end = m[2] === '' ? st.size - 1 : Math.min(Number(m[2]), st.size - 1);
      if (start >= st.size || end < start) {
        res.writeHead(416, { 'Content-Range': `bytes */${st.size}` }).end();
        return;
      }
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${end}/${st.size}`;
    }
    headers['Content-Length'] = end - start + 1;
    if (req.method !== 'HEAD') served.bytes = end - start + 1;
    res.writeHead(status, headers);
    if (req.method === 'HEAD') res.end();
    else fs.createReadStream(file, { start, end }).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(listenPort, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    timeline,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
