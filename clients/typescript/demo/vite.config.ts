import { fileURLToPath } from 'node:url';

import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

// The React demo, served by the comments example at /react/ (`npm run build:demo`).
// `npm run dev:demo` proxies the API to a comments example on 127.0.0.1:3000.
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/react/',
  plugins: [react()],
  resolve: {
    // The package's entries, from source (exact matches: `@ssehub/client` is a prefix of
    // `@ssehub/client/react`).
    alias: [
      {
        find: /^@ssehub\/client$/,
        replacement: fileURLToPath(new URL('../src/index.ts', import.meta.url)),
      },
      {
        find: /^@ssehub\/client\/react$/,
        replacement: fileURLToPath(new URL('../src/react.ts', import.meta.url)),
      },
    ],
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
  },
  server: {
    proxy: { '/api': 'http://127.0.0.1:3000' },
  },
});
