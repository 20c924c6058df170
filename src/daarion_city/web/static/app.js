// The DAARION City web client. Text from the server is always set with textContent: messages
// are data, never HTML.
import { Api, ApiError } from "./api.js";
import { applyLabels, currentLang, setLang, t } from "./i18n.js";
import { Presence } from "./presence.js";
import { plainText, messageNode as renderMessage } from "./messages.js";
import { RoomSocket } from "./roomsocket.js";
import { Unread } from "./unread.js";
import { Moderation, MUTE_SECONDS } from "./moderation.js";
import { MemoryEditor, catchUp, streamAnswer } from "./secondme.js";
import { YourData } from "./yourdata.js";
import { Search } from "./search.js";

const $ = (id) => document.getElementById(id);
const api = new Api();
const CATCHUP_GRACE = 2000;  // ms a room opened with unread messages keeps its read marker
const CATCHUP_HOLD = 120000;  // ms at most a catch-up keeps it (released when it ends)

const state = {
  config: null,
  me: null,
  presence: null,
  room: null,            // the room object of the open room
  socket: null,
  messages: new Map(),   // seq -> <li>
  data: new Map(),       // seq -> the message as last applied
  applied: new Map(),    // seq -> the timeline seq of the last change applied to it
  pending: new Map(),    // client_msg_id -> <li>
  replyTo: null,         // the message the composer answers
  editing: null,         // the message the composer edits
  oldestSeq: null,
  hasMore: false,
  members: new Map(),    // user_id -> {name, inRoom}
  crowd: { online: 0, large: false },  // the open room's exact online count and mode (SPEC 2b)
  typing: new Map(),     // user_id -> {name, timer}
  typingSent: 0,
  typingStop: null,
  feed: null,
  roomsTimer: null,
  unread: null,          // counts per room and the notifications (unread.js)
  mod: null,             // ranks in the open room, what a moderator may do (moderation.js)
  rooms: new Map(),      // room id -> the room as listed
  names: new Map(),      // user id -> the name last seen (authors, people, notifications)
  focusSeq: null,        // a search result's message, shown once its room is open
};

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("data")) node.setAttribute(k.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase()), v);
    else node.setAttribute(k, v);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function tokenValid(token) {
  try {
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return payload.exp * 1000 > Date.now() + 60_000;
  } catch {
    return false;
  }
}

function timeOf(iso) {
  const d = new Date(iso);
  return isNaN(d) ? "" : d.toLocaleTimeString(currentLang(), { hour: "2-digit", minute: "2-digit" });
}

// --- sign-in -------------------------------------------------------------------------------
async function start() {
  applyLabels();
  $("lang-toggle").textContent = currentLang() === "uk" ? "EN" : "UA";
  $("lang-toggle").onclick = () => {
    setLang(currentLang() === "uk" ? "en" : "uk");
    $("lang-toggle").textContent = currentLang() === "uk" ? "EN" : "UA";
    $("new-room-name").placeholder = t("roomName");
  };
  $("new-room-name").placeholder = t("roomName");
  state.config = await api.config();
  const me = JSON.parse(localStorage.getItem("city.me") || "null");
  if (api.token && me && tokenValid(api.token)) enterCity(me);
  else showSignIn();
}

function showSignIn() {
  $("signin").hidden = false;
  $("city").hidden = true;
  $("signin-form").onsubmit = async (e) => {
    e.preventDefault();
    const name = $("guest-name").value.trim();
    if (!name) return;
    $("guest-submit").disabled = true;
    try {
      const g = await api.guest(name);
      api.setToken(g.token);
      const me = { user_id: g.user_id, name: g.name };
      localStorage.setItem("city.me", JSON.stringify(me));
      enterCity(me);
    } catch (err) {
      $("signin-error").textContent = err.message;
    } finally {
      $("guest-submit").disabled = false;
    }
  };
}

