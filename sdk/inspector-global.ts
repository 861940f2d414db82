/**
 * Script-tag build of the inspector panel: `<script src="/tether-inspector.js">` after
 * `/tether.js` adds `Tether.mountInspector` (kept out of tether.js, which every page loads).
 */
import { mountInspector } from './inspector-panel.js';

const global = globalThis as { Tether?: Record<string, unknown> };
(global.Tether ??= {}).mountInspector = mountInspector;

export { mountInspector };
