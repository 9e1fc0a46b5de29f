import { defineConfig } from 'vite';

// Assets get content hashes in their names (the server caches them forever); index.html
// does not (the server revalidates it). TRAINYARD_WEB_OUT is where crates/web's build
// script wants them.
export default defineConfig({
  base: '/',
  build: {
    outDir: process.env.TRAINYARD_WEB_OUT ?? 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    reportCompressedSize: true,
  },
});