function enterCity(me) {
  state.me = me;
  $("signin").hidden = true;
  $("city").hidden = false;
  $("me").textContent = me.name;
  $("signout").hidden = false;
  $("signout").onclick = signOut;
  state.mod = new Moderation({ api });
  $("slow-mode").onchange = () => act(() => api.updateRoom(state.room.id, { slow_mode_s: Number($("slow-mode").value) }));
  state.unread = new Unread({ api, onChange: () => { renderBadges(); renderNotifications(); } });
  state.unread.load();
  state.presence = new Presence({
    token: api.token,
    heartbeatInterval: state.config.presence_heartbeat_interval,
    awayAfter: state.config.presence_away_after,
    onChange: renderPresence,
    onPersonal: (frame) => state.unread.handle(frame),
  });
  document.addEventListener("visibilitychange", () => { if (state.room) seenNewest(); });
  $("create-room").onsubmit = createRoom;
  $("composer").onsubmit = (e) => { e.preventDefault(); sendMessage(); };
  $("reply-cancel").onclick = () => { setComposerMode(null, null); $("message-input").value = ""; };
  $("message-input").addEventListener("keydown", (e) => {
    if (mentionKey(e)) return;
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); sendMessage(); }
  });
  $("message-input").addEventListener("input", () => { typingActivity(); suggestMentions(); });
  $("messages").addEventListener("scroll", () => {
    if ($("messages").scrollTop < 40) loadOlder();
  });
  $("secondme-form").onsubmit = askSecondMe;
  $("secondme-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); askSecondMe(e); }
  });
  $("secondme-clear").onclick = clearSecondMe;
  $("secondme-catchup").onclick = async () => {
    const room = state.room;
    if (!room) return;
    state.unread?.hold(room.id, CATCHUP_HOLD);  // summarised from the marker: it stays meanwhile
    try { await catchUp(api, room); } finally { state.unread?.release(); seenNewest(); }
  };
  state.memory = new MemoryEditor(api);
  state.yourData = new YourData(api, me.user_id, signOut);
  state.memory.load();
  $("search-box").hidden = false;
  state.search = new Search({
    api, input: $("search-input"), panel: $("search-results"), list: $("search-list"),
    note: $("search-note"), more: $("search-more"), rooms: () => state.rooms, open: showFound,
  });
  window.addEventListener("hashchange", route);
  Promise.all([loadRooms(), state.mod.loadMe()]).then(route);
  state.roomsTimer = setInterval(loadRooms, 5000);
  startFeed();
  loadSecondMe();
}

function signOut() {
  if (state.presence) state.presence.goOffline();
  api.setToken("");
  localStorage.removeItem("city.me");
  location.hash = "";
  location.reload();
}

// --- rooms ---------------------------------------------------------------------------------
async function loadRooms() {
  let rooms;
  try { rooms = await api.rooms(); } catch { return; }
  const list = $("room-list");
  state.rooms = new Map(rooms.map((r) => [r.id, r]));
  list.replaceChildren(...rooms.map((r) => {
    const a = el("a", { href: `#/room/${r.slug}`, dataTestid: "room-link", dataSlug: r.slug, dataRoomId: r.id });
    if (state.room && state.room.id === r.id) a.classList.add("active");
    a.append(el("span", { class: "room-name" }, r.name),
      el("span", { class: "badge mentions", title: t("mentions") }),
      el("span", { class: "badge unread", title: t("unread") }),
      el("span", { class: "count", title: t("online") }, r.members_online ? String(r.members_online) : ""));
    return el("li", {}, undefined).appendChild(a).parentNode;
  }));
  renderBadges();
  $("overview-rooms").replaceChildren(...rooms.map((r) => {
    const a = el("a", { href: `#/room/${r.slug}`, dataTestid: "room-card", dataSlug: r.slug });
    a.append(
      el("div", { class: "name" }, r.name),
      el("div", { class: "desc" }, r.description),
      el("div", { class: "meta" },
        `● ${r.members_online} ${t("online")} · ${r.member_count} ${t("members")}` +
        (r.last_message ? ` · ${r.last_message.username}: ${r.last_message.body.slice(0, 60)}` : "")),
    );
    return el("li").appendChild(a).parentNode;
  }));
}

