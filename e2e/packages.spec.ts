/**
 * The packages as a user installs them: `npm pack` of the SDK (`tether`) and of the server
 * (`tether-server`), each tarball installed where no workspace link can help — a fresh Vite app,
 * an empty folder — then used for real: the app type-checks against the packed types, builds with
 * Vite, is served from its own origin and calls `hello("world")` through the server in Chromium;
 * the server starts from its `bin`.
 */
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sirv from 'sirv';
import { expect, test, type Browser, type Page } from '@playwright/test';
import { mustRun, runCommand, userEnv, type CommandResult } from './fixtures/run-command.js';
import { startServerProcess, type ServerProcess } from './fixtures/server-process.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Packages that belong to the server: none may reach a browser app that installs the SDK. */
const SERVER_ONLY = ['tether-server', 'ws', 'better-sqlite3', 'pino', 'jose', 'sirv', 'bindings', 'prebuild-install', 'node-gyp'];
/** What the SDK may bring into an app (React is the app's own, an optional peer). */
const SDK_DEPENDENCIES = ['comlink', 'valibot', 'zustand'];

/** The version of a package installed in this repository, so the fresh app uses the same tools (and npm's cache). */
function installedVersion(name: string): string {
  return (JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
}

function tarballFiles(tarball: string): Promise<string[]> {
  return mustRun('tar', ['-tzf', tarball], ROOT).then((out) => out.split('\n').filter(Boolean));
}

/** Every package name under node_modules (scoped and nested too). */
function installedPackages(modules: string): string[] {
  if (!existsSync(modules)) return [];
  return readdirSync(modules).flatMap((entry) => {
    if (entry.startsWith('.')) return [];
    if (entry.startsWith('@')) return readdirSync(join(modules, entry)).flatMap((name) => [`${entry}/${name}`, ...installedPackages(join(modules, entry, name, 'node_modules'))]);
    return [entry, ...installedPackages(join(modules, entry, 'node_modules'))];
  });
}

async function serveStatic(dir: string): Promise<{ origin: string; close: () => Promise<void> }> {
  const server: Server = createServer(sirv(dir, { single: true }));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    // `localhost`, while the Tether server is reached at 127.0.0.1: another origin, as in production.
    origin: `http://localhost:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** The URL of the SharedWorker running in `page`'s browser context (CDP lists it; Playwright does not). */
async function sharedWorkerUrl(browser: Browser, page: Page): Promise<string | undefined> {
  const session = await page.context().newCDPSession(page);
  const { targetInfo } = await session.send('Target.getTargetInfo');
  await session.detach();
  const cdp = await browser.newBrowserCDPSession();
  try {
    const { targetInfos } = await cdp.send('Target.getTargets');
    return targetInfos.find((t) => t.type === 'shared_worker' && t.browserContextId === targetInfo.browserContextId)?.url;
  } finally {
    await cdp.detach();
  }
}

async function expectHelloWorld(page: Page, url: string): Promise<void> {
  await page.goto(url);
  await expect(page.locator('#greeting')).toHaveText('Hello, world!', { timeout: 15_000 });
  // Rendered by `useStatus` from tether/react.
  await expect(page.locator('#status')).toHaveText('online');
}

const MAIN_TS = `import { createElement } from 'react';
import { createRoot } from 'react-dom/client';
import { connect, TetherError, type TetherClient } from 'tether';
import { useStatus } from 'tether/react';

const ws = new URLSearchParams(location.search).get('ws') ?? 'ws://127.0.0.1:8080/ws';
const client: TetherClient = connect({ url: ws });

function Status() {
  const { connection } = useStatus(client.status);
  return createElement('p', { id: 'status' }, connection);
}
createRoot(document.getElementById('root')!).render(createElement(Status));

const out = document.getElementById('greeting')!;
client.rpc.call<string>('hello', ['world']).then(
  (greeting) => { out.textContent = greeting; },
  (error: unknown) => { out.textContent = error instanceof TetherError ? \`\${error.code}: \${error.message}\` : String(error); },
);

// Type-level checks: each line must be an error, so a package whose types went missing (any) fails tsc.
// @ts-expect-error a procedure name is a string
void client.rpc.call(42, []);
// @ts-expect-error the connection state is one of three words
const state: 'up' = client.status.getState().connection;
void state;
`;

const INDEX_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>A fresh app</title></head>
<body><div id="root"></div><p id="greeting"></p><script type="module" src="/src/main.ts"></script></body></html>
`;

test.describe.configure({ mode: 'serial' });

let work: string;
let sdkTarball: string;
let serverTarball: string;
let appDir: string;
let serverDir: string;
/** The server package's install compiles better-sqlite3 (~70 s here): it starts in beforeAll and runs while the app is tested. */
let serverInstall: Promise<CommandResult>;

test.beforeAll(async () => {
  test.setTimeout(180_000);
  work = mkdtempSync(join(tmpdir(), 'tether-packages-'));
  const tarballs = join(work, 'tarballs');
  mkdirSync(tarballs);
  // Exactly what a release does: each package's prepack builds it.
  await mustRun('npm', ['pack', '--workspaces', '--pack-destination', tarballs], ROOT, { timeoutMs: 150_000 });
  const version = (name: string) => (JSON.parse(readFileSync(join(ROOT, name, 'package.json'), 'utf8')) as { version: string }).version;
  sdkTarball = join(tarballs, `tether-${version('sdk')}.tgz`);
  serverTarball = join(tarballs, `tether-server-${version('server')}.tgz`);

  serverDir = join(work, 'server-folder');
  mkdirSync(serverDir);
  serverInstall = runCommand('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', serverTarball], serverDir, { timeoutMs: 400_000 });

  appDir = join(work, 'fresh-app');
  mkdirSync(join(appDir, 'src'), { recursive: true });
  writeFileSync(join(appDir, 'package.json'), JSON.stringify({
    name: 'fresh-app',
    private: true,
    type: 'module',
    dependencies: { tether: `file:${sdkTarball}`, react: installedVersion('react'), 'react-dom': installedVersion('react-dom') },
    devDependencies: {
      vite: installedVersion('vite'),
      typescript: installedVersion('typescript'),
      '@types/react': installedVersion('@types/react'),
      '@types/react-dom': installedVersion('@types/react-dom'),
    },
  }, null, 2));
  writeFileSync(join(appDir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      target: 'ES2022', module: 'ESNext', moduleResolution: 'bundler', lib: ['ES2022', 'DOM', 'DOM.Iterable'],
      // skipLibCheck off: the package's own .d.ts files must type-check in a stranger's project.
      strict: true, skipLibCheck: false, noEmit: true, types: [], verbatimModuleSyntax: true,
    },
    include: ['src'],
  }, null, 2));
  writeFileSync(join(appDir, 'index.html'), INDEX_HTML);
  writeFileSync(join(appDir, 'src', 'main.ts'), MAIN_TS);
});

test.afterAll(async () => {
  // The installs are ~250 MB (Vite, a compiled better-sqlite3): leave nothing behind once the install has settled.
  await serverInstall?.catch(() => undefined);
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the SDK tarball holds the built package and nothing of the sources or tests', async () => {
  const files = await tarballFiles(sdkTarball);
  for (const required of ['index.js', 'react.js', 'inspector.js', 'tether-worker.js', 'tether.js', 'tether-inspector.js', 'types/sdk/index.d.ts', 'types/sdk/react.d.ts', 'types/sdk/inspector-panel.d.ts']) {
    expect(files, required).toContain(`package/dist/${required}`);
  }
  expect(files).toEqual(expect.arrayContaining(['package/package.json', 'package/README.md', 'package/LICENSE']));
  expect(files.filter((file) => !/^package\/(dist\/|package\.json$|README\.md$|LICENSE$)/.test(file))).toEqual([]);
  expect(files.filter((file) => /\.test\.|\.spec\.|\.ts$/.test(file) && !file.endsWith('.d.ts'))).toEqual([]);
  const manifest = JSON.parse(await mustRun('tar', ['-xzOf', sdkTarball, 'package/package.json'], ROOT)) as Record<string, unknown>;
  expect(manifest.private).toBeUndefined();
  expect(Object.keys(manifest.dependencies as object).sort()).toEqual(SDK_DEPENDENCIES);
});

test('a fresh Vite app installs the SDK tarball, type-checks, builds and calls hello("world") from its own origin', async ({ browser }) => {
  test.setTimeout(240_000);
  await mustRun('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline'], appDir, { timeoutMs: 180_000 });

  const installed = installedPackages(join(appDir, 'node_modules'));
  expect(installed).toContain('tether');
  expect(installed.filter((name) => SERVER_ONLY.includes(name))).toEqual([]);

  await mustRun(join(appDir, 'node_modules', '.bin', 'tsc'), ['-p', '.'], appDir, { timeoutMs: 60_000 });
  const build = await mustRun(join(appDir, 'node_modules', '.bin', 'vite'), ['build'], appDir, { timeoutMs: 60_000 });
  // Vite found `new URL('./tether-worker.js', import.meta.url)` in the package and shipped the worker.
  const assets = readdirSync(join(appDir, 'dist', 'assets'));
  expect(assets.filter((name) => /^tether-worker-.*\.js$/.test(name)), build).toHaveLength(1);

  const server = await startServerProcess();
  const app = await serveStatic(join(appDir, 'dist'));
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await expectHelloWorld(page, `${app.origin}/?ws=${encodeURIComponent(server.wsUrl)}`);
    expect(await sharedWorkerUrl(browser, page)).toMatch(new RegExp(`^${app.origin}/assets/tether-worker-[\\w-]+\\.js$`));
  } finally {
    await context.close();
    await app.close();
    await server.stop();
  }
});

test('the same app under the Vite dev server finds the worker in the installed package', async ({ browser }) => {
  test.setTimeout(60_000);
  const server = await startServerProcess();
  const dev = await startViteDev(appDir);
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await expectHelloWorld(page, `${dev.origin}/?ws=${encodeURIComponent(server.wsUrl)}`);
    expect(await sharedWorkerUrl(browser, page)).toContain(`${dev.origin}/node_modules/tether/dist/tether-worker.js`);
  } finally {
    await context.close();
    await dev.stop();
    await server.stop();
  }
});

test('the server tarball installs into an empty folder and its bin serves the API, the SDK files and the app above', async ({ browser }) => {
  test.setTimeout(420_000);
  const files = await tarballFiles(serverTarball);
  expect(files).toEqual(expect.arrayContaining(['package/dist/server/index.js', 'package/dist/client/tether.js', 'package/dist/client/tether-worker.js', 'package/README.md', 'package/LICENSE']));
  expect(files.filter((file) => /\.test\.|\.spec\.|\/testing\/|\.ts$/.test(file))).toEqual([]);

  const install = await serverInstall;
  expect(install.code, install.output.slice(-4000)).toBe(0);
  const bin = join(serverDir, 'node_modules', '.bin');
  for (const name of ['tether-server', 'tether-backup', 'tether-restore']) expect(existsSync(join(bin, name)), name).toBe(true);

  const server: ServerProcess = await startServerProcess({}, { command: join(bin, 'tether-server') });
  const context = await browser.newContext();
  try {
    const health = await server.health();
    expect(health.ok).toBe(true);
    const script = await fetch(`${server.httpUrl}/tether.js`);
    expect(script.status).toBe(200);
    expect(script.headers.get('content-type')).toContain('javascript');
    expect(await (await fetch(`${server.httpUrl}/`)).text()).toContain('<div id="root">');

    // The packed app of the test above, against the packed server.
    const app = await serveStatic(join(appDir, 'dist'));
    try {
      await expectHelloWorld(await context.newPage(), `${app.origin}/?ws=${encodeURIComponent(server.wsUrl)}`);
    } finally {
      await app.close();
    }

    const backup = join(work, 'backup.db');
    await mustRun(join(bin, 'tether-backup'), [backup], serverDir, { env: { TETHER_DB: server.db }, timeoutMs: 30_000 });
    expect(existsSync(backup)).toBe(true);
  } finally {
    await context.close();
    await server.stop();
  }
});

async function freePort(): Promise<number> {
  const probe = createTcpServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** `vite` (dev) in `dir` on a free port; resolves once it prints its address. */
async function startViteDev(dir: string): Promise<{ origin: string; stop: () => Promise<void> }> {
  const port = await freePort();
  const child = spawn(join(dir, 'node_modules', '.bin', 'vite'), ['--host', '127.0.0.1', '--port', String(port), '--strictPort', '--clearScreen', 'false'], { cwd: dir, env: userEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const origin = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`vite dev did not start in 20 s:\n${output}`)), 20_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const match = output.replace(/\u001b\[[0-9;]*m/g, '').match(/Local:\s+(http:\/\/127\.0\.0\.1:\d+)/);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => reject(new Error(`vite dev exited with ${code}:\n${output}`)));
  });
  return {
    origin,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}
