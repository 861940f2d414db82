/** The presence contract in one process. */
import { describePresence } from './conformance.js';
import { createLocalPresence } from './local-presence.js';

describePresence('in-process presence', { open: (options) => Promise.resolve(createLocalPresence(options)) });