function refreshRoomsSoon() {
  clearTimeout(state.roomsSoon);
  state.roomsSoon = setTimeout(loadRooms, 300);
}

async function createRoom(e) {
  e.preventDefault();
  $("create-error").textContent = "";
  try {
    const room = await api.createRoom($("new-room-slug").value.trim(), $("new-room-name").value.trim());
    $("new-room-slug").value = "";
    $("new-room-name").value = "";
    await loadRooms();
    location.hash = `#/room/${room.slug}`;
  } catch (err) {
    $("create-error").textContent = err instanceof ApiError ? `${err.code}: ${err.message}` : String(err);
  }
}

function route() {
  const m = location.hash.match(/^#\/room\/([^/]+)$/);
  $("overview").hidden = Boolean(m);
  $("room-view").hidden = !m;
  if (m) {
    openRoom(decodeURIComponent(m[1]));
  } else {
    if (state.socket) state.socket.close();
    state.socket = null;
    state.room = null;
    state.members.clear();
    renderPeople();
    for (const a of document.querySelectorAll("[data-testid=room-link]")) a.classList.remove("active");
  }
}

async function openRoom(slug) {
  if (state.socket) state.socket.close();
  state.socket = null;
  state.messages.clear();
  state.data.clear();
  state.applied.clear();
  state.pending.clear();
  state.members.clear();
  state.typing.clear();
  setComposerMode(null, null);
  $("messages").replaceChildren();
  $("people").replaceChildren();
  $("typing").textContent = "";
  let room;
  try { room = await api.room(slug); } catch (err) { $("room-title").textContent = err.message; return; }
  state.room = room;
  state.expelled = null;
  await state.mod.openRoom(room);
  renderModeration();
  $("room-title").textContent = room.name;
  $("room-description").textContent = room.description;
  const bridged = $("room-matrix");   // also a Matrix room (SPEC 6b): where Matrix users find it
  bridged.hidden = !room.matrix_room_alias;
  if (room.matrix_room_alias) {
    bridged.textContent = `${t("onMatrix")} ${room.matrix_room_alias}`;
    bridged.href = `https://matrix.to/#/${encodeURIComponent(room.matrix_room_alias)}`;
  }
  for (const a of document.querySelectorAll("[data-testid=room-link]")) {
    a.classList.toggle("active", a.dataset.slug === room.slug);
  }
  for (const msg of room.messages) addMessage(msg);
  state.oldestSeq = room.messages.length ? room.messages[0].seq : null;
  state.hasMore = state.oldestSeq !== null && state.oldestSeq > 1;
  for (const m of room.online_members) state.members.set(m.user_id, { name: m.name, inRoom: true });
  state.crowd = { online: room.members_online, large: room.members_online > room.online_members.length };
  renderPeople();
  scrollToEnd();
  // Opened with unread messages: their marker stays a moment, for "What did I miss?".
  if (state.unread?.of(room.id).unread_count) state.unread.hold(room.id, CATCHUP_GRACE);
  seenNewest();
  focusMessage();
  const lastSeq = room.messages.length ? room.messages[room.messages.length - 1].seq : room.last_message ? room.last_message.seq : 0;
  state.socket = new RoomSocket({
    room: room.id,
    token: api.token,
    lastSeq,
    on: {
      open: () => { $("room-offline").hidden = true; $("conn-state").hidden = true; },
      down: (f) => {
        $("room-offline").hidden = false;
        $("conn-state").hidden = false;
        $("conn-state").textContent = t("offline");
        $("room-offline").textContent = f.code === 4403 ? state.expelled || t("banned") : t("reconnecting");
      },
      "room.state": (f) => {
        // A large room lists only its most recently active members: the list is replaced by
        // them; a small room's is complete, and whoever it leaves out is no longer here.
        if (f.large) state.members.clear();
        const listed = new Set(f.online_members.map((m) => m.user_id));
        for (const [id, m] of state.members) if (!listed.has(id)) m.inRoom = false;
        for (const m of f.online_members) state.members.set(m.user_id, { name: m.name, inRoom: true });
        state.crowd = { online: f.members_online, large: f.large };
        renderPeople();
      },
      "room.online": (f) => {
        state.crowd.online = f.members_online;
        renderPeople();
        refreshRoomsSoon();
      },
      "room.message": (f) => { addMessage(f.message); scrollToEnd(); seenNewest(); },
      "room.message.ack": (f) => addMessage(f.message),
      "room.message.edit": (f) => applyChange(f.seq, f.message),
      "room.message.delete": (f) => applyChange(f.seq, f.message),
      "room.reaction": (f) => {
        const known = state.data.get(f.target_seq);
        if (known) applyChange(f.seq, { ...known, reactions: f.reactions });
      },
      "room.join": (f) => {
        if (!(state.members.get(f.user_id) || {}).inRoom) state.crowd.online += 1;
        state.members.set(f.user_id, { name: f.name, inRoom: true });
        renderPeople();
        refreshRoomsSoon();
      },
      "room.leave": (f) => {
        if ((state.members.get(f.user_id) || {}).inRoom) state.crowd.online = Math.max(0, state.crowd.online - 1);
        state.members.set(f.user_id, { name: f.name, inRoom: false });
        renderPeople();
        refreshRoomsSoon();
      },
      "room.typing": (f) => showTyping(f),
      "presence.update": () => renderPeople(),
      error: (f) => {
        if (f.client_msg_id && state.pending.has(f.client_msg_id)) {
          state.pending.get(f.client_msg_id).classList.add("failed");
          state.pending.get(f.client_msg_id).title = f.message;
        }
        if (f.code === "resync_required") openRoom(slug);
        const words = Moderation.explain(f.code, f);
        if (words) $("composer-note").textContent = words;
        if (f.code === "banned" || f.code === "kicked" || f.code === "suspended") state.expelled = words;
      },
    },
  });
}

const messageContext = {
  get me() { return state.me ? state.me.user_id : null; },
  nameOf: (id) => (state.members.get(id) || {}).name || state.names.get(id) ||
    (state.me && id === state.me.user_id ? state.me.name : undefined),
  message: (seq) => state.data.get(seq),
  timeOf: (iso) => timeOf(iso),
  emojiUsed: () => [...state.data.values()].flatMap((m) => (m.reactions || []).map((r) => r.emoji)),
  reply: (msg) => setComposerMode("reply", msg),
  edit: (msg) => setComposerMode("edit", msg),
  remove: (msg) => act(() => api.remove(state.room.id, msg.seq)),
  canDelete: (msg) => Boolean(state.mod) && state.mod.mayActOn(msg.author_user_id),
  report: async (msg, reason) => {
    try { await api.report(state.room.id, msg.seq, reason); return true; } catch { return false; }
  },
  react: (msg, emoji, on) => act(() => api.react(state.room.id, msg.seq, emoji, on)),
};

function messageNode(msg) {
  return renderMessage(msg, messageContext);
}

// A change the server answers is applied when its frame arrives (on every open page alike).
async function act(call) {
  try {
    await call();
  } catch (err) {
    $("composer-note").textContent = Moderation.explain(err.code, err.body || {}) || err.message;
  }
}

// An edit, deletion or reaction: the message replaced, unless a later change was applied.
function applyChange(eventSeq, msg) {
  if (!state.room || msg.room_id !== state.room.id) return;
  if ((state.applied.get(msg.seq) || 0) >= eventSeq) return;
  state.applied.set(msg.seq, eventSeq);
  if (!state.messages.has(msg.seq)) return;
  rerender(msg);
  // The replies to it quote it as it is now.
  for (const other of state.data.values()) if (other.reply_to_seq === msg.seq) rerender(other);
}

function rerender(msg) {
  const old = state.messages.get(msg.seq);
  if (!old) return;
  state.data.set(msg.seq, msg);
  const li = messageNode(msg);
  old.replaceWith(li);
  state.messages.set(msg.seq, li);
}

function setComposerMode(mode, msg) {
  state.replyTo = mode === "reply" ? msg : null;
  state.editing = mode === "edit" ? msg : null;
  const preview = $("reply-preview");
  $("composer-note").textContent = "";
  if (!msg) { preview.hidden = true; return; }
  const label = mode === "edit" ? t("editing") : `${t("replyingTo")} ${msg.username}`;
  $("reply-text").textContent = `${label}: ${msg.body.slice(0, 80)}`;
  preview.hidden = false;
  const input = $("message-input");
  if (mode === "edit") input.value = msg.body;
  input.focus();
}

function addMessage(msg) {
  if (!state.room || msg.room_id !== state.room.id) return;
  if (state.messages.has(msg.seq)) return;
  state.data.set(msg.seq, msg);
  if (msg.author_user_id) state.names.set(msg.author_user_id, msg.username);
  const li = messageNode(msg);
  const pending = msg.client_msg_id && state.pending.get(msg.client_msg_id);
  if (pending) {
    state.pending.delete(msg.client_msg_id);
    pending.remove();
  }
  state.messages.set(msg.seq, li);
  // Keep seq order: walk back from the end (new messages nearly always go last).
  const list = $("messages");
  let before = null;
  for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
    const seq = Number(node.dataset.seq);
    if (node.dataset.seq === "" ) { before = node; continue; }
    if (seq < msg.seq) break;
    before = node;
  }
  list.insertBefore(li, before);
}

