// Builds the studio (index.html) and the chat page (chat.html) into dist/, which `lmforge studio` and
// `lmforge serve` serve. Relative asset paths, no CDN, no runtime network.
import { resolve } from 'node:path';
import { defineConfig } from 'vite';

export default defineConfig({
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2020',
    sourcemap: false,
    chunkSizeWarningLimit: 600,
    rollupOptions: {
      input: { index: resolve(__dirname, 'index.html'), chat: resolve(__dirname, 'chat.html') },
    },
  },
  server: {
    // `npm run dev` against a running `lmforge studio MAP --port 8765` (studio) or `lmforge serve` (chat)
    proxy: { '/api': 'http://127.0.0.1:8765', '/v1': 'http://127.0.0.1:8000' },
  },
});
