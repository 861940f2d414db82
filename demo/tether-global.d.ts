import type * as TetherGlobal from '../sdk/global.js';
import type { TetherClient } from '../sdk/index.js';

declare global {
  interface Window {
    /** Defined by <script src="/tether.js"> (pages that load the script-tag build). */
    Tether: typeof TetherGlobal;
    /** The demo's client, exposed for tests and the devtools console. */
    tether: TetherClient;
  }
}