function scrollToEnd() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

// A search result: open its room (or stay in it) and show the message.
function showFound(ref, seq) {
  state.focusSeq = seq;
  const hash = `#/room/${ref}`;
  if (state.room && location.hash === hash) focusMessage();
  else location.hash = hash;
}

// Scroll to the message of a search result and light it up, loading older pages until it is
// there (the list stays one run of messages up to the newest).
async function focusMessage() {
  const seq = state.focusSeq;
  if (seq === null || !state.room) return;
  state.focusSeq = null;
  for (let pages = 0; !state.messages.has(seq) && state.hasMore && pages < 40; pages++) {
    if (state.loadingOlder) await new Promise((r) => setTimeout(r, 50));
    else await loadOlder();
  }
  const li = state.messages.get(seq);
  if (!li) return;
  li.scrollIntoView({ block: "center" });
  li.classList.remove("found");
  void li.offsetWidth;   // restart the highlight when the same message is shown again
  li.classList.add("found");
}

async function loadOlder() {
  if (!state.hasMore || state.loadingOlder || !state.room) return;
  state.loadingOlder = true;
  try {
    const page = await api.messages(state.room.id, { before_seq: state.oldestSeq, limit: 50 });
    const list = $("messages");
    const height = list.scrollHeight;
    for (const msg of page.messages) addMessage(msg);
    if (page.messages.length) state.oldestSeq = page.messages[0].seq;
    state.hasMore = page.has_more;
    list.scrollTop = list.scrollHeight - height;
  } finally {
    state.loadingOlder = false;
  }
}

