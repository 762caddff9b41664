#!/usr/bin/env node
// Checks what `npm publish` would ship (`npm run check:pack`; no dependencies):
//
// - `npm pack --dry-run --json` (which runs `prepack`, the build) packs only package.json,
//   README.md, LICENSE and files under dist/, with no test files among them;
// - every file an `exports` entry points to is packed;
// - the root entry (dist/index.js and dist/index.d.ts, with everything they import through
//   relative paths) imports neither React nor TanStack Query: those are optional peer
//   dependencies, needed only by `@ssehub/client/react`; nor the Node publisher
//   (dist/server.*);
// - the server entry (`@ssehub/client/server`: dist/server.js and dist/server.d.ts, with what
//   they import) imports no package at all (Node built-ins aside): the publisher has no
//   runtime dependencies.
//
// Prints the packed files and the total size; exits 1, listing what is wrong, on any failure.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const problems = [];

// --- what would be packed -----------------------------------------------------------------

let stdout;
try {
  stdout = execFileSync('npm', ['pack', '--dry-run', '--json'], {
    cwd: pkgDir,
    encoding: 'utf8',
    // The prepack build logs to stderr; let it through.
    stdio: ['ignore', 'pipe', 'inherit'],
    shell: process.platform === 'win32',
    maxBuffer: 64 * 1024 * 1024,
  });
} catch (err) {
  console.error(`check-pack: \`npm pack --dry-run --json\` failed: ${err.message}`);
  process.exit(1);
}
// Only the JSON array should be on stdout, but skip anything printed before it.
const start = stdout.search(/^\[/m);
if (start < 0) {
  console.error(`check-pack: no JSON from \`npm pack --dry-run --json\`:\n${stdout}`);
  process.exit(1);
}
const [pack] = JSON.parse(stdout.slice(start));
const files = pack.files.map((f) => ({ path: f.path.replace(/\\/g, '/'), size: f.size }));
const packed = new Set(files.map((f) => f.path));

const kb = (n) => `${(n / 1024).toFixed(1)} kB`;
console.log(`\n${pack.id}: ${files.length} files`);
for (const f of [...files].sort((a, b) => a.path.localeCompare(b.path))) {
  console.log(`  ${kb(f.size).padStart(9)}  ${f.path}`);
}
console.log(`package size: ${kb(pack.size)}, unpacked size: ${kb(pack.unpackedSize)}\n`);

const ROOT_FILES = new Set(['package.json', 'README.md', 'LICENSE']);
const offending = files
  .map((f) => f.path)
  .filter((p) => !ROOT_FILES.has(p) && !p.startsWith('dist/'));
if (offending.length > 0) {
  problems.push(
    `packed files outside package.json, README.md, LICENSE and dist/:\n${offending.map((p) => `    ${p}`).join('\n')}`,
  );
}
const testFiles = files.map((f) => f.path).filter((p) => /\.(test|spec)\.[cm]?[jt]sx?$|(^|\/)__tests__\//.test(p));
if (testFiles.length > 0) {
  problems.push(`test files packed:\n${testFiles.map((p) => `    ${p}`).join('\n')}`);
}
for (const p of ROOT_FILES) {
  if (!packed.has(p)) problems.push(`${p} is not packed`);
}

// --- every exported file is packed --------------------------------------------------------

const manifest = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
const targets = new Set();
const collect = (v) => {
  if (typeof v === 'string') targets.add(v.replace(/^\.\//, ''));
  else if (v && typeof v === 'object') Object.values(v).forEach(collect);
};
collect(manifest.exports);
for (const field of ['main', 'types', 'module']) collect(manifest[field]);
for (const t of targets) {
  if (!packed.has(t)) problems.push(`${t} (named by package.json) is not packed`);
}

// --- the root entry never imports React, TanStack Query or the server entry -----------------

const REACT = /^(react|react-dom|@tanstack\/react-query)(\/|$)/;
// Static imports and re-exports (`import … from 'x'`, `export … from 'x'`, `import 'x'`), dynamic
// and type-level imports (`import('x')`), and `require('x')`.
const SPECIFIER =
  /\b(?:import|export)\b[^'"`;]*?\bfrom\s*['"]([^'"]+)['"]|\bimport\s*['"]([^'"]+)['"]|\b(?:import|require)\s*\(\s*['"]([^'"]+)['"]\s*\)/g;

/** The import specifiers of a JS or .d.ts file, comments stripped. */
function specifiers(source) {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"])\/\/.*$/gm, '$1');
  return [...code.matchAll(SPECIFIER)].map((m) => m[1] ?? m[2] ?? m[3]);
}

/** For a .d.ts graph, `./core.js` is declared by `./core.d.ts`. */
function resolveRelative(from, spec, dts) {
  let target = path.posix.join(path.posix.dirname(from), spec);
  if (dts) target = target.replace(/\.js$/, '.d.ts').replace(/\.mjs$/, '.d.mts');
  return target;
}

/**
 * Walks `entry` through relative imports; reports the bare imports `forbidden` refuses, and the
 * files `unreachable` names, with their chain.
 */
function checkGraph(entry, { label, forbidden, unreachable = () => false }) {
  const dts = entry.endsWith('.d.ts');
  const seen = new Set();
  const queue = [[entry, [entry]]];
  const bare = new Set();
  while (queue.length > 0) {
    const [file, chain] = queue.shift();
    if (seen.has(file)) continue;
    seen.add(file);
    if (!packed.has(file)) {
      problems.push(`${chain.join(' -> ')}: ${file} is not packed`);
      continue;
    }
    const abs = path.join(pkgDir, file);
    if (!existsSync(abs)) {
      problems.push(`${chain.join(' -> ')}: ${file} does not exist`);
      continue;
    }
    for (const spec of specifiers(readFileSync(abs, 'utf8'))) {
      if (spec.startsWith('.')) {
        const target = resolveRelative(file, spec, dts);
        if (!target.startsWith('dist/')) {
          problems.push(`${chain.join(' -> ')} imports ${spec}, outside dist/`);
          continue;
        }
        if (unreachable(target)) {
          problems.push(`${label} reaches ${target}: ${[...chain, target].join(' -> ')}`);
        }
        queue.push([target, [...chain, target]]);
      } else {
        bare.add(spec);
        if (forbidden(spec)) {
          problems.push(`${label} imports '${spec}': ${chain.join(' -> ')}`);
        }
      }
    }
  }
  console.log(
    `${entry}: ${seen.size} files reached, ${bare.size ? `bare imports: ${[...bare].join(', ')}` : 'no bare imports'}`,
  );
}

const entryFiles = (name, fallback) => {
  const e = manifest.exports?.[name];
  if (name !== '.' && !e) problems.push(`package.json exports no '${name}'`);
  return [e?.import ?? `${fallback}.js`, e?.types ?? `${fallback}.d.ts`].map((f) => f.replace(/^\.\//, ''));
};
const SERVER_FILE = /^dist\/server\.(js|d\.ts)$/;
for (const file of entryFiles('.', 'dist/index')) {
  checkGraph(file, {
    label: 'the root entry',
    forbidden: (spec) => REACT.test(spec),
    unreachable: (target) => SERVER_FILE.test(target),
  });
}
for (const file of entryFiles('./server', 'dist/server')) {
  checkGraph(file, { label: 'the server entry', forbidden: (spec) => !spec.startsWith('node:') });
}

if (problems.length > 0) {
  console.error(`\ncheck-pack: FAILED\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  process.exit(1);
}
console.log('check-pack: OK');
