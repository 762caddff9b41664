// Vitest global setup: runs the Rust comments example (the real ssehub server) for the tests.
//
// `SSEHUB_COMMENTS_BIN=/path/to/comments` uses a prebuilt binary; otherwise
// `cargo run --example comments` from the repository root (compiling it when needed).
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

async function waitUp(url: string, child: ChildProcess, limitMs: number, log: () => string): Promise<void> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    if (child.exitCode !== null) {
      throw new Error(`the comments example exited with ${child.exitCode}:\n${log()}`);
    }
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`the comments example did not answer ${url}:\n${log()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const port = await freePort();
  const bin = process.env.SSEHUB_COMMENTS_BIN;
  const addr = `127.0.0.1:${port}`;
  const [cmd, args] = bin
    ? [bin, ['--addr', addr]]
    : ['cargo', ['run', '--quiet', '--example', 'comments', '--', '--addr', addr]];
  const child = spawn(cmd, args, {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  });
  let output = '';
  const keep = (b: Buffer) => {
    output = (output + b.toString()).slice(-8000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  // A missing binary or `cargo` (ENOENT): reported by waitUp, with this, as an exit.
  child.on('error', (err) => keep(Buffer.from(`${cmd}: ${err.message}\n`)));
  const base = `http://${addr}`;
  // Compiling from scratch can take minutes on a small machine.
  await waitUp(`${base}/healthz`, child, bin ? 30_000 : 600_000, () => output);
  project.provide('baseUrl', base);
  return async () => {
    child.kill('SIGINT');
    await new Promise((r) => {
      const t = setTimeout(() => {
        child.kill('SIGKILL');
        r(undefined);
      }, 3000);
      child.once('exit', () => {
        clearTimeout(t);
        r(undefined);
      });
    });
  };
}

declare module 'vitest' {
  export interface ProvidedContext {
    baseUrl: string;
  }
}
