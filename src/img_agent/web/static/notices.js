// Banners about the service's state (empty index, model loading, no LLM, read-only) and the
// message area that shows the outcome of the last action (API errors included). Text only.

const banners = new Map();

export function setNotice(key, text) {
  const box = document.getElementById("notices");
  let banner = banners.get(key);
  if (!text) {
    if (banner) banner.remove();
    banners.delete(key);
    return;
  }
  if (!banner) {
    banner = document.createElement("p");
    banner.className = "notice";
    banner.dataset.testid = "notice";
    banner.dataset.kind = key;
    banners.set(key, banner);
    box.append(banner);
  }
  banner.textContent = text;
}

function showMessage(text, kind) {
  const area = document.getElementById("message");
  area.textContent = text;
  area.dataset.kind = kind;
  area.hidden = false;
}

export const showInfo = (text) => showMessage(text, "info");

export function showError(error) {
  const type = error && error.type ? `${error.type}: ` : "";
  const text = error && error.message ? error.message : String(error);
  showMessage(type + text, "error");
}

export function clearMessage() {
  const area = document.getElementById("message");
  area.hidden = true;
  area.textContent = "";
}

// Runs an async action, showing any error in the message area; returns its result (undefined on error).
export async function guarded(action) {
  try {
    return await action();
  } catch (error) {
    showError(error);
    return undefined;
  }
}

// Fills a list element with one <li> per text.
export function fillList(list, texts) {
  list.replaceChildren(...texts.map((text) => {
    const item = document.createElement("li");
    item.textContent = text;
    return item;
  }));
}
