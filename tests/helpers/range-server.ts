import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';

/** A misbehaviour for the next range GET: applied once, in order. */
export type Fault =
  | 'status500' // 500 Internal Server Error
  | 'status404' // 404 Not Found
  | 'reset' // 206 headers and half the body, then the connection is destroyed
  | 'stall' // no answer at all
  | 'ignore-range' // 200 with the whole file
  | 'bad-range' // 206 whose Content-Range is one byte off
  | 'short' // 206 with a body one byte short (chunked, so only the length tells)
  | 'long' // 206 with a body one byte too long (chunked, so only the length tells)
  | 'cut' // 206 headers with Content-Length and half the body, then the connection is ended cleanly (FIN)
  | 'new-etag'; // 206 with the right bytes but another ETag

/** Node's own HTTP server serving one in-memory file with byte ranges, counting requests and injecting faults. */
export interface RangeServer {
  url: string;
  /** The file served; replace it (and `etag`) to simulate a new version. */
  data: Buffer;
  etag: string | undefined;
  lastModified: string | undefined;
  /** Honour Range (else every GET gets 200 and the whole file). */
  ranges: boolean;
  /** Send `Accept-Ranges: bytes`. */
  acceptRanges: boolean;
  /** Answer HEAD with this status instead (405: HEAD refused). */
  headStatus: number | undefined;
  /** Honour If-Range (answer 200 with the whole file when it does not match). */
  ifRange: boolean;
  faults: Fault[];
  /** Every request seen: method and Range header. */
  requests: { method: string; range: string | undefined }[];
  /** The Authorization header of every request (undefined where there was none). */
  authorizations: (string | undefined)[];
  /** Answer requests for any other path than the file's with 307 to this URL. */
  redirectTo: string | undefined;
  /** TCP (or TLS) connections accepted so far. */
  connections: number;
  /** How long the server keeps an idle connection open (Node's default: 5 s). */
  setKeepAliveTimeout(ms: number): void;
  /** Whole-file answers that were sent to the end (the client did not cut them). */
  fullBodiesCompleted: number;
  /** Bytes of whole-file answers the socket took. */
  wholeBytesSent: number;
  close(): Promise<void>;
}

const MiB = 1024 * 1024;

function parseRange(h: string, size: number): [number, number] | undefined {
  const m = /^bytes=(\d+)-(\d*)$/.exec(h);
  if (!m) return undefined;
  const first = Number(m[1]);
  const last = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  return first <= last ? [first, last] : undefined;
}

/** Serves over https with this key and certificate instead of http. */
export interface RangeServerTls {
  key: Buffer;
  cert: Buffer;
}

export async function startRangeServer(data: Buffer, etag: string | undefined = '"v1"', path = '/disk.img', tls?: RangeServerTls): Promise<RangeServer> {
  const s: RangeServer = {
    url: '',
    data,
    etag,
    lastModified: 'Wed, 21 Oct 2015 07:28:00 GMT',
    ranges: true,
    acceptRanges: true,
    headStatus: undefined,
    ifRange: true,
    faults: [],
    requests: [],
    authorizations: [],
    redirectTo: undefined,
    connections: 0,
    fullBodiesCompleted: 0,
    wholeBytesSent: 0,
    close: async () => undefined,
    setKeepAliveTimeout: () => undefined,
  };
  const validators = (res: http.ServerResponse, etagValue = s.etag) => {
    if (etagValue !== undefined) res.setHeader('ETag', etagValue);
    if (s.lastModified !== undefined) res.setHeader('Last-Modified', s.lastModified);
    if (s.acceptRanges) res.setHeader('Accept-Ranges', 'bytes');
  };
  // The whole file in 1 MiB writes that wait for the socket: a client that cuts the answer stops it.
  const whole = (res: http.ServerResponse) => {
    validators(res);
    res.writeHead(200, { 'Content-Length': s.data.length, 'Content-Type': 'application/octet-stream' });
    const data = s.data;
    let pos = 0;
    let closed = false;
    res.on('close', () => {
      closed = true;
    });
    const pump = () => {
      while (!closed && pos < data.length) {
        const piece = data.subarray(pos, pos + MiB);
        pos += piece.length;
        s.wholeBytesSent += piece.length;
        if (!res.write(piece)) return void res.once('drain', pump);
      }
      if (!closed) {
        res.end();
        s.fullBodiesCompleted++;
      }
    };
    pump();
  };
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const range = req.headers.range;
    s.requests.push({ method: req.method ?? '', range });
    s.authorizations.push(req.headers.authorization);
    if (s.redirectTo !== undefined && req.url !== path) return void res.writeHead(307, { Location: s.redirectTo }).end();
    if (req.url !== path) return void res.writeHead(404).end('no such file');
    if (req.method === 'HEAD') {
      if (s.headStatus !== undefined) return void res.writeHead(s.headStatus).end();
      validators(res);
      res.writeHead(200, { 'Content-Length': s.data.length });
      return void res.end();
    }
    if (req.method !== 'GET') return void res.writeHead(405).end();
    const fault = range !== undefined ? s.faults.shift() : undefined;
    if (fault === 'status500') return void res.writeHead(500).end('oops');
    if (fault === 'status404') return void res.writeHead(404).end('gone');
    if (fault === 'stall') return;
    if (range === undefined || !s.ranges || fault === 'ignore-range') return whole(res);
    const ifRange = req.headers['if-range'];
    if (s.ifRange && ifRange !== undefined && ifRange !== s.etag && ifRange !== s.lastModified) return whole(res);
    const r = parseRange(range, s.data.length);
    if (r === undefined) {
      res.writeHead(416, { 'Content-Range': `bytes */${s.data.length}` });
      return void res.end();
    }
    const [first, last] = r;
    const body = s.data.subarray(first, last + 1);
    validators(res, fault === 'new-etag' ? '"other"' : s.etag);
    const shift = fault === 'bad-range' ? 1 : 0;
    res.setHeader('Content-Range', `bytes ${first + shift}-${last + shift}/${s.data.length}`);
    if (fault === 'short') {
      res.writeHead(206);
      return void res.end(body.subarray(0, body.length - 1));
    }
    if (fault === 'long') {
      res.writeHead(206);
      return void res.end(Buffer.concat([body, Buffer.from([0])]));
    }
    res.writeHead(206, { 'Content-Length': body.length });
    if (fault === 'reset') {
      res.write(body.subarray(0, body.length >> 1));
      setTimeout(() => req.socket.destroy(), 20);
      return;
    }
    if (fault === 'cut') {
      res.write(body.subarray(0, body.length >> 1), () => req.socket.end());
      return;
    }
    res.end(body);
  };
  const server = tls === undefined ? http.createServer(handler) : https.createServer({ key: tls.key, cert: tls.cert }, handler);
  server.on(tls === undefined ? 'connection' : 'secureConnection', () => {
    s.connections++;
  });
  s.setKeepAliveTimeout = (ms) => {
    server.keepAliveTimeout = ms;
  };
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  s.url = `${tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}${path}`;
  s.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return s;
}
