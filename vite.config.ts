/**
 * One config, one build per output (`vite build --mode <name>`), run in order by `npm run build`:
 *   worker → dist/client/tether-worker.js  (IIFE: classic SharedWorker scripts work everywhere)
 *   global → dist/client/tether.js         (IIFE for <script src>, defines window.Tether)
 *   sdk    → dist/lib/index.js             (ESM for npm; types come from tsconfig.lib.json)
 *   react  → dist/lib/react.js             (the optional `tether/react` bindings)
 *   demo   → dist/client/index.html + assets
 */
import { defineConfig, type UserConfig } from 'vite';
import { VitePWA } from 'vite-plugin-pwa';

function library(entry: string, outDir: string, fileName: string, format: 'es' | 'iife', name?: string): UserConfig {
  return {
    publicDir: false,
    build: {
      outDir,
      emptyOutDir: false,
      minify: true,
      sourcemap: true,
      target: 'es2022',
      lib: { entry, formats: [format], fileName: () => fileName, ...(name ? { name } : {}) },
      ...(format === 'es' ? { rollupOptions: { external: ['comlink', 'zustand', 'zustand/vanilla', 'react'] } } : {}),
    },
  };
}

export default defineConfig(({ mode }): UserConfig => {
  switch (mode) {
    case 'worker':
      return library('worker/shared-worker.ts', 'dist/client', 'tether-worker.js', 'iife', 'TetherWorker');
    case 'global':
      return library('sdk/global.ts', 'dist/client', 'tether.js', 'iife', 'Tether');
    case 'sdk':
      return library('sdk/index.ts', 'dist/lib', 'index.js', 'es');
    case 'react':
      return library('sdk/react.ts', 'dist/lib', 'react.js', 'es');
    default:
      return {
        root: 'demo',
        publicDir: false,
        build: { outDir: '../dist/client', emptyOutDir: false, target: 'es2022', sourcemap: true },
        plugins: [
          // The offline app shell (Workbox): the page, its assets, /tether.js and the worker are
          // precached, so a reload without a network still starts the app from this browser.
          // It runs last, so the SDK bundles built before it into dist/client are in the precache.
          VitePWA({
            registerType: 'autoUpdate',
            injectRegister: false,
            manifest: {
              name: 'Tether team board',
              short_name: 'Team board',
              start_url: '/',
              display: 'standalone',
              theme_color: '#1a7f37',
              background_color: '#ffffff',
              icons: [],
            },
            workbox: {
              globPatterns: ['**/*.{js,css,html}'],
              globIgnores: ['**/*.map', 'sw.js', 'workbox-*.js'],
              navigateFallback: '/index.html',
              navigateFallbackDenylist: [/^\/api\//, /^\/ws/],
              cleanupOutdatedCaches: true,
            },
          }),
        ],
      };
  }
});
