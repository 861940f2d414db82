/** Toasts: short notices in a corner (a conflict resolved by re-running, a change not applied). */
import { create } from 'zustand';
import { Icon } from './ui.js';

export interface Notice {
  /** One notice per id: a newer one replaces it (the DOM id, e.g. `board-notice`). */
  id: string;
  kind: 'conflict' | 'error' | 'info';
  title: string;
  text: string;
}

interface Notices {
  list: Notice[];
  show(notice: Notice): void;
  dismiss(id: string): void;
}

export const useNotices = create<Notices>()((set) => ({
  list: [],
  show: (notice) => set((s) => ({ list: [...s.list.filter((n) => n.id !== notice.id), notice] })),
  dismiss: (id) => set((s) => ({ list: s.list.filter((n) => n.id !== id) })),
}));

export function Toasts() {
  const { list, dismiss } = useNotices();
  return (
    <div className="toasts" aria-live="polite">
      {list.map((notice) => (
        <div key={notice.id} id={notice.id} className={`toast toast-${notice.kind}`} role={notice.kind === 'error' ? 'alert' : 'status'}>
          <span className="toast-icon" aria-hidden="true">
            <Icon name={notice.kind === 'conflict' ? 'merge' : notice.kind === 'error' ? 'alert' : 'info'} />
          </span>
          <p className="toast-text">
            <strong>{notice.title}</strong> {notice.text}
          </p>
          <button className="icon-btn" aria-label="Dismiss notice" title="Dismiss" onClick={() => dismiss(notice.id)}>
            <Icon name="close" />
          </button>
        </div>
      ))}
    </div>
  );
}
