// Builds the studio into dist/, which `lmforge studio` serves. Relative asset paths, no CDN, no runtime network.
import { defineConfig } from 'vite';

export default defineConfig({
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2020',
    sourcemap: false,
    chunkSizeWarningLimit: 600,
  },
  server: {
    // `npm run dev` against a running `lmforge studio MAP --port 8765`
    proxy: { '/api': 'http://127.0.0.1:8765' },
  },
});
