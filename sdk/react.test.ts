import { describe, expect, it } from 'vitest';
import { createElement } from 'react';
import { renderToString } from 'react-dom/server';
import { createStore } from 'zustand/vanilla';
import { useDoc, useDocStatus, useStatus } from './react.js';
import type { DocStatus, DocStore } from './documents.js';
import type { Status } from '../worker/api.js';

/** A document store shaped like the SDK's (a zustand store with its status), without a worker. */
function docStore(view: Record<string, unknown>): DocStore<Record<string, unknown>> {
  const status = createStore<DocStatus>()(() => ({ synced: true, pending: 2, version: 7, conflicts: [] }));
  return Object.assign(createStore<Record<string, unknown>>()(() => view), {
    name: 'board',
    status,
    transact: async () => undefined as never,
    clearConflicts: async () => {},
    close: () => {},
  });
}

describe('react bindings', () => {
  it('useDoc renders the view, or the part a selector picks; useDocStatus and useStatus their stores', () => {
    const doc = docStore({ hello: 'world', count: 3 });
    const connection = createStore<Status>()(() => ({ connection: 'online', pending: 1, lastSyncAt: null, error: null, mode: 'shared-worker', transport: 'websocket' }));
    const Board = () => {
      const view = useDoc(doc);
      const count = useDoc(doc, (v) => v.count as number);
      const { pending, version } = useDocStatus(doc);
      const { connection: state } = useStatus(connection);
      return createElement('p', null, `${String(view.hello)} ${count} ${pending}/${version} ${state}`);
    };
    expect(renderToString(createElement(Board))).toBe('<p>world 3 2/7 online</p>');
    // (Server rendering reads zustand's initial state; updates re-render through useSyncExternalStore in a browser.)
  });
});
