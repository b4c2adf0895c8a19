import type { HttpAnswer, HttpMethod, HttpTransport } from './transport.js';

/** The global fetch as a transport: runs in browsers and Node alike. */
export class FetchTransport implements HttpTransport {
  readonly kind = 'fetch';

  async request(url: string, method: HttpMethod, headers: Readonly<Record<string, string>>, signal: AbortSignal): Promise<HttpAnswer> {
    return new FetchAnswer(await fetch(url, { method, headers, signal, redirect: 'follow' }));
  }

  close(): void {}
}

class FetchAnswer implements HttpAnswer {
  constructor(private readonly res: Response) {}

  get status(): number {
    return this.res.status;
  }
  get statusText(): string {
    return this.res.statusText;
  }
  get headers(): Headers {
    return this.res.headers;
  }

  async readInto(buffer: Uint8Array): Promise<number> {
    if (this.res.body === null) return 0;
    const reader = this.res.body.getReader();
    let got = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return got;
      if (got + value.length > buffer.length) return got + value.length;
      buffer.set(value, got);
      got += value.length;
    }
  }

  async drain(): Promise<void> {
    await this.res.arrayBuffer();
  }
}
