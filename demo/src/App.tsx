import type { TetherClient } from '../../sdk/index.js';
import { Board } from './Board.js';
import { Chat } from './Chat.js';
import { Hello } from './Hello.js';
import { InspectorButton } from './Inspector.js';
import { Toasts } from './notices.js';
import { ProfileChip, WelcomeBanner } from './Profile.js';
import { OfflineBanner, StatusBar } from './StatusBar.js';

/** A team board: the three patterns of the seed talk side by side, on one connection. */
export function App({ client }: { client: TetherClient }) {
  return (
    <div className="app">
      <a className="skip-link" href="#card-input">
        Skip to the board
      </a>
      <header className="topbar">
        <div className="brand">
          <svg className="logo" aria-hidden="true" viewBox="0 0 32 32" width="28" height="28">
            <rect width="32" height="32" rx="8" fill="var(--brand)" />
            <path d="M10 12a4 4 0 0 1 4-4h4a4 4 0 0 1 0 8h-1M22 20a4 4 0 0 1-4 4h-4a4 4 0 0 1 0-8h1" fill="none" stroke="#fff" strokeWidth="2.4" strokeLinecap="round" />
          </svg>
          <h1>
            Team board <span className="brand-sub">by Tether</span>
          </h1>
        </div>
        <div className="topbar-end">
          <StatusBar client={client} />
          <InspectorButton client={client} />
          <ProfileChip />
        </div>
      </header>
      <OfflineBanner client={client} />
      <WelcomeBanner />
      <main className="layout">
        <Board client={client} />
        <aside className="side">
          <Chat client={client} />
          <Hello client={client} />
        </aside>
      </main>
      <footer className="footer">
        Open this page in two windows (or two browsers), cut the network, edit in both, bring it back, and watch them converge. Everything you do offline waits in this
        browser and is sent exactly once.
      </footer>
      <Toasts />
    </div>
  );
}
