import type { TetherClient } from '../../sdk/index.js';
import { Board } from './Board.js';
import { Chat } from './Chat.js';
import { Hello } from './Hello.js';
import { StatusBar } from './StatusBar.js';

/** A team board: the three patterns of the seed talk side by side, on one connection. */
export function App({ client }: { client: TetherClient }) {
  return (
    <>
      <header>
        <h1>Team board</h1>
        <StatusBar client={client} />
      </header>
      <main>
        <Board client={client} />
        <Chat client={client} />
        <Hello client={client} />
      </main>
      <footer>
        Open this page in two windows (or two browsers), cut the network, edit in both, bring it back, and watch
        them converge. Everything you do offline waits in this browser and is sent exactly once.
      </footer>
    </>
  );
}
