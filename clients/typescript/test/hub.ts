// Runs the built `ssehub` hub binary (env SSEHUB_HUB_BIN, e.g. target/debug/ssehub from
// `cargo build -p ssehub-server`) for the tests, as server/tests/common does: start it on
// 127.0.0.1:0 and read its address from its `ssehub listening on http://…` line.
//
// Without SSEHUB_HUB_BIN the tests that need it are skipped, unless CI is set: then they fail.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';

import { describe } from 'vitest';

/** The publish key and JWT secret of the hubs the tests start. */
export const KEY = 'test-publish-key';
export const SECRET = 'test-jwt-secret';

const BIN = process.env.SSEHUB_HUB_BIN;

/** `describe`, or `describe.skip` when there is no hub binary outside CI. */
export const describeHub = describe.skipIf(!BIN && !process.env.CI);

export interface Hub {
  /** `http://127.0.0.1:PORT` */
  url: string;
  /** What the hub wrote to stderr (for failure messages). */
  log(): string;
  stop(): Promise<void>;
}

/** `ssehub --addr 127.0.0.1:0 ARGS…`, once it listens. */
export async function startHub(args: string[]): Promise<Hub> {
  if (!BIN) {
    throw new Error(
      'SSEHUB_HUB_BIN is not set (required when CI is set): `cargo build -p ssehub-server` and set it to target/debug/ssehub',
    );
  }
  // Only the flags configure it: none of the SSEHUB_* variables of this environment.
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SSEHUB_')) env[k] = v;
  env.RUST_LOG = 'warn';
  const child = spawn(BIN, ['--addr', '127.0.0.1:0', ...args], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let output = '';
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the hub did not listen in time:\n${output}`)), 30_000);
    child.stderr.on('data', (b: Buffer) => {
      // Keep reading (and a bounded copy) so the hub never blocks on a full pipe.
      output = (output + b.toString()).slice(-16_000);
      // Only a whole line: a chunk may end inside the address.
      const m = /ssehub listening on (http:\/\/\S+)\r?\n/.exec(output);
      if (m?.[1]) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${BIN}: ${e.message}`));
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the hub exited with ${code}:\n${output}`));
    });
  });
  return {
    url,
    log: () => output,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
        child.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
        child.kill('SIGTERM');
      }),
  };
}

/** An HS256 JWT signed with `secret` carrying `claims` (what the hub's `--jwt-secret` verifies). */
export function jwt(secret: string, claims: Record<string, unknown>): string {
  const part = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const head = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

/** Seconds since the epoch (a JWT's `exp` unit). */
export const nowSecs = (): number => Math.floor(Date.now() / 1000);

/** `GET /v1/history/{channel}?since=…` with the publish key. */
export async function history(
  hub: Hub,
  channel: string,
  since: string,
): Promise<{ events: { id: string; event?: string; data: unknown }[]; complete: boolean }> {
  const res = await fetch(`${hub.url}/v1/history/${channel}?since=${encodeURIComponent(since)}`, {
    headers: { authorization: `Bearer ${KEY}` },
  });
  if (!res.ok) throw new Error(`history: ${res.status} ${await res.text()}`);
  return (await res.json()) as { events: { id: string; event?: string; data: unknown }[]; complete: boolean };
}
