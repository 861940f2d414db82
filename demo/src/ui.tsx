/** Small shared pieces: icons (inline SVG, no icon font: the app shell works offline), avatars, badges. */
import { initials } from './identity.js';

const PATHS = {
  plus: 'M12 5v14M5 12h14',
  left: 'M15 18l-6-6 6-6',
  right: 'M9 18l6-6-6-6',
  edit: 'M4 20h4L19 9l-4-4L4 16v4zM13.5 6.5l4 4',
  trash: 'M4 7h16M10 11v6M14 11v6M6 7l1 13h10l1-13M9 7V4h6v3',
  close: 'M6 6l12 12M18 6L6 18',
  send: 'M4 12l16-8-6 16-2.5-6.5L4 12zM11.5 13.5L20 4',
  merge: 'M6 3v6a6 6 0 0 0 6 6h6M15 12l3 3-3 3M6 21v-6',
  alert: 'M12 8v5M12 16.5h.01M10.3 3.9L2.4 18a2 2 0 0 0 1.7 3h15.8a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0z',
  info: 'M12 11v6M12 7.5h.01M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18z',
  clock: 'M12 7v5l3 2M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18z',
  code: 'M8 8l-4 4 4 4M16 8l4 4-4 4M13.5 5l-3 14',
  inspect: 'M4 5h16v11H4zM8 20h8M12 16v4M7 12l2.5-3 2.5 2 3-4 2 2',
} as const;

export function Icon({ name, size = 16 }: { name: keyof typeof PATHS; size?: number }) {
  return (
    <svg className="icon" aria-hidden="true" viewBox="0 0 24 24" width={size} height={size} fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round" strokeLinejoin="round">
      <path d={PATHS[name]} />
    </svg>
  );
}

export function Avatar({ name, color, size = 'md', title }: { name: string; color: string; size?: 'xs' | 'sm' | 'md'; title?: string }) {
  return (
    <span className={`avatar avatar-${size}`} style={{ background: color }} title={title ?? name} aria-hidden="true">
      {initials(name)}
    </span>
  );
}

/** "Not acknowledged by the server yet": saved in this browser, waiting to be sent or confirmed. */
export function PendingBadge({ title }: { title: string }) {
  return (
    <span className="badge-pending" title={title}>
      <Icon name="clock" size={12} /> pending
    </span>
  );
}
