// The API reference, rendered from the server's own OpenAPI schema (no external scripts).

const METHODS = ["get", "post", "put", "patch", "delete"];

function schemaName(schema) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.type === "array") return `[${schemaName(schema.items)}]`;
  if (schema.anyOf) return schema.anyOf.map(schemaName).join(" | ");
  return schema.type || "";
}

function bodyOf(op) {
  const content = op.requestBody ? op.requestBody.content : null;
  if (!content) return "";
  return Object.entries(content).map(([type, c]) => `${type}: ${schemaName(c.schema)}`).join("; ");
}

function answerOf(op) {
  const ok = op.responses && (op.responses["200"] || op.responses["201"]);
  if (!ok || !ok.content) return ok ? ok.description || "" : "";
  return Object.entries(ok.content).map(([type, c]) => `${type}: ${schemaName(c.schema)}`).join("; ");
}

function cell(row, text, tag = "td") {
  const el = document.createElement(tag);
  el.textContent = text;
  row.append(el);
}

async function render() {
  const target = document.getElementById("endpoints");
  const reply = await fetch("/api/openapi.json", { credentials: "same-origin" });
  if (!reply.ok) {
    target.textContent = `The schema could not be loaded (HTTP ${reply.status}): open the address img-agent web printed.`;
    return;
  }
  const spec = await reply.json();
  const table = document.createElement("table");
  const head = document.createElement("tr");
  for (const title of ["method", "path", "what it does", "body", "answer"]) cell(head, title, "th");
  table.append(head);
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const row = document.createElement("tr");
      cell(row, method.toUpperCase());
      cell(row, path);
      cell(row, op.summary || op.description || "");
      cell(row, bodyOf(op));
      cell(row, answerOf(op));
      table.append(row);
    }
  }
  target.append(table);
}

render();
