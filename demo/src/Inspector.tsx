/**
 * The worker inspector one click away: `mountInspector` (tether/inspector) renders
 * `client.inspect()` live in a side sheet — connection, outbox, subscriptions, documents,
 * presence and the worker's log.
 */
import { useEffect, useRef, useState } from 'react';
import { createPortal } from 'react-dom';
import type { TetherClient } from '../../sdk/index.js';
import { Icon } from './ui.js';

export function InspectorButton({ client }: { client: TetherClient }) {
  const [open, setOpen] = useState(false);
  const trigger = useRef<HTMLButtonElement>(null);
  return (
    <>
      <button
        ref={trigger}
        id="inspector-button"
        className="btn btn-quiet topbar-btn"
        aria-expanded={open}
        aria-controls="inspector"
        onClick={() => setOpen(!open)}
        title="What the Tether worker holds: connection, outbox, subscriptions, documents, presence, log"
      >
        <Icon name="inspect" /> <span className="topbar-btn-label">Inspector</span>
      </button>
      {open && (
        <InspectorDrawer
          client={client}
          onClose={() => {
            setOpen(false);
            trigger.current?.focus();
          }}
        />
      )}
    </>
  );
}

function InspectorDrawer({ client, onClose }: { client: TetherClient; onClose: () => void }) {
  const host = useRef<HTMLDivElement>(null);
  const close = useRef<HTMLButtonElement>(null);
  const [failed, setFailed] = useState('');
  useEffect(() => {
    close.current?.focus();
    let unmount: (() => void) | undefined;
    let gone = false;
    // Loaded on first use: the panel is not part of what every visit downloads.
    import('../../sdk/inspector-panel.js').then(
      ({ mountInspector }) => {
        if (!gone && host.current) unmount = mountInspector(host.current, client);
      },
      (error: unknown) => setFailed(String(error)),
    );
    return () => {
      gone = true;
      unmount?.();
    };
  }, [client]);
  useEffect(() => {
    const escape = (e: KeyboardEvent) => e.key === 'Escape' && onClose();
    document.addEventListener('keydown', escape);
    return () => document.removeEventListener('keydown', escape);
  }, [onClose]);
  // In <body>: the sticky header's backdrop filter would make it the box of a fixed element inside it.
  return createPortal(
    <>
      <div className="scrim" onClick={onClose} aria-hidden="true" />
      <aside id="inspector" className="drawer" role="dialog" aria-labelledby="inspector-title">
        <header className="drawer-head">
          <div>
            <h2 id="inspector-title">Inspector</h2>
            <p className="drawer-sub">Live from this browser's Tether worker</p>
          </div>
          <button ref={close} className="icon-btn" aria-label="Close the inspector" title="Close (Esc)" onClick={onClose}>
            <Icon name="close" />
          </button>
        </header>
        {failed ? <p className="callout callout-warning">The inspector could not load: {failed}</p> : <div ref={host} className="drawer-body" data-testid="inspector-panel" />}
      </aside>
    </>,
    document.body,
  );
}
