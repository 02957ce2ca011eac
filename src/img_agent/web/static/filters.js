// The "Filters" panel: its fields as the API's `where` object (only the conditions set), how many are
// set, clearing them, and the store's tags offered as suggestions. Values are read and written as text.

import { get } from "./api.js";

const $ = (id) => document.getElementById(id);

const TEXT = { folder: "filter-folder", glob: "filter-glob", camera: "filter-camera", description: "filter-description" };
const DATES = {
  taken_after: "filter-taken-after", taken_before: "filter-taken-before",
  modified_after: "filter-modified-after", modified_before: "filter-modified-before",
};
const NUMBERS = { min_width: "filter-min-width", min_height: "filter-min-height", min_score: "filter-min-score" };
const TAGS = { tags_any: "filter-tags-any", tags_all: "filter-tags-all", tags_none: "filter-tags-none" };
// The GPS box's edges as the API names them, in the order the panel shows them.
const BOX = { min_lat: "filter-bbox-south", min_lon: "filter-bbox-west", max_lat: "filter-bbox-north",
  max_lon: "filter-bbox-east" };
const GPS = { yes: true, no: false };
const TAG_SUGGESTIONS = 200;

const LABELS = {
  taken_after: "Taken on or after", taken_before: "Taken on or before",
  modified_after: "Modified on or after", modified_before: "Modified on or before",
  min_width: "At least this wide", min_height: "At least this high", min_score: "Minimum score",
  min_lat: "GPS box South", min_lon: "GPS box West", max_lat: "GPS box North", max_lon: "GPS box East",
};
const EDGES = { min_lat: "South", min_lon: "West", max_lat: "North", max_lon: "East" };

export const splitTags = (text) => text.split(",").map((tag) => tag.trim()).filter(Boolean);

class FilterInputError extends Error {
  constructor(message) {
    super(message);
    this.type = "InvalidInputError";
  }
}

export class Filters {
  // onApply() runs when the filters are applied or cleared (to search again with them).
  constructor({ onApply }) {
    this.onApply = onApply;
    this.tags = [];
    const form = $("filters-form");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.onApply();
    });
    // a half-typed date or number changes no value (no input event), yet counts
    for (const name of ["input", "change", "keyup"]) form.addEventListener(name, () => this.showCount());
    $("filters-clear").addEventListener("click", () => {
      this.clear();
      this.onApply();
    });
    $("filters").addEventListener("toggle", () => {
      if ($("filters").open) this.loadTags();
    });
    for (const id of Object.values(TAGS)) {
      $(id).addEventListener("input", () => this.suggest(id));
    }
    this.showCount();
  }

  // The filter as the API takes it, or null when no condition is set. Throws on a half-typed value
  // (an incomplete date, a malformed number), which the browser would otherwise read as empty, and on
  // a GPS box with some edges but not all.
  where() {
    const where = {};
    for (const [key, id] of Object.entries(TEXT)) {
      const value = $(id).value.trim();
      if (value) where[key] = value;
    }
    const formats = [...document.querySelectorAll("input[name=filter-format]:checked")].map((box) => box.value);
    if (formats.length) where.formats = formats;
    for (const [key, id] of Object.entries({ ...DATES, ...NUMBERS, ...BOX })) {
      const input = $(id);
      if (input.validity.badInput) {
        throw new FilterInputError(`${LABELS[key]}: the value is incomplete or not a ${key in DATES ? "date" : "number"}; `
          + "finish it or clear the field.");
      }
      if (input.value === "" || key in BOX) continue;
      where[key] = key in DATES ? input.value : Number(input.value);
    }
    const gps = GPS[$("filter-gps").value];
    if (gps !== undefined) where.has_gps = gps;
    const box = this.box();
    if (box) where.bbox = box;
    for (const [key, id] of Object.entries(TAGS)) {
      const tags = splitTags($(id).value);
      if (tags.length) where[key] = tags;
    }
    return Object.keys(where).length ? where : null;
  }

  // The GPS box's edges as numbers, or null when none is given; throws when only some are.
  box() {
    const missing = Object.keys(BOX).filter((key) => $(BOX[key]).value === "");
    if (missing.length === Object.keys(BOX).length) return null;
    if (missing.length) {
      throw new FilterInputError(`GPS box: give all four edges (South, West, North, East) or none; `
        + `${missing.map((key) => EDGES[key]).join(", ")} ${missing.length === 1 ? "is" : "are"} empty.`);
    }
    return Object.fromEntries(Object.entries(BOX).map(([key, id]) => [key, Number($(id).value)]));
  }

  // How many conditions are set (a half-typed value counts: it is shown as an error on search).
  count() {
    let count = 0;
    for (const id of [...Object.values(TEXT), ...Object.values(TAGS)]) {
      if ($(id).value.trim()) count++;
    }
    for (const id of [...Object.values(DATES), ...Object.values(NUMBERS)]) {
      if ($(id).value !== "" || $(id).validity.badInput) count++;
    }
    if (document.querySelector("input[name=filter-format]:checked")) count++;
    if ($("filter-gps").value) count++;
    if (Object.values(BOX).some((id) => $(id).value !== "" || $(id).validity.badInput)) count++;
    return count;
  }

  showCount() {
    const count = this.count();
    const summary = $("filter-summary");
    summary.textContent = count ? `· ${count} filter${count === 1 ? "" : "s"} active` : "· none";
    summary.dataset.count = String(count);
    $("filters-clear").disabled = count === 0;
  }

  clear() {
    $("filters-form").reset();
    this.showCount();
  }

  // The store's tags (most used first), fetched each time the panel opens; suggestions are optional,
  // so a failure leaves the lists as they were.
  async loadTags() {
    try {
      const list = await get(`/api/tags?limit=${TAG_SUGGESTIONS}`);
      this.tags = (list.tags || []).map((entry) => String(entry.tag));
    } catch {
      return;
    }
    for (const id of Object.values(TAGS)) this.suggest(id);
  }

  // Suggestions for a comma-separated tag field: the text typed so far, then one more tag not yet given.
  suggest(id) {
    const text = $(id).value;
    const cut = text.lastIndexOf(",");
    const prefix = cut < 0 ? "" : `${text.slice(0, cut + 1)} `;
    const given = new Set(splitTags(text.slice(0, cut + 1)).map((tag) => tag.toLowerCase()));
    $(`${id}-list`).replaceChildren(...this.tags.filter((tag) => !given.has(tag.toLowerCase())).map((tag) => {
      const option = document.createElement("option");
      option.value = prefix + tag;
      return option;
    }));
  }
}
