import type { DocChange, StoredKey } from '../storage/event-store.js';

/**
 * An `event` frame spliced from the stored JSON text of its data, so an event is never
 * parsed again after the edge, and serialised once however many subscribers it has.
 * The shape is ChannelEvent in protocol/messages.ts.
 */
export function eventFrame(channel: string, offset: number, data: string, publisher: string | null): string {
  return `{"type":"event","channel":${JSON.stringify(channel)},"offset":${offset},"data":${data}${publisherField(publisher)}}`;
}

function publisherField(publisher: string | null): string {
  return publisher === null ? '' : `,"publisher":${publisher}`;
}

/** The `result` answering a `history` request (HistoryPage in protocol/messages.ts); data stays JSON text. */
export function historyResultFrame(id: number, page: { epoch: string; head: number; reset: boolean; from: number; events: { offset: number; data: string; publisher: string | null }[] }): string {
  const events = page.events.map((e) => `{"offset":${e.offset},"data":${e.data}${publisherField(e.publisher)}}`).join(',');
  return `{"type":"result","id":${id},"value":{"epoch":${JSON.stringify(page.epoch)},"head":${page.head},"reset":${page.reset},"from":${page.from},"events":[${events}]}}`;
}

function keysJson(keys: Record<string, StoredKey>): string {
  const parts = Object.entries(keys).map(([key, state]) =>
    'deleted' in state
      ? `${JSON.stringify(key)}:{"version":${state.version},"deleted":true}`
      : `${JSON.stringify(key)}:{"version":${state.version},"value":${state.value}}`,
  );
  return `{${parts.join(',')}}`;
}

/** A `doc` frame (DocState in protocol/messages.ts), spliced from stored JSON text. */
export function docFrame(change: DocChange, full: boolean, epoch?: string): string {
  const tail = epoch === undefined ? '' : `,"epoch":${JSON.stringify(epoch)}`;
  return `{"type":"doc","doc":${JSON.stringify(change.doc)},"version":${change.version},"full":${full},"keys":${keysJson(change.keys)}${tail}}`;
}

/** A `conflict` frame (Conflict in protocol/messages.ts). */
export function conflictFrame(seq: number, doc: string, version: number, current: Record<string, StoredKey>): string {
  return `{"type":"conflict","seq":${seq},"doc":${JSON.stringify(doc)},"current":${keysJson(current)},"version":${version}}`;
}
