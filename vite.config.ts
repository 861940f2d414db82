/**
 * One config, one build per output (`vite build --mode <name>`), run in order by `npm run build`.
 * Each output lands in the package that publishes it:
 *   worker → sdk/dist/tether-worker.js  (IIFE: classic SharedWorker scripts work everywhere)
 *   global → sdk/dist/tether.js         (IIFE for <script src>, defines window.Tether)
 *   sdk    → sdk/dist/index.js          (ESM for npm; types come from tsconfig.lib.json)
 *   react  → sdk/dist/react.js          (the optional `tether/react` bindings)
 *   inspector        → sdk/dist/inspector.js         (the `tether/inspector` panel)
 *   inspector-global → sdk/dist/tether-inspector.js  (IIFE: adds Tether.mountInspector)
 *   demo   → server/dist/client/        (the page the reference server serves; the build copies
 *                                        tether.js and the worker there first)
 */
import { defineConfig, type Plugin, type UserConfig } from 'vite';
import { VitePWA } from 'vite-plugin-pwa';

/**
 * sdk/index.ts marks its worker URL `@vite-ignore` so that this lib build leaves it alone (it
 * would rewrite it to `"" + import.meta.url`, a form no bundler recognises). The app's bundler must
 * not be told the same, or Vite would skip shipping the worker: the marker is blanked from the
 * output (spaces of the same length, so the source map stays exact).
 */
const releaseWorkerUrl: Plugin = {
  name: 'tether:release-worker-url',
  renderChunk(code) {
    const released = code.replace(/\/\*\s*@vite-ignore\s*\*\//g, (marker) => ' '.repeat(marker.length));
    return released === code ? null : { code: released, map: null };
  },
};

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
      // The npm build leaves the SDK's dependencies to the app's bundler (one copy of zustand and React).
      ...(format === 'es' ? { rollupOptions: { external: ['comlink', 'zustand', 'zustand/vanilla', 'react'] } } : {}),
    },
    plugins: format === 'es' ? [releaseWorkerUrl] : [],
  };
}

export default defineConfig(({ mode }): UserConfig => {
  switch (mode) {
    case 'worker':
      return library('worker/main.ts', 'sdk/dist', 'tether-worker.js', 'iife', 'TetherWorker');
    case 'global':
      return library('sdk/global.ts', 'sdk/dist', 'tether.js', 'iife', 'Tether');
    case 'sdk':
      return library('sdk/index.ts', 'sdk/dist', 'index.js', 'es');
    case 'react':
      return library('sdk/react.ts', 'sdk/dist', 'react.js', 'es');
    case 'inspector':
      return library('sdk/inspector-panel.ts', 'sdk/dist', 'inspector.js', 'es');
    case 'inspector-global':
      return library('sdk/inspector-global.ts', 'sdk/dist', 'tether-inspector.js', 'iife', 'TetherInspector');
    default:
      return {
        root: 'demo',
        publicDir: false,
        build: { outDir: '../server/dist/client', emptyOutDir: false, target: 'es2022', sourcemap: true },
        plugins: [
          // The offline app shell (Workbox): the page, its assets, /tether.js and the worker are
          // precached, so a reload without a network still starts the app from this browser.
          // It runs after the SDK bundles are copied into its outDir, so they are in the precache.
          VitePWA({
            registerType: 'autoUpdate',
            injectRegister: false,
            manifest: {
              name: 'Tether team board',
              short_name: 'Team board',
              start_url: '/',
              display: 'standalone',
              theme_color: '#0f766e',
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
