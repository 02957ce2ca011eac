// The index panel: service status with its hints, adding a folder as a job with live progress
// (EventSource on /api/jobs/{id}/events), cancel, merge and rebuild.

import { get, post } from "./api.js";
import { fillList, guarded, setNotice, showInfo } from "./notices.js";

const $ = (id) => document.getElementById(id);

const LOADING_POLL_MS = 3000;
const JOB_POLL_MS = 1000;

function fact(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = String(value);
  list.append(dt, dd);
}

function jobText(job) {
  const count = job.total ? `${job.done} / ${job.total}` : `${job.done}`;
  const states = { running: "Running", done: "Done", failed: "Failed", cancelled: "Cancelled" };
  const parts = [`${states[job.state] || job.state}: ${job.description}`, `${count} files`];
  if (job.message) parts.push(job.message);
  if (job.failure) parts.push(job.failure);
  return parts.join(" · ");
}

export class IndexPanel {
  // onChange() runs after the index changed (a job ended, a merge ran).
  constructor({ onChange }) {
    this.onChange = onChange;
    this.status = null;
    this.job = null;
    this.events = null;
    this.pollTimer = null;
    $("index-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.add();
    });
    $("job-cancel").addEventListener("click", () => this.cancel());
    $("merge-button").addEventListener("click", () => this.merge());
    $("rebuild-button").addEventListener("click", () => this.rebuild());
  }

  get readOnly() {
    return Boolean(this.status && this.status.read_only);
  }

  get llmConfigured() {
    return Boolean(this.status && this.status.llm && this.status.llm.configured);
  }

  async refresh() {
    const status = await guarded(() => get("/api/status"));
    if (status) this.render(status);
    return status;
  }

  render(status) {
    this.status = status;
    const index = status.index || {};
    const model = status.model || {};
    const llm = status.llm || {};
    $("status-live").textContent = String(index.live ?? "–");
    const facts = $("status-facts");
    facts.replaceChildren();
    fact(facts, "Searchable", index.live ?? 0);
    fact(facts, "Main / buffer", `${index.main ?? 0} / ${index.buffer ?? 0}`);
    fact(facts, "Removed, not yet dropped", index.deleted ?? 0);
    fact(facts, "Index", `${index.index || "none"} (${index.index_string || "auto"})`);
    fact(facts, "Model", `${model.name || index.model || "?"} · ${model.state || "?"}`);
    fact(facts, "LLM", llm.configured ? llm.model || "configured" : "not configured");
    if (status.version) fact(facts, "Version", status.version);
    fillList($("status-hints"), index.hints || []);
    $("roots").replaceChildren(...(status.roots || []).map((root) => {
      const option = document.createElement("option");
      option.value = root;
      return option;
    }));
    this.renderNotices(status, index, model, llm);
    for (const id of ["index-add-button", "merge-button", "rebuild-button"]) $(id).disabled = this.readOnly;
    $("merge-button").classList.toggle("advised", Boolean(index.merge_advised));
    $("rebuild-button").classList.toggle("advised", Boolean(index.rebuild_advised));
    const running = (index.jobs || []).find((job) => job.state === "running");
    if (running && (!this.job || this.job.id !== running.id)) this.track(running);
  }

  renderNotices(status, index, model, llm) {
    setNotice("empty", index.live === 0
      ? "The index is empty: add a folder in the Index panel (it must be under an allowed root)." : null);
    setNotice("loading", model.state === "loading"
      ? `The model ${model.name || ""} is loading; searches will start once it is ready.` : null);
    setNotice("model-failed", model.state === "failed"
      ? `The model failed to load: ${model.message || "see the service log"}.` : null);
    setNotice("no-llm", llm.configured ? null
      : "No LLM is configured: query expansion and questions are off. Set LLM_BASE_URL and LLM_API_KEY "
        + "for the service to turn them on.");
    setNotice("read-only", status.read_only
      ? "This store is read-only: searching works, adding and removing images does not." : null);
    clearTimeout(this.loadingTimer);
    if (model.state === "loading") this.loadingTimer = setTimeout(() => this.refresh(), LOADING_POLL_MS);
  }

  async add() {
    const path = $("index-path-input").value.trim();
    if (!path) {
      $("index-path-input").focus();
      return;
    }
    const answer = await guarded(() => post("/api/index/add", { paths: [path], recursive: true, prune: false }));
    if (answer && answer.job) this.track(answer.job);
  }

  async rebuild() {
    const answer = await guarded(() => post("/api/index/rebuild", { index_string: null }));
    if (answer && answer.job) this.track(answer.job);
  }

  async merge() {
    $("merge-button").disabled = true;
    const report = await guarded(() => post("/api/index/merge"));
    $("merge-button").disabled = this.readOnly;
    if (!report) return;
    showInfo(`Merged ${report.moved} images into the main index (${report.index}, ${report.seconds.toFixed(1)} s).`);
    await this.changed();
  }

  async cancel() {
    if (!this.job) return;
    const job = await guarded(() => post(`/api/jobs/${encodeURIComponent(this.job.id)}/cancel`));
    if (job) this.show(job);
  }

  async changed() {
    await this.refresh();
    this.onChange();
  }

  show(job) {
    this.job = job;
    const box = $("job-progress");
    box.hidden = false;
    box.dataset.state = job.state;
    const bar = $("job-bar");
    if (job.total) {
      bar.max = job.total;
      bar.value = job.done;
    } else if (job.state === "running") {
      bar.removeAttribute("value"); // indeterminate until the total is known
    } else {
      bar.max = 1;
      bar.value = 1;
    }
    $("job-text").textContent = jobText(job);
    $("job-cancel").hidden = job.state !== "running";
  }

  track(job) {
    this.stopTracking();
    this.show(job);
    if (job.state !== "running") return;
    const events = new EventSource(`/api/jobs/${encodeURIComponent(job.id)}/events`);
    this.events = events;
    const update = (event) => {
      try {
        this.show(JSON.parse(event.data));
      } catch {
        // a malformed event: the next one or the final poll corrects the display
      }
    };
    events.addEventListener("progress", update);
    events.addEventListener("done", (event) => {
      update(event);
      this.stopTracking();
      this.finished();
    });
    events.addEventListener("error", () => {
      if (this.events !== events) return;
      this.stopTracking();
      this.poll(job.id); // the stream broke: follow the job by polling instead
    });
  }

  async poll(id) {
    const job = await guarded(() => get(`/api/jobs/${encodeURIComponent(id)}`));
    if (!job) return;
    this.show(job);
    if (job.state === "running") {
      this.pollTimer = setTimeout(() => this.poll(id), JOB_POLL_MS);
    } else {
      this.finished();
    }
  }

  stopTracking() {
    if (this.events) this.events.close();
    this.events = null;
    clearTimeout(this.pollTimer);
  }

  finished() {
    const job = this.job;
    if (job && job.state === "done" && job.result) {
      const result = job.result;
      const added = Array.isArray(result.added) ? result.added.length : null;
      const skipped = Array.isArray(result.skipped) ? result.skipped.length : 0;
      if (added !== null) showInfo(`Indexed ${added} new images (${result.unchanged || 0} unchanged, ${skipped} skipped).`);
    }
    this.changed();
  }
}
