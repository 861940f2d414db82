/**
 * `client.inspect()` against a fake tab API: the worker ends registered exactly when a store is
 * open whatever the order of opens, closes and the attach, and nothing the worker (or a released
 * proxy) answers becomes an unhandled rejection.
 */
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type * as Comlink from 'comlink';
import type { Inspection, InspectListener, Outcome, TabApi } from '../worker/api.js';
import { createInspector, type InspectorStore } from './inspector.js';

const NOT_ATTACHED: Outcome<null> = { ok: false, error: { code: 'closed', message: 'this tab is not attached (was the client closed?)' } };

/** The worker's side of one tab, as hub.ts has it: one inspector listener, replaced by each inspect. */
function fakeTab(overrides: Partial<Pick<TabApi, 'inspect' | 'stopInspect'>> = {}) {
  const worker = { listener: undefined as InspectListener | undefined, calls: [] as string[] };
  const tab = {
    inspect: (listener: InspectListener) => {
      worker.calls.push('inspect');
      worker.listener = listener;
      return Promise.resolve({ ok: true, value: null } as Outcome<null>);
    },
    stopInspect: () => {
      worker.calls.push('stopInspect');
      worker.listener = undefined;
    },
    ...overrides,
  };
  return { worker, tab: tab as unknown as Comlink.Remote<TabApi> };
}

const inspection = (at: number) => ({ at }) as unknown as Inspection;
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

let unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
beforeEach(() => {
  unhandled = [];
  process.on('unhandledRejection', onUnhandled);
});
afterEach(() => {
  process.off('unhandledRejection', onUnhandled);
  vi.restoreAllMocks();
});

describe('client.inspect(): the worker is registered iff a store is open', () => {
  it('close + reopen before the tab is attached (React StrictMode mount/unmount/mount): the reopened store keeps receiving', async () => {
    const { worker, tab } = fakeTab();
    let attach!: (tab: Comlink.Remote<TabApi>) => void;
    const inspect = createInspector(new Promise((resolve) => (attach = resolve)), () => 3);
    const first = inspect();
    first.close(); // StrictMode cleanup
    const second = inspect(); // StrictMode re-run
    attach(tab);
    await settle();
    expect(worker.listener).toBeDefined();
    worker.listener?.(inspection(1));
    expect(second.getState()).toEqual({ at: 1 });
    expect(worker.calls).toEqual(['inspect']);
  });

  it('close + reopen once attached: stopInspect then inspect, the new store receives', async () => {
    const { worker, tab } = fakeTab();
    const inspect = createInspector(Promise.resolve(tab), () => 3);
    const first = inspect();
    await settle();
    first.close();
    const second = inspect();
    await settle();
    expect(worker.calls).toEqual(['inspect', 'stopInspect', 'inspect']);
    worker.listener?.(inspection(2));
    expect(second.getState()).toEqual({ at: 2 });
  });

  it('any sequence of opens, closes and the attach (model test)', async () => {
    type Step = { op: 'open' } | { op: 'close'; pick: number } | { op: 'attach' } | { op: 'settle' };
    const step = fc.oneof(
      fc.constant<Step>({ op: 'open' }),
      fc.nat().map<Step>((pick) => ({ op: 'close', pick })),
      fc.constant<Step>({ op: 'attach' }),
      fc.constant<Step>({ op: 'settle' }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(step, { maxLength: 30 }), async (steps) => {
        const { worker, tab } = fakeTab();
        let attach!: (tab: Comlink.Remote<TabApi>) => void;
        const inspect = createInspector(new Promise((resolve) => (attach = resolve)), () => 3);
        const open: InspectorStore[] = [];
        let n = 0;
        const check = () => {
          expect(worker.listener !== undefined).toBe(open.length > 0);
          worker.listener?.(inspection(++n));
          for (const store of open) expect(store.getState()).toEqual({ at: n });
        };
        let attached = false;
        for (const s of steps) {
          if (s.op === 'open') open.push(inspect());
          else if (s.op === 'close' && open.length > 0) open.splice(s.pick % open.length, 1)[0]!.close();
          else if (s.op === 'attach') (attach(tab), (attached = true));
          else if (s.op === 'settle') {
            await settle();
            if (attached) check();
          }
        }
        attach(tab);
        await settle();
        check();
      }),
      { numRuns: 200 },
    );
  });
});

describe('client.inspect(): failures', () => {
  it('closing a store after client.close() (the proxy released: every call throws) rejects nothing and warns nothing', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const released = () => {
      throw new TypeError('Proxy has been released and is not useable');
    };
    let closed = false;
    const { tab } = fakeTab();
    const inspect = createInspector(Promise.resolve(tab), () => 3, () => closed);
    const store = inspect();
    await settle();
    Object.assign(tab, { inspect: released, stopInspect: released });
    closed = true; // client.close()
    store.close(); // the panel unmounts afterwards
    inspect().close(); // and a late mount/unmount
    await settle();
    expect(unhandled).toEqual([]);
    expect(warn).not.toHaveBeenCalled();
  });

  it('a worker that rejects inspect, or answers NOT_ATTACHED, while the client is open: one clear warning, no unhandled rejection', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const { tab } = fakeTab({ inspect: () => Promise.resolve(NOT_ATTACHED) });
    const inspect = createInspector(Promise.resolve(tab), () => 3);
    const store = inspect();
    await settle();
    store.close();
    await settle();
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0]?.[0])).toMatch(/client\.inspect\(\).*inspect.*not attached/);

    const failing = fakeTab({ inspect: () => Promise.reject(new Error('worker gone')), stopInspect: () => Promise.reject(new Error('worker gone')) as never });
    const again = createInspector(Promise.resolve(failing.tab), () => 3);
    const other = again();
    await settle();
    other.close();
    await settle();
    expect(warn).toHaveBeenCalledTimes(2); // once for this client, though both calls failed
    expect(String(warn.mock.calls[1]?.[0])).toMatch(/worker gone/);
    expect(unhandled).toEqual([]);
  });
});
