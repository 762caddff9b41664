// The size of each package entry as an app's bundler ships it: bundled with esbuild (React and
// TanStack Query left to the app), minified, gzipped. Fails when the root entry, the React-free
// client, is over its budget. Run after `npm run build`: `npm run sizes`.
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const ROOT_BUDGET = 4 * 1024; // bytes, minified and gzipped
const entries = {
  '@ssehub/client': 'dist/index.js',
  '@ssehub/client/react': 'dist/react.js',
};

let failed = false;
for (const [name, file] of Object.entries(entries)) {
  const out = await build({
    entryPoints: [file],
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'browser',
    write: false,
    external: ['react', 'react-dom', '@tanstack/react-query'],
  });
  const code = out.outputFiles[0].contents;
  const gz = gzipSync(code, { level: 9 }).length;
  console.log(`${name.padEnd(24)} ${String(code.length).padStart(7)} B minified  ${String(gz).padStart(6)} B gzipped`);
  if (name === '@ssehub/client' && gz > ROOT_BUDGET) {
    console.error(`sizes: ${name} is ${gz} B gzipped, over its budget of ${ROOT_BUDGET} B`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
