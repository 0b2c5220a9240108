// The portal's try-it console: sends one request of the spec's operations to the API that
// served the portal (or, opened from a file, to the server the reader names), with the
// token the reader pastes, and shows the answer. It is ours, not Redoc's (Redoc has none)
// nor a hosted one: it sends nothing anywhere but that one server, and keeps the token in
// this page's memory only. `spec` is the OpenAPI document the page renders.
function startTryIt(spec) {
  const $ = (id) => document.getElementById(id);
  const operations = [];
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const method of ["get", "post", "put", "patch", "delete"]) {
      const op = item[method];
      if (!op) continue;
      const params = [...(item.parameters || []), ...(op.parameters || [])]
        .map((p) => (p.$ref ? resolve(spec, p.$ref) : p))
        .filter((p) => p.in !== "header" || p.name.toLowerCase() !== "api-version");
      operations.push({ id: op.operationId, method: method.toUpperCase(), path, params, body: body(spec, op) });
    }
  }
  const select = $("tryit-operation");
  for (const op of operations) {
    const option = document.createElement("option");
    option.value = op.id;
    option.textContent = `${op.id}: ${op.method} ${op.path}`;
    select.appendChild(option);
  }
  const served = location.protocol === "http:" || location.protocol === "https:";
  $("tryit-server").value = served ? location.origin : "http://127.0.0.1:8080";
  const current = () => operations.find((op) => op.id === select.value);
  const show = () => {
    const op = current();
    const fields = $("tryit-params");
    fields.replaceChildren();
    for (const p of op.params) {
      const label = document.createElement("label");
      label.textContent = `${p.name} (${p.in}${p.required ? ", required" : ""}) `;
      const input = document.createElement("input");
      input.dataset.name = p.name;
      input.dataset.in = p.in;
      input.placeholder = p.schema && p.schema.default !== undefined ? String(p.schema.default) : "";
      label.appendChild(input);
      fields.appendChild(label);
    }
    $("tryit-body").value = op.body === undefined ? "" : JSON.stringify(op.body, null, 2);
    $("tryit-body").hidden = op.body === undefined;
  };
  select.addEventListener("change", show);
  // Following the operation the reader opened in the reference.
  const follow = () => {
    const match = /operation\/([A-Za-z]+)/.exec(decodeURIComponent(location.hash));
    if (match && operations.some((op) => op.id === match[1])) {
      select.value = match[1];
      show();
    }
  };
  window.addEventListener("hashchange", follow);
  $("tryit-send").addEventListener("click", () => send(current(), spec.info.version));
  show();
  follow();
}

function resolve(spec, ref) {
  return ref.slice(2).split("/").reduce((node, key) => node[key.replace(/~1/g, "/").replace(/~0/g, "~")], spec);
}

// The example body of `op`, to edit; undefined for an operation without a body.
function body(spec, op) {
  if (!op.requestBody) return undefined;
  const request = op.requestBody.$ref ? resolve(spec, op.requestBody.$ref) : op.requestBody;
  const json = request.content && request.content["application/json"];
  if (!json) return undefined;
  if (json.example !== undefined) return json.example;
  const examples = Object.values(json.examples || {});
  if (examples.length) return examples[0].$ref ? resolve(spec, examples[0].$ref).value : examples[0].value;
  return {};
}

async function send(op, version) {
  const $ = (id) => document.getElementById(id);
  const status = $("tryit-status");
  const out = $("tryit-response");
  let path = op.path;
  const query = new URLSearchParams();
  const headers = { "api-version": version };
  const token = $("tryit-token").value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  for (const input of $("tryit-params").querySelectorAll("input")) {
    const value = input.value.trim();
    if (!value) continue;
    if (input.dataset.in === "path") path = path.replace(`{${input.dataset.name}}`, encodeURIComponent(value));
    else if (input.dataset.in === "query") query.set(input.dataset.name, value);
    else if (input.dataset.in === "header") headers[input.dataset.name] = value;
  }
  const init = { method: op.method, headers };
  if (op.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = $("tryit-body").value;
  }
  const url = $("tryit-server").value.replace(/\/$/, "") + path + (query.size ? `?${query}` : "");
  status.textContent = `${op.method} ${url} …`;
  out.textContent = "";
  try {
    const response = await fetch(url, init);
    const id = response.headers.get("X-Request-Id");
    status.textContent = `${response.status} ${response.statusText}${id ? ` (request id ${id})` : ""}`;
    status.dataset.status = String(response.status);
    const type = response.headers.get("Content-Type") || "";
    if (type.startsWith("text/event-stream") && response.body) {
      // A run's events, shown as they come until the stream ends.
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        out.textContent += value;
      }
      return;
    }
    const text = await response.text();
    try {
      out.textContent = JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      out.textContent = text;
    }
  } catch (error) {
    status.textContent = `No answer: ${error}`;
    status.dataset.status = "error";
  }
}
