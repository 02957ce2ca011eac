// The question box: the LLM answers from the most relevant images and cites them as [n].

import { post } from "./api.js";
import { baseName, formatScore, thumbnail } from "./grid.js";
import { fillList, guarded } from "./notices.js";

const $ = (id) => document.getElementById(id);

const QA_K = 8;

function source(item, onOpen) {
  const li = document.createElement("li");
  li.className = item.cited ? "source cited" : "source";
  li.dataset.testid = "qa-source";
  li.dataset.id = String(item.id);
  const open = document.createElement("button");
  open.type = "button";
  open.className = "source-open";
  const label = document.createElement("span");
  label.className = "source-label";
  label.textContent = `[${item.label ?? item.rank}]${item.cited ? " cited" : ""}`;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = `${baseName(item.path)} · ${formatScore(item.score)}`;
  open.title = item.path;
  open.append(thumbnail(item.id, baseName(item.path), 96), label, name);
  open.addEventListener("click", () => onOpen(item.id, item.score));
  li.append(open);
  return li;
}

export class QA {
  constructor({ onOpen }) {
    this.onOpen = onOpen;
    $("qa-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.ask();
    });
  }

  async ask() {
    const question = $("qa-input").value.trim();
    if (!question) {
      $("qa-input").focus();
      return;
    }
    const button = $("qa-button");
    button.disabled = true;
    $("qa-result").hidden = false;
    $("qa-answer").textContent = "Thinking…";
    $("qa-sources").replaceChildren();
    fillList($("qa-notes"), []);
    const result = await guarded(() => post("/api/rag/qa", { question, k: QA_K }));
    button.disabled = false;
    if (!result) {
      $("qa-answer").textContent = "No answer: see the message above.";
      return;
    }
    $("qa-answer").textContent = result.answer || "No answer was generated; these are the most relevant images.";
    const sources = result.sources || [];
    $("qa-sources").replaceChildren(...sources.map((item) => source(item, this.onOpen)));
    fillList($("qa-notes"), result.notes || []);
  }
}
