// Permalinks: everything that reproduces one tweet (prefix, temperature, candidates, seed,
// which candidate, model version) in the page's query string.

const NAMES = ["prefix", "temperature", "n", "seed", "k", "model"];

export function permalink(state, index) {
  const url = new URL(window.location.href);
  url.search = "";
  url.hash = "";
  url.searchParams.set("prefix", state.prefix);
  url.searchParams.set("temperature", String(state.temperature));
  url.searchParams.set("n", String(state.n));
  url.searchParams.set("seed", String(state.seed));
  url.searchParams.set("k", String(index + 1));
  url.searchParams.set("model", state.model);
  return url.toString();
}

/** The permalink state in the current URL, or null when the page was opened plainly. */
export function fromLocation(location = window.location) {
  const query = new URLSearchParams(location.search);
  if (!query.has("seed")) return null;
  const state = Object.fromEntries(NAMES.map((name) => [name, query.get(name)]));
  return {
    prefix: state.prefix || "",
    temperature: Number(state.temperature || 1),
    n: Math.max(1, Number(state.n || 1)),
    seed: Number(state.seed),
    k: Math.max(1, Number(state.k || 1)),
    model: state.model || null,
  };
}
