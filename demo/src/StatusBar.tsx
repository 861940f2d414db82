import { useEffect, useState } from 'react';
import { useStatus } from '../../sdk/react.js';
import type { TetherClient } from '../../sdk/index.js';

function ago(at: number | null, now: number): string {
  if (at === null) return 'never';
  const s = Math.max(0, Math.round((now - at) / 1000));
  return s < 5 ? 'just now' : s < 120 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
}

/** Re-renders every second (relative times). */
export function useNow(): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, []);
  return now;
}

/** Online / offline / syncing at a glance, with what is waiting, when we were last in sync, and why not. */
export function StatusBar({ client }: { client: TetherClient }) {
  const { connection, pending, lastSyncAt, error, mode, transport } = useStatus(client.status);
  const now = useNow();
  const state = connection === 'online' && pending > 0 ? 'syncing' : connection;
  const label = { connecting: 'connecting…', online: 'online', offline: 'offline', syncing: 'syncing' }[state];
  const explain = {
    connecting: 'Connecting to the server…',
    online: 'Connected: changes are shared as you make them.',
    syncing: 'Connected: sending what was saved in this browser.',
    offline: 'Offline: your changes are saved in this browser and sent when the connection is back.',
  }[state];
  return (
    <div id="status" className="status" data-connection={connection} data-state={state} title={explain}>
      {/* Announced when it changes; the clock beside it is not (it ticks every second). */}
      <span className="status-main" role="status" aria-live="polite">
        <span className="dot" aria-hidden="true" />
        <span id="status-text" className="status-text">
          {label}
        </span>
        <span id="pending" className="pending">
          {pending > 0 ? `${pending} pending` : ''}
        </span>
        {transport === 'long-polling' && (
          <span id="transport" className="status-tag" data-transport={transport} title="WebSockets do not get through this network: the connection uses HTTP long polling, and moves back when they do">
            over long polling
          </span>
        )}
        {mode !== 'shared-worker' && (
          <span id="host-mode" className="status-tag" data-mode={mode} title="This browser has no SharedWorker: one tab holds the connection for all">
            {mode === 'leader' ? 'this tab holds the connection' : 'through another tab'}
          </span>
        )}
      </span>
      <span id="last-sync" className="last-sync">
        last sync: {ago(lastSyncAt, now)}
      </span>
      {error && (
        <span id="status-error" className="status-error" title={error.message}>
          {error.code === 'unauthorized' ? 'sign-in needed: changes are kept until it works' : error.message}
        </span>
      )}
    </div>
  );
}

/** A calm banner under the header while offline: what still works and what happens next. */
export function OfflineBanner({ client }: { client: TetherClient }) {
  const { connection, pending } = useStatus(client.status);
  if (connection !== 'offline') return null;
  return (
    <div id="offline-banner" className="banner banner-offline">
      <svg aria-hidden="true" viewBox="0 0 24 24" width="18" height="18">
        <path d="M2 8.5a15 15 0 0 1 20 0M5.5 12a10 10 0 0 1 13 0M9 15.5a5 5 0 0 1 6 0M12 19h.01M3 3l18 18" fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round" />
      </svg>
      <span>
        <strong>You are offline.</strong> Keep working: {pending > 0 ? `${pending} change${pending > 1 ? 's' : ''} wait` : 'changes wait'} in this browser and
        are sent exactly once when the connection is back.
      </span>
    </div>
  );
}
