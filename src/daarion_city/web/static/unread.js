// Unread and mention counts per room, and the notifications list.
// - the counts come with the presence socket (unread.bulk when it opens, unread.update on every
//   change, from any device); GET /city/me/unread fills them before the socket is up;
// - notifications: GET /city/me/notifications, then each `notification` event, newest first;
//   an entry is read once the room's marker passes its message;
// - reading: the open room's newest message is marked read (POST .../read) while the page is
//   visible, at most every `delay` ms; a room's marker can be held (`hold`): "What did I miss?"
//   summarises what is after the marker, so a room opened with unread messages keeps it for a
//   few seconds, and a catch-up keeps it until it is done.
export class Unread {
  constructor({ api, onChange, delay = 400 }) {
    this.api = api;
    this.onChange = onChange;
    this.delay = delay;
    this.counts = new Map();        // room_id -> {last_read_seq, unread_count, mention_count}
    this.notifications = [];        // newest first
    this.pendingRead = null;        // {room, seq} to send
    this.readTimer = null;
    this.held = null;               // {roomId, until}: that room's marker stays until then
  }

  hold(roomId, ms) {
    this.held = { roomId, until: Date.now() + ms };
  }

  release() {
    this.held = null;
    if (this.pendingRead) {
      clearTimeout(this.readTimer);
      this.readTimer = setTimeout(() => this.flush(), this.delay);
    }
  }

  async load() {
    try {
      const [counts, notes] = await Promise.all([this.api.unread(), this.api.notifications()]);
      for (const c of counts) this.counts.set(c.room_id, c);
      this.notifications = notes;
      this.onChange();
    } catch { /* the presence socket brings them */ }
  }

  // A personal event from the presence socket; true when it was one of ours.
  handle(frame) {
    if (frame.event === "unread.bulk") {
      this.counts.clear();
      for (const c of frame.rooms) this.counts.set(c.room_id, c);
    } else if (frame.event === "unread.update") {
      const known = this.counts.get(frame.room_id);
      // A marker never moves back: an older update (of a slower path) is dropped.
      if (known && known.last_read_seq > frame.last_read_seq) return true;
      this.counts.set(frame.room_id, frame);
      this.markNotesRead(frame.room_id, frame.last_read_seq);
    } else if (frame.event === "notification") {
      if (!this.notifications.some((n) => n.id === frame.id)) {
        const { event, ...note } = frame;
        this.notifications.unshift(note);
        this.notifications.length = Math.min(this.notifications.length, 50);
      }
    } else {
      return false;
    }
    this.onChange();
    return true;
  }

  markNotesRead(roomId, seq) {
    for (const n of this.notifications) if (n.room_id === roomId && n.message.seq <= seq) n.read = true;
  }

  of(roomId) {
    return this.counts.get(roomId) || { unread_count: 0, mention_count: 0, last_read_seq: 0 };
  }

  // The reader has seen the room up to `seq`.
  seen(roomId, seq) {
    if (!seq || document.visibilityState === "hidden") return;
    if (this.of(roomId).last_read_seq >= seq && !this.of(roomId).unread_count) return;
    this.pendingRead = { roomId, seq: Math.max(seq, this.pendingRead?.roomId === roomId ? this.pendingRead.seq : 0) };
    if (this.readTimer) return;
    this.readTimer = setTimeout(() => this.flush(), this.delay);
  }

  async flush() {
    this.readTimer = null;
    const held = this.held;
    if (held && this.pendingRead?.roomId === held.roomId && Date.now() < held.until) {
      this.readTimer = setTimeout(() => this.flush(), held.until - Date.now());
      return;
    }
    const pending = this.pendingRead;
    this.pendingRead = null;
    if (!pending) return;
    try {
      const counts = await this.api.markRead(pending.roomId, pending.seq);
      this.handle({ event: "unread.update", ...counts });
    } catch { /* read again at the next message */ }
  }
}