async function sendMessage() {
  const input = $("message-input");
  const body = input.value;
  if (!body.trim() || !state.room) return;
  input.value = "";
  if (state.editing) {
    const seq = state.editing.seq;
    setComposerMode(null, null);
    await act(() => api.edit(state.room.id, seq, body));
    return;
  }
  const replyTo = state.replyTo ? state.replyTo.seq : undefined;
  setComposerMode(null, null);
  const clientMsgId = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
  const li = messageNode({ username: state.me.name, body, seq: null, created_at: null });
  li.classList.add("pending");
  state.pending.set(clientMsgId, li);
  $("messages").append(li);
  scrollToEnd();
  stopTyping();
  const frame = { event: "room.message.send", body, client_msg_id: clientMsgId, reply_to_seq: replyTo };
  if (state.socket && state.socket.send(frame)) return;
  try {
    addMessage(await api.post(state.room.id, body, clientMsgId, replyTo));   // offline socket: HTTP
  } catch (err) {
    li.classList.add("failed");
    li.title = err.message;
    $("composer-note").textContent = Moderation.explain(err.code, err.body || {}) || err.message;
  }
}

// --- moderation: the room's settings and its report queue ------------------------------------
function renderModeration() {
  const moderator = state.mod.isModerator;
  $("room-settings").hidden = !moderator;
  $("slow-mode").value = String(state.room.slow_mode_s || 0);
  $("reports-panel").hidden = !moderator;
  if (moderator) loadReports();
}

