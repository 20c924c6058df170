// The presence heartbeat: one /ws/city/presence socket per page.
// - heartbeat every `heartbeatInterval` seconds, carrying the status and the time since the
//   user's last activity (mousedown, keydown, touchstart, scroll; throttled);
// - away after `awayAfter` seconds without activity, and at once when the tab is hidden;
//   back online on activity or when the tab is visible again (sent at once, not at the next beat);
// - on pagehide, navigator.sendBeacon('/city/presence/offline') with the token and this
//   socket's connection id, so the user is offline at once;
// - the statuses of everyone (presence.bulk_update, then presence.update) are kept in `statuses`;
// - the user's personal events (unread counts, notifications) go to `onPersonal`.
import { wsUrl } from "./api.js";

const ACTIVITY = ["mousedown", "keydown", "touchstart", "scroll"];

export class Presence {
  constructor({ token, heartbeatInterval, awayAfter, onChange, onPersonal }) {
    this.token = token;
    this.interval = heartbeatInterval * 1000;
    this.awayAfter = awayAfter * 1000;
    this.onChange = onChange;
    this.onPersonal = onPersonal || (() => {});   // unread.bulk, unread.update, notification
    this.statuses = new Map();    // user_id -> {user_id, name, status, last_seen}
    this.lastActive = Date.now();
    this.status = document.visibilityState === "hidden" ? "away" : "online";
    this.connectionId = null;
    this.attempt = 0;
    this.stopped = false;
    this.throttle = 0;

    this.onActivity = () => {
      const now = Date.now();
      if (now - this.throttle < 1000 && this.status === "online") return;
      this.throttle = now;
      this.lastActive = now;
      if (this.status !== "online" && document.visibilityState !== "hidden") this.setStatus("online");
    };
    this.onVisibility = () => {
      if (document.visibilityState === "hidden") this.setStatus("away");
      else { this.lastActive = Date.now(); this.setStatus("online"); }
    };
    this.onPageHide = () => this.goOffline();
    for (const name of ACTIVITY) window.addEventListener(name, this.onActivity, { passive: true, capture: true });
    document.addEventListener("visibilitychange", this.onVisibility);
    window.addEventListener("pagehide", this.onPageHide);
    this.idleTimer = setInterval(() => this.checkIdle(), 500);
    this.connect();
  }

  connect() {
    const ws = new WebSocket(wsUrl("/ws/city/presence", { token: this.token }));
    this.ws = ws;
    ws.onopen = () => { this.attempt = 0; this.beat(); };
    ws.onmessage = (e) => {
      let frame;
      try { frame = JSON.parse(e.data); } catch { return; }
      if (frame.event === "presence.bulk_update") {
        this.connectionId = frame.connection_id;
        this.statuses.clear();
        for (const u of frame.users) this.statuses.set(u.user_id, u);
        this.onChange(null);
      } else if (frame.event === "presence.update") {
        this.statuses.set(frame.user_id, frame);
        this.onChange(frame);
      } else {
        this.onPersonal(frame);
      }
    };
    ws.onclose = () => {
      clearInterval(this.beatTimer);
      if (this.ws !== ws || this.stopped) return;
      const base = Math.min(15000, 500 * 2 ** this.attempt++);
      setTimeout(() => this.connect(), base / 2 + Math.random() * base / 2);
    };
    clearInterval(this.beatTimer);
    this.beatTimer = setInterval(() => this.beat(), this.interval);
  }

  beat() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(JSON.stringify({
      event: "presence.heartbeat",
      status: this.status,
      last_active_ago_ms: Math.max(0, Date.now() - this.lastActive),
    }));
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.beat();
  }

  checkIdle() {
    if (this.status === "online" && Date.now() - this.lastActive >= this.awayAfter) this.setStatus("away");
  }

  statusOf(userId) {
    const rec = this.statuses.get(userId);
    return rec ? rec.status : "offline";
  }

  goOffline() {
    if (this.stopped) return;
    const body = JSON.stringify({ token: this.token, connection_id: this.connectionId });
    navigator.sendBeacon("/city/presence/offline", new Blob([body], { type: "text/plain" }));
    if (this.ws) this.ws.close(1000, "page closed");
  }

  stop() {
    this.stopped = true;
    clearInterval(this.beatTimer);
    clearInterval(this.idleTimer);
    for (const name of ACTIVITY) window.removeEventListener(name, this.onActivity, { capture: true });
    document.removeEventListener("visibilitychange", this.onVisibility);
    window.removeEventListener("pagehide", this.onPageHide);
    if (this.ws) this.ws.close(1000, "signed out");
  }
}
