// The room's messages as the page shows them: text only (never HTML), mentions as names, the
// message a reply answers, the "edited" mark, tombstones, reaction chips, and the actions the
// viewer may use on each (reply, edit and delete their own, react).
import { t } from "./i18n.js";

export const QUICK_EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "🙏"];
const MENTION = /<@([A-Za-z0-9_.=-]{1,80}|@[^\s<>:]+:[^\s<>]+)>/g;

export function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("data")) node.setAttribute(k.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase()), v);
    else node.setAttribute(k, v);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

// The body with each <@id> shown as @Name (text nodes only).
export function bodyNodes(body, nameOf) {
  const nodes = [];
  let at = 0;
  for (const m of body.matchAll(MENTION)) {
    if (m.index > at) nodes.push(document.createTextNode(body.slice(at, m.index)));
    nodes.push(el("span", { class: "mention", dataUserId: m[1] }, "@" + (nameOf(m[1]) || m[1])));
    at = m.index + m[0].length;
  }
  if (at < body.length) nodes.push(document.createTextNode(body.slice(at)));
  return nodes;
}

export function plainText(body, nameOf) {
  return body.replace(MENTION, (_, id) => "@" + (nameOf(id) || id));
}

// ctx: {me, nameOf(id), message(seq), timeOf(iso), reply(msg), edit(msg), remove(msg),
//       react(msg, emoji, on), emojiUsed(), canDelete(msg), report(msg, reason)}
export function messageNode(msg, ctx) {
  const li = el("li", {
    class: "message" + (msg.deleted ? " deleted" : ""),
    dataTestid: "message",
    dataSeq: msg.seq ?? "",
    dataDeleted: msg.deleted ? "true" : null,
  });
  if (msg.reply_to_seq) {
    const target = ctx.message(msg.reply_to_seq);
    const quoted = target
      ? `${target.username}: ${target.deleted ? t("deletedMessage") : plainText(target.body, ctx.nameOf).slice(0, 80)}`
      : `#${msg.reply_to_seq}`;
    li.append(el("div", { class: "reply-to", dataReplyTo: msg.reply_to_seq }, "↪ " + quoted));
  }
  const body = el("span", { class: "body" });
  if (msg.deleted) body.textContent = t("deletedMessage");
  else body.append(...bodyNodes(msg.body, ctx.nameOf));
  const who = el("span", { class: "who" }, msg.username);
  if (String(msg.author_user_id || "").startsWith("@")) {   // a Matrix user of a bridged room
    who.append(el("span", { class: "via-matrix", dataTestid: "via-matrix", title: msg.author_user_id }, "Matrix"));
  }
  li.append(who, body);
  if (msg.edited_at && !msg.deleted) li.append(el("span", { class: "edited muted", dataTestid: "edited" }, t("edited")));
  li.append(el("span", { class: "when" }, msg.created_at ? ctx.timeOf(msg.created_at) : ""));
  if (msg.seq === null || msg.seq === undefined) return li;   // still being sent
  if (msg.reactions && msg.reactions.length) {
    const chips = el("div", { class: "reactions" });
    for (const r of msg.reactions) {
      const mine = r.users.includes(ctx.me);
      const chip = el("button", {
        type: "button", class: "reaction" + (mine ? " mine" : ""), dataTestid: "reaction",
        dataEmoji: r.emoji, dataCount: r.count, title: r.users.map(ctx.nameOf).join(", "),
      }, `${r.emoji} ${r.count}`);
      chip.addEventListener("click", () => ctx.react(msg, r.emoji, !mine));
      chips.append(chip);
    }
    li.append(chips);
  }
  if (msg.deleted) return li;
  const actions = el("span", { class: "actions" });
  const action = (testid, label, title, handler) => {
    const b = el("button", { type: "button", class: "link", dataTestid: testid, title }, label);
    b.addEventListener("click", handler);
    actions.append(b);
  };
  action("message-reply", "↪", t("reply"), () => ctx.reply(msg));
  action("message-react", "☺", t("react"), () => togglePicker(li, msg, ctx));
  if (msg.author_user_id === ctx.me) action("message-edit", "✎", t("edit"), () => ctx.edit(msg));
  if (msg.author_user_id === ctx.me || ctx.canDelete(msg)) {
    action("message-delete", "🗑", t("delete"), () => ctx.remove(msg));
  }
  if (msg.author_user_id !== ctx.me) action("message-report", "⚑", t("report"), () => toggleReport(li, msg, ctx));
  li.append(actions);
  return li;
}

// An inline form: the reason, then "report" (no browser dialog).
function toggleReport(li, msg, ctx) {
  const open = li.querySelector(".report-form");
  if (open) { open.remove(); return; }
  const form = el("form", { class: "report-form" });
  const input = el("input", { dataTestid: "report-reason", maxlength: "500", placeholder: t("reportReason"), required: "" });
  const send = el("button", { type: "submit", dataTestid: "report-submit" }, t("report"));
  form.append(input, send);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!input.value.trim()) return;
    send.disabled = true;
    const ok = await ctx.report(msg, input.value.trim());
    form.replaceChildren(el("span", { class: "muted", dataTestid: "report-sent" }, ok ? t("reported") : "⚠"));
    setTimeout(() => form.remove(), 2500);
  });
  li.append(form);
  input.focus();
}

function togglePicker(li, msg, ctx) {
  const open = li.querySelector(".picker");
  if (open) { open.remove(); return; }
  const picker = el("div", { class: "picker", dataTestid: "emoji-picker" });
  const choices = [...new Set([...QUICK_EMOJI, ...ctx.emojiUsed()])];
  for (const emoji of choices) {
    const b = el("button", { type: "button", class: "link", dataEmoji: emoji }, emoji);
    b.addEventListener("click", () => { picker.remove(); ctx.react(msg, emoji, true); });
    picker.append(b);
  }
  li.append(picker);
}
