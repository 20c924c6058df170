// Your data in the page (SPEC 11), in the menu under the user's name: "Download my data" saves GET /city/me/export as a JSON file;
// "Delete my account" asks once more in the page (no browser dialog), then DELETE /city/me,
// and the page signs out: every token of the account is refused from then on.
import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);

export class YourData {
  constructor(api, userId, onErased) {
    this.api = api;
    this.userId = userId;
    const menu = $("account-menu");
    $("me").onclick = () => {
      menu.hidden = !menu.hidden;
      $("me").setAttribute("aria-expanded", String(!menu.hidden));
    };
    document.addEventListener("keydown", (e) => { if (e.key === "Escape") menu.hidden = true; });
    $("export-data").onclick = () => this.download();
    $("erase-account").onclick = () => { $("erase-confirm-box").hidden = false; };
    $("erase-cancel").onclick = () => { $("erase-confirm-box").hidden = true; };
    $("erase-confirm").onclick = () => this.erase(onErased);
  }

  note(text) { $("yourdata-note").textContent = text; }

  async download() {
    const res = await fetch("/city/me/export", { headers: this.api.headers(false) });
    if (!res.ok) {
      const data = await res.json().catch(() => ({}));
      this.note(`⚠ ${data.code || res.status}`);
      return;
    }
    const url = URL.createObjectURL(await res.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = `daarion-city-${this.userId}.json`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    this.note(t("dataSaved"));
  }

  async erase(onErased) {
    $("erase-confirm").disabled = true;
    try {
      await this.api.request("DELETE", "/city/me");
      onErased();
    } catch (err) {
      this.note(`⚠ ${err.code || ""} ${err.message}`);
      $("erase-confirm").disabled = false;
    }
  }
}
