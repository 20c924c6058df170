// Second Me in the page: asking, a room's catch-up, and the memory editor (SPEC 5b and 8b).
// - asking and catching up both stream Server-Sent Events into the panel's answer
//   (`secondme-answer`, data-state streaming/done/error), the asked line first in the history;
// - catch-up: the room head's button (`secondme-catchup`) summarises what the room said since
//   the reader's marker (POST /secondme/catchup/stream); "nothing new" when there is nothing;
// - memory: "About me" (`secondme-memory`, PUT /secondme/memory) is sent in every context;
//   the agent's own summary of older turns is shown under it; "Forget" empties both.
import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);

function line(role, text) {
  const p = document.createElement("p");
  p.className = role;
  p.textContent = text;
  return p;
}

// Stream one answer into the panel: `asked` is what the history shows for the question; the
// answer grows in `secondme-answer` and, once done, moves into the history below the question.
export async function streamAnswer(asked, run) {
  const answer = $("secondme-answer");
  const history = $("secondme-history");
  answer.textContent = "";
  answer.dataset.state = "streaming";
  history.append(line("user", asked));
  try {
    const done = await run((delta) => { answer.textContent += delta; });
    if (done && done.messages_considered === 0) {
      answer.textContent = t("nothingNew");
    } else {
      history.append(line("assistant", answer.textContent));
      answer.textContent = "";
      history.scrollTop = history.scrollHeight;
    }
    answer.dataset.state = "done";
  } catch (err) {
    answer.textContent = `⚠ ${err.code || ""} ${err.message}`;
    answer.dataset.state = "error";
  }
}

export async function catchUp(api, room) {
  const button = $("secondme-catchup");
  button.disabled = true;
  try {
    await streamAnswer(`${t("catchUp")}: ${room.name}`,
      (onDelta) => api.catchupStream(room.id, onDelta));
  } finally {
    button.disabled = false;
  }
}

export class MemoryEditor {
  constructor(api) {
    this.api = api;
    $("secondme-memory-form").onsubmit = (e) => { e.preventDefault(); this.save(); };
    $("secondme-forget").onclick = () => this.forget();
  }

  show(memory) {
    $("secondme-memory").value = memory.about;
    $("secondme-summary").textContent = memory.summary;
    $("secondme-summary-box").hidden = !memory.summary;
  }

  async load() {
    try { this.show(await this.api.memory()); } catch { /* the editor stays empty */ }
  }

  async save() {
    const note = $("secondme-memory-note");
    try {
      this.show(await this.api.saveMemory($("secondme-memory").value));
      note.textContent = t("saved");
    } catch (err) {
      note.textContent = `⚠ ${err.message}`;
    }
  }

  async forget() {
    try {
      this.show(await this.api.forgetMemory());
      $("secondme-memory-note").textContent = t("forgotten");
    } catch (err) {
      $("secondme-memory-note").textContent = `⚠ ${err.message}`;
    }
  }
}
