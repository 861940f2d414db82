/**
 * An `event` frame spliced from the stored JSON text of its data, so an event is never
 * parsed again after the edge, and serialised once however many subscribers it has.
 * The shape is ChannelEvent in protocol/messages.ts.
 */
export function eventFrame(channel: string, offset: number, data: string): string {
  return `{"type":"event","channel":${JSON.stringify(channel)},"offset":${offset},"data":${data}}`;
}
