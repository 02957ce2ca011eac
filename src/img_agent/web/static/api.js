// Calls to the service's JSON API: same-origin, authenticated by the HttpOnly cookie.
// A 503 with Retry-After (the model is loading) is retried after that many seconds, with a notice.

import { setNotice } from "./notices.js";

const MAX_LOADING_RETRIES = 24;

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function errorOf(response) {
  let type = "HTTPError";
  let message = `The service answered ${response.status} ${response.statusText}.`;
  try {
    const body = await response.json();
    if (body && body.error) {
      type = String(body.error.type || type);
      message = String(body.error.message || message);
    }
  } catch {
    // not JSON: keep the status line as the message
  }
  if (response.status === 401) {
    message = "Not signed in: open the address that `img-agent web` printed (it carries a token).";
  }
  return new ApiError(response.status, type, message);
}

// Sends one request; `body` is a plain object (sent as JSON) or FormData. Returns the parsed JSON.
export async function request(method, path, body) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, "NetworkError", "The service cannot be reached: is `img-agent web` still running?");
    }
    if (response.status === 503 && attempt < MAX_LOADING_RETRIES) {
      const wait = Math.max(1, Number(response.headers.get("Retry-After")) || 5);
      const error = await errorOf(response);
      setNotice("loading", `The model is loading; retrying in ${wait} s. (${error.message})`);
      await sleep(wait * 1000);
      continue;
    }
    setNotice("loading", null);
    if (!response.ok) throw await errorOf(response);
    if (response.status === 204) return null;
    return response.json();
  }
}

export const get = (path) => request("GET", path);
export const post = (path, body = {}) => request("POST", path, body);
export const del = (path) => request("DELETE", path);

export const thumbnailUrl = (id, size = 256) => `/api/images/${encodeURIComponent(id)}/thumbnail?size=${size}`;
export const fileUrl = (id) => `/api/images/${encodeURIComponent(id)}/file`;
