// The result grid: one card per hit (lazy thumbnail, score on hover or focus, "more like this").

import { thumbnailUrl } from "./api.js";

export const baseName = (path) => String(path).split(/[\\/]/).pop() || String(path);

export const formatScore = (score) => Number(score).toFixed(3);

// A thumbnail <img> for image `id` that loads only when it nears the viewport.
export function thumbnail(id, alt, size = 256) {
  const img = document.createElement("img");
  img.loading = "lazy";
  img.decoding = "async";
  img.src = thumbnailUrl(id, size);
  img.alt = alt;
  return img;
}

function card(hit, { onOpen, onSimilar }) {
  const name = baseName(hit.path);
  const article = document.createElement("article");
  article.className = "card";
  article.dataset.testid = "result-card";
  article.dataset.id = String(hit.id);

  const open = document.createElement("button");
  open.type = "button";
  open.className = "thumb";
  open.title = `${hit.path}\nscore ${formatScore(hit.score)}`;
  open.setAttribute("aria-label", `Open ${name} (score ${formatScore(hit.score)})`);
  open.append(thumbnail(hit.id, name));
  open.addEventListener("click", () => onOpen(hit.id, hit.score));

  const score = document.createElement("span");
  score.className = "score";
  score.dataset.testid = "result-score";
  score.textContent = formatScore(hit.score);

  const bar = document.createElement("div");
  bar.className = "card-bar";
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = name;
  const similar = document.createElement("button");
  similar.type = "button";
  similar.className = "similar";
  similar.dataset.testid = "more-like-this";
  similar.textContent = "Similar";
  similar.title = "More like this";
  similar.setAttribute("aria-label", `More like ${name}`);
  similar.addEventListener("click", () => onSimilar(hit.id));
  bar.append(label, similar);

  article.append(open, score, bar);
  return article;
}

export class Grid {
  constructor(element, handlers) {
    this.element = element;
    this.handlers = handlers;
  }

  clear() {
    this.element.replaceChildren();
  }

  append(hits) {
    this.element.append(...hits.map((hit) => card(hit, this.handlers)));
  }

  get size() {
    return this.element.children.length;
  }

  // Drops the card of image `id` (after it was removed from the index).
  remove(id) {
    for (const element of this.element.querySelectorAll(".card")) {
      if (element.dataset.id === String(id)) element.remove();
    }
  }
}
