import { useEffect, useState } from 'react';
import { useStatus } from '../../sdk/react.js';
import type { TetherClient } from '../../sdk/index.js';

function ago(at: number | null, now: number): string {
  if (at === null) return 'never';
  const s = Math.max(0, Math.round((now - at) / 1000));
  return s < 5 ? 'just now' : s < 120 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
}

/** Online / offline / syncing at a glance, with what is waiting, when we were last in sync, and why not. */
export function StatusBar({ client }: { client: TetherClient }) {
  const { connection, pending, lastSyncAt, error, mode, transport } = useStatus(client.status);
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, []);
  const state = connection === 'online' && pending > 0 ? 'syncing' : connection;
  const label = { connecting: 'connecting…', online: 'online', offline: 'offline', syncing: 'syncing' }[state];
  return (
    <p id="status" className="status" data-connection={connection} data-state={state} aria-live="polite">
      <span className="dot" />
      <span id="status-text">{label}</span>
      <span id="pending" className="pending">{pending > 0 ? `${pending} pending` : ''}</span>
      <span id="last-sync" className="last-sync">last sync: {ago(lastSyncAt, now)}</span>
      {mode !== 'shared-worker' && (
        <span id="host-mode" className="host-mode" data-mode={mode} title="This browser has no SharedWorker: one tab holds the connection for all">
          {mode === 'leader' ? 'this tab holds the connection' : 'through another tab'}
        </span>
      )}
      {transport === 'long-polling' && (
        <span id="transport" className="host-mode" data-transport={transport} title="WebSockets do not get through this network: the connection uses HTTP long polling, and moves back when they do">
          over long polling
        </span>
      )}
      {error && (
        <span id="status-error" className="status-error" title={error.message}>
          {error.code === 'unauthorized' ? 'sign-in needed: changes are kept until it works' : error.message}
        </span>
      )}
    </p>
  );
}