async function loadReports() {
  let reports = [];
  try { reports = await api.reports(state.room.id); } catch { /* shown empty */ }
  $("reports-empty").hidden = reports.length > 0;
  $("reports").replaceChildren(...reports.map((r) => {
    const li = el("li", { dataTestid: "report", dataReportId: r.id, class: "report" });
    li.append(el("span", { class: "who" }, `${r.message.username}: ${r.reason}`),
      el("span", { class: "what" }, r.reported_text || r.message.body));
    const actions = el("span", { class: "report-actions" });
    for (const [action, label] of [["dismiss", t("dismiss")], ["delete_message", t("deleteIt")],
      ["mute_author", t("muteAuthor")], ["ban_author", t("banAuthor")]]) {
      const b = el("button", { type: "button", class: "link", dataTestid: `report-${action.replace("_", "-")}` }, label);
      b.onclick = () => act(async () => { await api.resolveReport(r.id, action); await loadReports(); });
      actions.append(b);
    }
    li.append(actions);
    return li;
  }));
}

// --- unread counts, notifications, mentions ---------------------------------------------------
function seenNewest() {
  if (!state.room || !state.unread) return;
  const seqs = [...state.data.keys()];
  if (seqs.length) state.unread.seen(state.room.id, Math.max(...seqs));
}

function renderBadges() {
  if (!state.unread) return;
  for (const a of document.querySelectorAll("[data-testid=room-link]")) {
    const c = state.unread.of(a.dataset.roomId);
    a.dataset.unread = String(c.unread_count);
    a.dataset.mentions = String(c.mention_count);
    a.querySelector(".unread").textContent = c.unread_count ? String(Math.min(c.unread_count, 999)) : "";
    a.querySelector(".mentions").textContent = c.mention_count ? `@${c.mention_count}` : "";
    a.classList.toggle("has-unread", c.unread_count > 0);
  }
}

function renderNotifications() {
  const list = $("notifications");
  const notes = state.unread.notifications;
  $("notifications-empty").hidden = notes.length > 0;
  list.replaceChildren(...notes.slice(0, 30).map((n) => {
    const room = state.rooms.get(n.room_id);
    const who = n.message.username;
    const what = n.kind === "reply" ? t("repliedToYou") : t("mentionedYou");
    const text = n.message.deleted ? t("deletedMessage") : plainText(n.message.body, messageContext.nameOf).slice(0, 90);
    const a = el("a", {
      href: `#/room/${room ? room.slug : n.room_id}`, dataTestid: "notification",
      dataKind: n.kind, dataRead: String(n.read), class: n.read ? "note read" : "note",
    });
    a.append(el("span", { class: "who" }, `${who} ${what}${room ? ` · ${room.name}` : ""}`),
      el("span", { class: "what" }, text));
    return el("li").appendChild(a).parentNode;
  }));
}

