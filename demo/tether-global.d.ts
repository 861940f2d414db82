import type * as TetherGlobal from '../sdk/global.js';

declare global {
  interface Window {
    /** Defined by <script src="/tether.js">. */
    Tether: typeof TetherGlobal;
  }
}
