// Searches (text, image, more like this) and their paging: the current query and the filter it ran
// with are kept, so "load more" asks for the next page of the same search and applying or clearing
// the filters runs the current query again with the new ones.

import { get, post, request } from "./api.js";
import { Filters } from "./filters.js";
import { baseName } from "./grid.js";
import { clearMessage, fillList, guarded, showError, showInfo } from "./notices.js";

export const PAGE_SIZE = 40;

const $ = (id) => document.getElementById(id);

function textQuery(query, expand) {
  return {
    label: `Results for “${query}”${expand ? " (expanded with the LLM)" : ""}`,
    fetch: (offset, where) => post("/api/search", { query, k: PAGE_SIZE, offset, expand, where }),
  };
}

function imageQuery(file) {
  return {
    label: `Images like ${file.name || "the pasted image"}`,
    fetch: (offset, where) => {
      const form = new FormData();
      form.append("image", file, file.name || "pasted-image");
      form.append("k", String(PAGE_SIZE));
      form.append("offset", String(offset));
      if (where) form.append("where", JSON.stringify(where));
      return request("POST", "/api/search/image", form);
    },
  };
}

function similarQuery(id, name) {
  return {
    label: `More like ${name || `image ${id}`}`,
    fetch: (offset, where) => {
      const filter = where ? `&where=${encodeURIComponent(JSON.stringify(where))}` : "";
      return get(`/api/images/${encodeURIComponent(id)}/similar?k=${PAGE_SIZE}&offset=${offset}${filter}`);
    },
  };
}

const filtered = (label, where) => {
  const count = where ? Object.keys(where).length : 0;
  return count ? `${label} (${count} filter${count === 1 ? "" : "s"})` : label;
};

export class Search {
  constructor(grid) {
    this.grid = grid;
    this.query = null;
    this.run = null;
    this.offset = 0;
    this.busy = false;
    this.filters = new Filters({ onApply: () => this.again() });
    $("load-more").addEventListener("click", () => this.more());
  }

  text(query) {
    return this.start(textQuery(query, $("expand-toggle").checked));
  }

  image(file) {
    return this.start(imageQuery(file));
  }

  similar(id, path) {
    return this.start(similarQuery(id, path ? baseName(path) : null));
  }

  // The current query again, with the filters as they are now (before a first search: a word on when they apply).
  again() {
    if (this.query) return this.start(this.query);
    showInfo("The filters apply to every search from now on: text, image and “more like this”.");
    return Promise.resolve(undefined);
  }

  async start(query) {
    this.query = query;
    this.run = null;
    this.offset = 0;
    this.grid.clear();
    $("load-more").hidden = true;
    $("no-results").hidden = true;
    clearMessage();
    $("query-info").hidden = false;
    $("expansion").hidden = true;
    fillList($("search-notes"), []);
    let where;
    try {
      where = this.filters.where();
    } catch (error) {
      $("query-label").textContent = query.label;
      showError(error);
      return undefined;
    }
    const label = filtered(query.label, where);
    const run = { query, where };
    this.run = run;
    $("query-label").textContent = `${label}: searching…`;
    const page = await this.fetchPage();
    if (this.run === run) $("query-label").textContent = label;
    return page;
  }

  more() {
    if (this.run && !this.busy) return this.fetchPage();
    return Promise.resolve(undefined);
  }

  async fetchPage() {
    const run = this.run;
    this.busy = true;
    document.body.classList.add("busy");
    const page = await guarded(() => run.query.fetch(this.offset, run.where));
    document.body.classList.remove("busy");
    this.busy = false;
    if (!page || run !== this.run) return page; // failed, or a newer search replaced this one
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
