// The size of each package entry as an app's bundler ships it: bundled with esbuild (React and
// TanStack Query left to the app), minified, gzipped. Fails when the root entry, the React-free
// client, is over its budget. Run after `npm run build`: `npm run sizes`.
//
// `@ssehub/client/server` runs on a server (bundled for Node here); it has no budget, and is
// reported so a growth shows.
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const ROOT_BUDGET = 4 * 1024; // bytes, minified and gzipped
const entries = {
  '@ssehub/client': { file: 'dist/index.js', platform: 'browser', budget: ROOT_BUDGET },
  '@ssehub/client/react': { file: 'dist/react.js', platform: 'browser' },
  '@ssehub/client/server': { file: 'dist/server.js', platform: 'node' },
};

let failed = false;
for (const [name, { file, platform, budget }] of Object.entries(entries)) {
  const out = await build({
    entryPoints: [file],
    bundle: true,
    minify: true,
    format: 'esm',
    platform,
    write: false,
    external: ['react', 'react-dom', '@tanstack/react-query'],
  });
  const code = out.outputFiles[0].contents;
  const gz = gzipSync(code, { level: 9 }).length;
  console.log(`${name.padEnd(24)} ${String(code.length).padStart(7)} B minified  ${String(gz).padStart(6)} B gzipped`);
  if (budget !== undefined && gz > budget) {
    console.error(`sizes: ${name} is ${gz} B gzipped, over its budget of ${budget} B`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
