// The HTTP client of the city API. Every error becomes an ApiError with the server's code.
export class ApiError extends Error {
  constructor(status, code, detail, body = {}) {
    super(detail || code);
    this.status = status;
    this.code = code;
    this.body = body;   // the whole answer: retry_after, a sanction's expires_at
  }
}

// A validation error's detail is FastAPI's list of problems: show what each says, without
// pydantic's "Value error, " prefix ("names beginning with 'ag_' are reserved for agents").
function readable(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => String(d && d.msg ? d.msg : d).replace(/^Value error, /, "")).join("; ");
  }
  return detail ? JSON.stringify(detail) : "";
}

export class Api {
  constructor() {
    this.token = localStorage.getItem("city.token") || "";
  }

  setToken(token) {
    this.token = token;
    if (token) localStorage.setItem("city.token", token);
    else localStorage.removeItem("city.token");
  }

  headers(json = true) {
    const h = {};
    if (json) h["content-type"] = "application/json";
    if (this.token) h.authorization = `Bearer ${this.token}`;
    return h;
  }

  async request(method, path, body) {
    const res = await fetch(path, {
      method,
      headers: this.headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 204) return null;
    const data = await res.json().catch(() => ({}));
    if (!res.ok) {
      const detail = readable(data.detail);
      throw new ApiError(res.status, data.code || "error", detail, data);
    }
    return data;
  }

  config() { return this.request("GET", "/city/config"); }
  guest(name) { return this.request("POST", "/auth/guest", { name }); }
  rooms() { return this.request("GET", "/city/rooms"); }
  room(ref) { return this.request("GET", `/city/rooms/${encodeURIComponent(ref)}`); }
  createRoom(slug, name) { return this.request("POST", "/city/rooms", { slug, name }); }
  messages(ref, params) {
    const q = new URLSearchParams(params).toString();
    return this.request("GET", `/city/rooms/${encodeURIComponent(ref)}/messages?${q}`);
  }
  search(params) { return this.request("GET", `/city/search?${new URLSearchParams(params)}`); }
  post(ref, body, clientMsgId, replyToSeq) {
    return this.request("POST", `/city/rooms/${encodeURIComponent(ref)}/messages`, {
      body, client_msg_id: clientMsgId, reply_to_seq: replyToSeq ?? undefined,
    });
  }
  edit(ref, seq, body) {
    return this.request("PATCH", `/city/rooms/${encodeURIComponent(ref)}/messages/${seq}`, { body });
  }
  remove(ref, seq) {
    return this.request("DELETE", `/city/rooms/${encodeURIComponent(ref)}/messages/${seq}`);
  }
  react(ref, seq, emoji, on) {
    const path = `/city/rooms/${encodeURIComponent(ref)}/messages/${seq}/reactions/${encodeURIComponent(emoji)}`;
    return this.request(on ? "PUT" : "DELETE", path);
  }
  presence() { return this.request("GET", "/city/presence"); }
  me() { return this.request("GET", "/city/me"); }
  moderators(ref) { return this.request("GET", `/city/rooms/${encodeURIComponent(ref)}/moderators`); }
  updateRoom(ref, values) { return this.request("PATCH", `/city/rooms/${encodeURIComponent(ref)}`, values); }
  sanction(ref, kind, userId, durationS) {
    const body = { user_id: userId };
    if (durationS) body.duration_s = durationS;
    return this.request("POST", `/city/rooms/${encodeURIComponent(ref)}/${kind}`, body);
  }
  kick(ref, userId) { return this.request("POST", `/city/rooms/${encodeURIComponent(ref)}/kick`, { user_id: userId }); }
  report(roomId, seq, reason) { return this.request("POST", "/city/reports", { room_id: roomId, seq, reason }); }
  reports(roomId) { return this.request("GET", `/city/reports?status=open&room=${encodeURIComponent(roomId)}`); }
  resolveReport(id, action) { return this.request("POST", `/city/reports/${encodeURIComponent(id)}/resolve`, { action }); }
  unread() { return this.request("GET", "/city/me/unread"); }
  notifications() { return this.request("GET", "/city/me/notifications?limit=30"); }
  markRead(ref, seq) {
    return this.request("POST", `/city/rooms/${encodeURIComponent(ref)}/read`, { seq });
  }
  feed() { return this.request("GET", "/city/feed?limit=30"); }
  secondmeHistory() { return this.request("GET", "/secondme/history?limit=20"); }
  secondmeClear() { return this.request("POST", "/secondme/history/clear"); }
  secondmeProfile() { return this.request("GET", "/secondme/profile"); }
  memory() { return this.request("GET", "/secondme/memory"); }
  saveMemory(about) { return this.request("PUT", "/secondme/memory", { about }); }
  forgetMemory() { return this.request("POST", "/secondme/memory/forget"); }
  secondmeStream(prompt, onDelta) { return this.sse("/secondme/invoke/stream", { prompt }, onDelta); }
  catchupStream(room, onDelta) { return this.sse("/secondme/catchup/stream", { room }, onDelta); }

  // Second Me streams Server-Sent Events from a POST: read them from the response body.
  async sse(path, body, onDelta) {
    const res = await fetch(path, {
      method: "POST", headers: this.headers(), body: JSON.stringify(body),
    });
    if (!res.ok) {
      const data = await res.json().catch(() => ({}));
      throw new ApiError(res.status, data.code || "error", data.detail);
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let result = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) event = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (!data) continue;
        const payload = JSON.parse(data);
        if (event === "delta") onDelta(payload.delta);
        else if (event === "done") result = payload;
        else if (event === "error") throw new ApiError(payload.status, payload.code, payload.detail);
      }
    }
    return result;
  }
}

export function wsUrl(path, params) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}${path}?${new URLSearchParams(params).toString()}`;
}
