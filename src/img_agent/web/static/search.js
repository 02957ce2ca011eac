// Searches (text, image, more like this) and their paging: the current query is kept so
// "load more" asks for the next page of the same query.

import { get, post, request } from "./api.js";
import { baseName } from "./grid.js";
import { clearMessage, fillList, guarded } from "./notices.js";

export const PAGE_SIZE = 40;

const $ = (id) => document.getElementById(id);

function textQuery(query, where, expand) {
  return {
    label: `Results for “${query}”${expand ? " (expanded with the LLM)" : ""}`,
    fetch: (offset) => post("/api/search", { query, k: PAGE_SIZE, offset, expand, where }),
  };
}

function imageQuery(file) {
  return {
    label: `Images like ${file.name || "the pasted image"}`,
    fetch: (offset) => {
      const form = new FormData();
      form.append("image", file, file.name || "pasted-image");
      form.append("k", String(PAGE_SIZE));
      form.append("offset", String(offset));
      return request("POST", "/api/search/image", form);
    },
  };
}

function similarQuery(id, name) {
  return {
    label: `More like ${name || `image ${id}`}`,
    fetch: (offset) => get(`/api/images/${encodeURIComponent(id)}/similar?k=${PAGE_SIZE}&offset=${offset}`),
  };
}

export class Search {
  constructor(grid) {
    this.grid = grid;
    this.query = null;
    this.offset = 0;
    this.busy = false;
    $("load-more").addEventListener("click", () => this.more());
  }

  text(query) {
    const folder = $("filter-folder").value.trim() || null;
    const glob = $("filter-glob").value.trim() || null;
    const where = folder || glob ? { folder, glob } : null;
    return this.start(textQuery(query, where, $("expand-toggle").checked));
  }

  image(file) {
    return this.start(imageQuery(file));
  }

  similar(id, path) {
    return this.start(similarQuery(id, path ? baseName(path) : null));
  }

  async start(query) {
    this.query = query;
    this.offset = 0;
    this.grid.clear();
    $("load-more").hidden = true;
    $("no-results").hidden = true;
    clearMessage();
    const info = $("query-info");
    info.hidden = false;
    $("query-label").textContent = `${query.label}: searching…`;
    $("expansion").hidden = true;
    fillList($("search-notes"), []);
    const page = await this.fetchPage();
    if (page) $("query-label").textContent = query.label;
    return page;
  }

  more() {
    if (this.query && !this.busy) return this.fetchPage();
    return Promise.resolve(undefined);
  }

  async fetchPage() {
    const query = this.query;
    this.busy = true;
    document.body.classList.add("busy");
    const page = await guarded(() => query.fetch(this.offset));
    document.body.classList.remove("busy");
    this.busy = false;
    if (!page || query !== this.query) return page; // failed, or a newer query replaced this one
    this.grid.append(page.hits);
    this.offset += page.hits.length;
    $("load-more").hidden = !page.has_more;
    $("no-results").hidden = this.grid.size > 0;
    this.showExtras(page);
    return page;
  }

  showExtras(page) {
    const variants = page.expanded_queries || [];
    if (variants.length || page.explanation) {
      $("expansion").hidden = false;
      fillList($("expansion-variants"), variants);
      $("expansion-explanation").textContent = page.explanation || "No explanation was given.";
    }
    if (page.notes && page.notes.length) fillList($("search-notes"), page.notes);
  }
}
