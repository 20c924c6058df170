// The room WebSocket client: live messages, typing, join/leave, and reconnection with exponential
// backoff and jitter that resumes with since_seq, so no message is missed or shown twice.
import { wsUrl } from "./api.js";

const TIMELINE = new Set(["room.message.edit", "room.message.delete", "room.reaction"]);

export class RoomSocket {
  constructor({ room, token, lastSeq, on }) {
    this.room = room;
    this.token = token;
    this.lastSeq = lastSeq;   // the highest seq the view holds
    this.on = on;             // {event name: handler}, plus "open" / "down"
    this.attempt = 0;
    this.closed = false;
    this.ws = null;
    this.timer = null;
    this.connect();
  }

  connect() {
    const params = { token: this.token };
    if (this.lastSeq !== null && this.lastSeq !== undefined) params.since_seq = this.lastSeq;
    const ws = new WebSocket(wsUrl(`/ws/city/rooms/${encodeURIComponent(this.room)}`, params));
    this.ws = ws;
    ws.onopen = () => { this.attempt = 0; this.emit("open", {}); };
    ws.onmessage = (e) => {
      let frame;
      try { frame = JSON.parse(e.data); } catch { return; }
      // Every timeline event moves the resume point: messages by their seq, edits, deletions
      // and reactions by the seq at the top of their frame.
      const seq = frame.event === "room.message" ? frame.message.seq
        : TIMELINE.has(frame.event) ? frame.seq : null;
      if (seq !== null && seq > (this.lastSeq || 0)) this.lastSeq = seq;
      this.emit(frame.event, frame);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws || this.closed) return;
      this.emit("down", { code: e.code });
      // Will not get better by retrying: a bad token, no such room, banned, kicked, suspended.
      if (e.code === 4401 || e.code === 4404 || e.code === 4403) return;
      const base = Math.min(10000, 500 * 2 ** this.attempt++);
      const delay = base / 2 + Math.random() * base / 2;  // "equal jitter"
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  emit(name, frame) {
    const handler = this.on[name];
    if (handler) handler(frame);
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, "leaving the room");
  }
}
