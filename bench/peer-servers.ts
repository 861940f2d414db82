/**
 * The peers Tether is measured against, each run as its own process like Tether's server:
 *   ws        — a raw `ws` broadcast that serialises each message once (the practical floor)
 *   socketio  — Socket.IO, websocket transport only, room broadcast; `echo` answers by ack
 *   naive-presence — presence as a first version does it (one channel, no linger, no coalescing):
 *               a joiner gets the member list, and each join, update or leave goes to every other
 *               connection as a frame of its own (encoded once)
 * Usage: node dist/bench/peer-servers.js ws|socketio|naive-presence  → prints "listening <port>".
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, WebSocket } from 'ws';
import { Server } from 'socket.io';

const kind = process.argv[2];
const http = createServer();

if (kind === 'ws') {
  const wss = new WebSocketServer({ server: http });
  wss.on('connection', (socket) => {
    socket.on('message', (data, isBinary) => {
      // One frame for everyone: the cheapest broadcast Node can do.
      const text = isBinary ? data : data.toString();
      for (const client of wss.clients) if (client !== socket && client.readyState === WebSocket.OPEN) client.send(text);
    });
  });
} else if (kind === 'socketio') {
  const io = new Server(http, { transports: ['websocket'], serveClient: false });
  io.on('connection', (socket) => {
    socket.on('join', (room: string, ack?: () => void) => {
      void socket.join(room);
      ack?.();
    });
    socket.on('pub', (room: string, data: unknown) => void socket.to(room).emit('msg', data));
    // A round trip answered to the sender (the browser rows' one-at-a-time request).
    socket.on('echo', (data: unknown, ack?: (data: unknown) => void) => ack?.(data));
  });
} else if (kind === 'naive-presence') {
  const wss = new WebSocketServer({ server: http });
  const members = new Map<WebSocket, { id: number; tabs: number; state: unknown }>();
  const others = (text: string, except: WebSocket) => {
    for (const client of members.keys()) if (client !== except && client.readyState === WebSocket.OPEN) client.send(text);
  };
  let ids = 0;
  wss.on('connection', (socket) => {
    const id = ++ids;
    socket.on('message', (data) => {
      const message = JSON.parse(data.toString()) as { type?: string; channel?: string; tabs?: number; state?: unknown };
      if (message.type !== 'presence') return;
      if (!message.tabs) {
        if (members.delete(socket)) others(JSON.stringify({ type: 'leave', id }), socket);
        return;
      }
      const joined = !members.has(socket);
      const member = { id, tabs: message.tabs, state: message.state ?? null };
      members.set(socket, member);
      if (joined) socket.send(JSON.stringify({ type: 'presence', channel: message.channel, members: [...members.values()], total: members.size }));
      others(JSON.stringify({ type: joined ? 'join' : 'update', member }), socket);
    });
    socket.on('close', () => members.delete(socket) && others(JSON.stringify({ type: 'leave', id }), socket));
  });
} else {
  console.error('usage: peer-servers ws|socketio|naive-presence');
  process.exit(2);
}

http.listen(0, '127.0.0.1', () => console.log(`listening ${(http.address() as AddressInfo).port}`));