// Mention autocomplete: "@" and the start of a name lists the people of the room.
const MENTION_QUERY = /(^|\s)@([^\s@<>]{0,30})$/;

function mentionQuery() {
  const input = $("message-input");
  const m = input.value.slice(0, input.selectionStart).match(MENTION_QUERY);
  return m ? m[2].toLowerCase() : null;
}

function suggestMentions() {
  const box = $("mention-suggestions");
  const query = mentionQuery();
  const people = new Map(state.names);
  for (const [id, m] of state.members) people.set(id, m.name);
  if (state.me) people.delete(state.me.user_id);
  const hits = query === null ? [] : [...people.entries()]
    .filter(([id, name]) => name.toLowerCase().startsWith(query) || id.toLowerCase().startsWith(query))
    .sort((a, b) => a[1].localeCompare(b[1])).slice(0, 6);
  box.hidden = hits.length === 0;
  box.replaceChildren(...hits.map(([id, name], i) => {
    const li = el("li", { dataTestid: "mention-suggestion", dataUserId: id, class: i === 0 ? "first" : undefined }, `@${name}`);
    li.onmousedown = (e) => { e.preventDefault(); insertMention(id); };
    return li;
  }));
}

function insertMention(userId) {
  const input = $("message-input");
  const caret = input.selectionStart;
  const before = input.value.slice(0, caret).replace(/@[^\s@<>]{0,30}$/, `<@${userId}> `);
  input.value = before + input.value.slice(caret);
  input.selectionStart = input.selectionEnd = before.length;
  $("mention-suggestions").hidden = true;
  input.focus();
}

function mentionKey(e) {
  const box = $("mention-suggestions");
  if (box.hidden || !(e.key === "Enter" || e.key === "Tab" || e.key === "Escape")) return false;
  e.preventDefault();
  if (e.key === "Escape") box.hidden = true;
  else insertMention(box.firstElementChild.dataset.userId);
  return true;
}

// --- typing --------------------------------------------------------------------------------
function typingActivity() {
  if (!state.socket) return;
  const now = Date.now();
  if (now - state.typingSent > 3000) {
    state.socket.send({ event: "room.typing", typing: true });
    state.typingSent = now;
  }
  clearTimeout(state.typingStop);
  state.typingStop = setTimeout(stopTyping, 4000);
}

function stopTyping() {
  clearTimeout(state.typingStop);
  if (state.typingSent && state.socket) state.socket.send({ event: "room.typing", typing: false });
  state.typingSent = 0;
}

function showTyping(f) {
  const known = state.typing.get(f.user_id);
  if (known) clearTimeout(known.timer);
  if (f.typing) {
    const timer = setTimeout(() => { state.typing.delete(f.user_id); renderTyping(); }, 10000);
    state.typing.set(f.user_id, { name: f.name, timer });
  } else {
    state.typing.delete(f.user_id);
  }
  renderTyping();
}

function renderTyping() {
  const names = [...state.typing.values()].map((x) => x.name);
  $("typing").textContent = names.length ? `${names.join(", ")} ${t("typing")}` : "";
}

// --- people and presence --------------------------------------------------------------------
function renderPresence() {
  if (!state.presence) return;
  const count = [...state.presence.statuses.values()].filter((u) => u.status !== "offline").length;
  $("online-count").textContent = `● ${count} ${t("online")}`;
  renderPeople();
}

