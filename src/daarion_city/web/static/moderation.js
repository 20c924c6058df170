// Moderation in the page: who ranks what in the open room (GET /city/me, .../moderators), the
// actions a moderator may take on people (ban, mute, kick) and on messages (delete), the room's
// slow mode, the report queue, and for everyone a "report" on messages and a clear word when
// muted, banned or slowed.
import { t } from "./i18n.js";

const RANK = { member: 0, moderator: 1, owner: 2, admin: 3 };
export const MUTE_SECONDS = 600;

export class Moderation {
  constructor({ api }) {
    this.api = api;
    this.me = null;           // GET /city/me
    this.roles = new Map();   // user_id -> "owner" | "moderator" in the open room
    this.room = null;
  }

  async loadMe() {
    try { this.me = await this.api.me(); } catch { this.me = null; }
  }

  async openRoom(room) {
    this.room = room;
    this.roles = new Map();
    try {
      for (const r of await this.api.moderators(room.id)) this.roles.set(r.user_id, r.role);
    } catch { /* shown as a member's view */ }
  }

  rankOf(userId) {
    if (this.me && userId === this.me.user_id && this.me.admin) return RANK.admin;
    return RANK[this.roles.get(userId) || "member"];
  }

  get myRank() { return this.me ? this.rankOf(this.me.user_id) : 0; }
  get isModerator() { return this.myRank >= RANK.moderator; }

  // May I act (ban, mute, kick, delete their messages) on this user?
  mayActOn(userId) {
    return Boolean(this.me) && userId !== this.me.user_id && this.isModerator && this.rankOf(userId) < this.myRank;
  }

  // Words for a sanction or slow-mode error (with the time left).
  static explain(code, frame) {
    if (code === "slow_mode") return `${t("slowedDown")} ${Math.ceil(frame.retry_after || 1)} s`;
    if (code === "muted" || code === "banned" || code === "suspended") {
      const until = frame.expires_at ? ` ${t("until")} ${new Date(frame.expires_at).toLocaleTimeString()}` : "";
      return `${t(code)}${until}`;
    }
    if (code === "kicked") return t("kicked");
    return null;
  }
}
