// The API client: POST-free streaming generation over server-sent events, read with fetch()
// (not EventSource) so that HTTP errors (400 with the field to blame, 429, 5xx) stay visible.

export class ApiError extends Error {
  /** kind: "validation" | "rate-limit" | "unreachable" | "server" */
  constructor(kind, message, { field = null, retryAfter = null, status = null } = {}) {
    super(message);
    this.kind = kind;
    this.field = field;
    this.retryAfter = retryAfter;
    this.status = status;
  }
}

export function apiBase() {
  const base = (window.COVFEFE_CONFIG && window.COVFEFE_CONFIG.apiBase) || "";
  return base.replace(/\/+$/, "");
}

async function errorFrom(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's error page
  }
  const message = body.error || `${response.status} ${response.statusText}`;
  if (response.status === 429) {
    const retryAfter = Number(response.headers.get("Retry-After")) || null;
    return new ApiError("rate-limit", message, { retryAfter, status: 429 });
  }
  if (response.status >= 400 && response.status < 500) {
    return new ApiError("validation", message, { field: body.field || null,
                                                 status: response.status });
  }
  if (response.status === 502 || response.status === 503 || response.status === 504) {
    return new ApiError("unreachable", message, { status: response.status });
  }
  return new ApiError("server", message, { status: response.status });
}

async function request(path, options = {}) {
  let response;
  try {
    response = await fetch(apiBase() + path, options);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError("unreachable", "The generator cannot be reached.");
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

export async function modelCard() {
  return (await request("/api/model")).json();
}

/** Parse a text/event-stream body, calling onEvent(name, data) per event. */
export async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

/**
 * Generate completions, streaming: handlers.onStart({prefix, seed, unknown}),
 * handlers.onChars([char per candidate]), and the result (as POST /api/generate returns it)
 * resolves the promise.
 */
export async function generate(params, handlers, signal) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined) query.set(name, String(value));
  }
  const response = await request(`/api/generate/stream?${query}`, {
    headers: { Accept: "text/event-stream" }, signal,
  });
  let result = null;
  try {
    await readEvents(response.body, (name, data) => {
      if (name === "prefix") handlers.onStart(data);
      else if (name === "done") result = data;
      else handlers.onChars(data.chars);
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError("unreachable", "The connection broke while the tweet was being written.");
  }
  if (!result) throw new ApiError("server", "The stream ended before the tweet was finished.");
  return result;
}