function renderPeople() {
  const list = $("people");
  const count = $("people-count");
  count.hidden = !state.room;
  count.dataset.large = String(state.crowd.large);
  count.dataset.online = String(state.crowd.online);
  count.textContent = state.crowd.large
    ? `${state.crowd.online} ${t("online")} · ${t("mostActive")}`
    : `${state.crowd.online} ${t("online")}`;
  // A large room shows its most recently active members in that order (as room.state lists
  // them); a small room's people by name.
  const people = [...state.members.entries()];
  if (!state.crowd.large) people.sort((a, b) => a[1].name.localeCompare(b[1].name));
  list.replaceChildren(...people.map(([userId, m]) => {
    const status = !m.inRoom && !state.presence?.statuses.has(userId) ? "offline"
      : state.presence ? state.presence.statusOf(userId) : "online";
    const li = el("li", { dataTestid: "member", dataUserId: userId, dataStatus: status, dataInRoom: String(m.inRoom) });
    li.append(el("span", { class: "dot", title: status }), el("span", { class: "member-name" }, m.name));
    const role = state.mod && state.mod.roles.get(userId);
    if (role) li.append(el("span", { class: "role muted" }, role));
    if (state.mod && state.room && state.mod.mayActOn(userId)) {
      const tools = el("span", { class: "member-tools" });
      const tool = (testid, label, call) => {
        const b = el("button", { type: "button", class: "link", dataTestid: testid, title: label }, label);
        b.onclick = () => act(call);
        tools.append(b);
      };
      tool("member-mute", t("mute"), () => api.sanction(state.room.id, "mutes", userId, MUTE_SECONDS));
      tool("member-kick", t("kick"), () => api.kick(state.room.id, userId));
      tool("member-ban", t("ban"), () => api.sanction(state.room.id, "bans", userId));
      li.append(tools);
    }
    return li;
  }));
}

// --- the city feed ---------------------------------------------------------------------------
function feedText(e) {
  const p = e.payload || {};
  switch (e.kind) {
    case "room_message": return `💬 ${plainText(p.snippet ?? "", messageContext.nameOf)}`;
    case "room_created": return `🏛 ${p.name ?? p.slug ?? ""}`;
    case "member_joined": return `➕ ${p.name ?? e.user_id}`;
    case "member_left": return `➖ ${p.name ?? e.user_id}`;
    default: return `ℹ️ ${p.message ?? e.kind}`;
  }
}

async function startFeed() {
  const list = $("feed");
  try {
    const events = await api.feed();
    list.replaceChildren(...events.map((e) => el("li", { dataTestid: "feed-event" }, feedText(e))));
  } catch { /* the stream below fills it */ }
  // EventSource reconnects by itself and sends Last-Event-ID, so nothing is missed.
  state.feed = new EventSource("/city/feed/stream");
  state.feed.onmessage = (m) => {
    const e = JSON.parse(m.data);
    list.prepend(el("li", { dataTestid: "feed-event" }, feedText(e)));
    while (list.children.length > 100) list.lastElementChild.remove();
  };
}

// --- Second Me -----------------------------------------------------------------------------
async function loadSecondMe() {
  showModel();
  try {
    const turns = await api.secondmeHistory();
    $("secondme-history").replaceChildren(...turns.map((turn) =>
      el("p", { class: turn.role }, turn.content)));
  } catch { /* shown when asked */ }
}

// Which model answers, and for the small embedded one what it cannot do (GET /secondme/profile).
async function showModel() {
  try {
    const { provider, model } = await api.secondmeProfile();
    const name = provider === "agents-core" ? (model || t("agentsModel"))
      : (model || "—").replace(/\.gguf$/i, "");
    $("secondme-model-name").textContent = name;
    $("secondme-model-where").hidden = provider !== "local";
    $("secondme-model-note").hidden = provider !== "local";
    $("secondme-model").hidden = false;
  } catch { /* the panel works without it */ }
}

async function askSecondMe(e) {
  e.preventDefault();
  const prompt = $("secondme-input").value.trim();
  if (!prompt) return;
  $("secondme-input").value = "";
  $("secondme-send").disabled = true;
  try {
    await streamAnswer(prompt, (onDelta) => api.secondmeStream(prompt, onDelta));
  } finally {
    $("secondme-send").disabled = false;
  }
}

async function clearSecondMe() {
  await api.secondmeClear();
  $("secondme-history").replaceChildren();
  $("secondme-answer").textContent = "";
}

start();
