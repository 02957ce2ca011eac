// The detail view of one image (a modal <dialog>: Escape closes it) and the removal confirmation.

import { del, fileUrl, get, thumbnailUrl } from "./api.js";
import { baseName, formatScore } from "./grid.js";
import { guarded, showInfo } from "./notices.js";

const $ = (id) => document.getElementById(id);

const DETAIL_SIZE = 1024;

// Asks the confirmation dialog; resolves true only when "Remove" is chosen.
export function confirmRemoval(text) {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const finish = (answer) => {
      $("confirm-yes").removeEventListener("click", yes);
      $("confirm-no").removeEventListener("click", no);
      dialog.removeEventListener("close", closed);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const yes = () => finish(true);
    const no = () => finish(false);
    const closed = () => finish(false);
    $("confirm-yes").addEventListener("click", yes);
    $("confirm-no").addEventListener("click", no);
    dialog.addEventListener("close", closed);
    dialog.showModal();
    $("confirm-no").focus();
  });
}

function fact(list, term, value) {
  if (value === null || value === undefined || value === "") return;
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = String(value);
  list.append(dt, dd);
}

const when = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : null);

function bytes(size) {
  if (size >= 1 << 20) return `${(size / (1 << 20)).toFixed(1)} MiB`;
  if (size >= 1 << 10) return `${(size / (1 << 10)).toFixed(1)} KiB`;
  return `${size} B`;
}

export class Detail {
  // handlers: onSimilar(id, path), onRemoved(id); readOnly() says whether removal is refused.
  constructor(handlers) {
    this.handlers = handlers;
    this.record = null;
    this.dialog = $("detail-view");
    $("detail-close").addEventListener("click", () => this.dialog.close());
    $("detail-similar").addEventListener("click", () => this.similar());
    $("detail-remove").addEventListener("click", () => this.remove());
    this.dialog.addEventListener("click", (event) => {
      if (event.target === this.dialog) this.dialog.close(); // a click on the backdrop
    });
  }

  async open(id, score) {
    const record = await guarded(() => get(`/api/images/${encodeURIComponent(id)}`));
    if (!record) return;
    this.record = record;
    const name = baseName(record.path);
    $("detail-title").textContent = name;
    const image = $("detail-image");
    image.src = thumbnailUrl(record.id, DETAIL_SIZE);
    image.alt = name;
    $("detail-path").textContent = record.path;
    const facts = $("detail-facts");
    facts.replaceChildren();
    fact(facts, "Id", record.id);
    if (score !== undefined) fact(facts, "Score", formatScore(score));
    fact(facts, "Size", record.width && record.height ? `${record.width} × ${record.height} px` : null);
    fact(facts, "Format", record.format);
    fact(facts, "File", bytes(record.size));
    fact(facts, "Modified", when(record.mtime));
    fact(facts, "Indexed", when(record.added_at));
    fact(facts, "SHA-256", record.sha256);
    $("detail-tags").textContent = record.tags && record.tags.length ? `Tags: ${record.tags.join(", ")}` : "";
    $("detail-description").textContent = record.description || "";
    $("detail-file").href = record.file_url || fileUrl(record.id);
    $("detail-remove").disabled = this.handlers.readOnly();
    if (!this.dialog.open) this.dialog.showModal();
    $("detail-close").focus();
  }

  similar() {
    const record = this.record;
    this.dialog.close();
    if (record) this.handlers.onSimilar(record.id, record.path);
  }

  async remove() {
    const record = this.record;
    if (!record) return;
    const ok = await confirmRemoval(`Remove ${record.path} from the index? The file itself stays on disk.`);
    if (!ok) return;
    const report = await guarded(() => del(`/api/images/${encodeURIComponent(record.id)}`));
    if (!report) return;
    this.dialog.close();
    const removed = Array.isArray(report.removed) && report.removed.includes(record.id);
    showInfo(removed ? `Removed ${record.path} from the index.` : `${record.path} was not in the index any more.`);
    this.handlers.onRemoved(record.id);
  }
}
