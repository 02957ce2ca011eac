// The gallery page: wires the search box, image queries (drop, paste, file picker), the result
// grid, the detail view, the question box and the index panel together.

import { Detail } from "./detail.js";
import { Grid } from "./grid.js";
import { IndexPanel } from "./index_panel.js";
import { QA } from "./qa.js";
import { Search } from "./search.js";

const $ = (id) => document.getElementById(id);

// The token belongs in the HttpOnly cookie only; never leave it in the address bar or history.
function dropTokenFromAddress() {
  const url = new URL(window.location.href);
  if (!url.searchParams.has("token")) return;
  url.searchParams.delete("token");
  window.history.replaceState(null, "", url.pathname + url.search + url.hash);
}

function firstImage(files) {
  return Array.from(files || []).find((file) => file.type.startsWith("image/")) || null;
}

function wireImageQueries(search) {
  const zone = $("drop-zone");
  const input = $("file-input");
  $("file-button").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    const file = firstImage(input.files);
    if (file) search.image(file);
    input.value = "";
  });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = firstImage(event.dataTransfer && event.dataTransfer.files);
    if (file) search.image(file);
  });
  document.addEventListener("paste", (event) => {
    const file = firstImage(event.clipboardData && event.clipboardData.files);
    if (!file) return; // plain text pastes go to the focused field as usual
    event.preventDefault();
    search.image(file);
  });
}

function main() {
  dropTokenFromAddress();
  let detail = null;
  let search = null;
  const open = (id, score) => detail.open(id, score);
  const similar = (id, path) => search.similar(id, path);
  const grid = new Grid($("result-grid"), { onOpen: open, onSimilar: similar });
  search = new Search(grid);
  const panel = new IndexPanel({ onChange: () => {} });
  detail = new Detail({
    onSimilar: similar,
    onRemoved: (id) => {
      grid.remove(id);
      panel.refresh();
    },
    readOnly: () => panel.readOnly,
  });
  new QA({ onOpen: open });

  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = $("search-input").value.trim();
    if (query) search.text(query);
  });
  wireImageQueries(search);
  panel.refresh();
  $("search-input").focus();
}

main();
