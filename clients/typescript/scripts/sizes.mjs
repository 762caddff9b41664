// The size of each package entry as an app's bundler ships it: bundled with esbuild (React and
// TanStack Query left to the app), minified, gzipped. Fails when the root entry, the React-free
// client, is over its budget. Run after `npm run build`: `npm run sizes`.
//
// Bundled with code splitting, as apps' bundlers do: a chunk loaded with `import()` only when
// needed (the fetch source, for a token in a header) is not in its entry's size; it is reported
// on a line of its own, below the entry.
//
// `@ssehub/client/server` runs on a server (bundled for Node here); it has no budget, and is
// reported so a growth shows.
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const ROOT_BUDGET = 4 * 1024; // bytes, minified and gzipped
const entries = {
  '@ssehub/client': { file: 'dist/index.js', platform: 'browser', budget: ROOT_BUDGET },
  '@ssehub/client/react': { file: 'dist/react.js', platform: 'browser' },
  '@ssehub/client/server': { file: 'dist/server.js', platform: 'node' },
};

const line = (name, code) => {
  const gz = gzipSync(code, { level: 9 }).length;
  console.log(`${name.padEnd(30)} ${String(code.length).padStart(7)} B minified  ${String(gz).padStart(6)} B gzipped`);
  return gz;
};

let failed = false;
for (const [name, { file, platform, budget }] of Object.entries(entries)) {
  const out = await build({
    entryPoints: [file],
    bundle: true,
    minify: true,
    format: 'esm',
    platform,
    splitting: true,
    outdir: 'sizes-out',
    chunkNames: '[name]',
    write: false,
    metafile: true,
    external: ['react', 'react-dom', '@tanstack/react-query'],
  });
  // The entry's chunk, then the others (lazy, or shared by lazy ones).
  const rel = (f) => path.relative(process.cwd(), f.path).split(path.sep).join('/');
  const isEntry = (f) => out.metafile.outputs[rel(f)]?.entryPoint !== undefined;
  const entry = out.outputFiles.find((f) => isEntry(f) && f.path.endsWith('.js'));
  const gz = line(name, entry.contents);
  for (const f of out.outputFiles) {
    if (f !== entry && f.path.endsWith('.js')) line(`  + import() ${path.basename(f.path)}`, f.contents);
  }
  if (budget !== undefined && gz > budget) {
    console.error(`sizes: ${name} is ${gz} B gzipped, over its budget of ${budget} B`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
