// Message search (GET /city/search): the box in the top bar and its list of results. A result
// opens its room and shows the message there (app.js: focusMessage).
import { ApiError } from "./api.js";
import { currentLang, t } from "./i18n.js";
import { el } from "./messages.js";

const WORD = /[\p{L}\p{N}]{2,}/u;   // the server searches words of 2 letters or digits or more
const DELAY_MS = 300;              // typing pauses this long before a search

function when(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return "";
  const today = d.toDateString() === new Date().toDateString();
  return today
    ? d.toLocaleTimeString(currentLang(), { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleDateString(currentLang(), { day: "numeric", month: "short" });
}

export class Search {
  // input, panel, list, note, more: the page's elements; rooms(): room id -> room;
  // open(room, seq): show that message of that room.
  constructor({ api, input, panel, list, note, more, rooms, open }) {
    Object.assign(this, { api, input, panel, list, note, more, rooms, open });
    this.q = "";
    this.next = null;
    this.timer = null;
    this.asked = 0;   // the newest search asked: an older answer that arrives late is dropped
    input.addEventListener("input", () => this.soon());
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); this.run(); }
      if (e.key === "Escape") this.close();
    });
    input.addEventListener("focus", () => { if (this.list.childElementCount) this.panel.hidden = false; });
    more.onclick = () => this.run(this.next);
    document.addEventListener("click", (e) => {
      if (!panel.contains(e.target) && e.target !== input) this.close();
    });
  }

  soon() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.run(), DELAY_MS);
  }

  close() { this.panel.hidden = true; }

  async run(before = null) {
    clearTimeout(this.timer);
    const q = this.input.value.trim();
    if (!WORD.test(q)) {
      this.list.replaceChildren();
      this.note.textContent = q ? t("searchTooShort") : "";
      this.more.hidden = true;
      this.panel.hidden = !q;
      return;
    }
    const asked = ++this.asked;
    const params = { q, limit: 20 };
    if (before) params.before = before;
    let page;
    try {
      page = await this.api.search(params);
    } catch (err) {
      if (asked !== this.asked) return;
      this.note.textContent = err instanceof ApiError && err.code === "rate_limited"
        ? t("searchSlowDown") : err.message;
      this.panel.hidden = false;
      return;
    }
    if (asked !== this.asked) return;
    this.q = q;
    if (!before) this.list.replaceChildren();
    this.list.append(...page.results.map((hit) => this.result(hit)));
    this.next = page.next;
    this.more.hidden = !page.next;
    this.note.textContent = this.list.childElementCount ? "" : t("searchNothing");
    this.panel.hidden = false;
  }

  result({ message, snippet }) {
    const room = this.rooms().get(message.room_id);
    const a = el("a", {
      href: `#/room/${room ? room.slug : message.room_id}`, class: "hit", dataTestid: "search-result",
      dataRoomId: message.room_id, dataSeq: String(message.seq),
    });
    const head = el("div", { class: "hit-head" });
    head.append(el("span", { class: "hit-room" }, room ? `# ${room.name}` : message.room_id),
      el("span", { class: "hit-who" }, message.username),
      el("span", { class: "hit-when muted" }, when(message.created_at)));
    const text = el("div", { class: "hit-text" });
    // The one place the page inserts server text as HTML: the server HTML-escaped the whole
    // snippet and then added only <mark> and </mark> around the matches (rooms/search.py),
    // so the markup here is those marks and nothing a message could carry.
    text.innerHTML = snippet;
    a.append(head, text);
    a.onclick = (e) => {
      e.preventDefault();
      this.close();
      this.open(room ? room.slug : message.room_id, message.seq);
    };
    return el("li").appendChild(a).parentNode;
  }
}
