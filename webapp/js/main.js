// The page: the form, streaming into tweet cards, errors beside their fields, permalinks.
import { ApiError, apiBase, generate, modelCard } from "./api.js";
import { TweetCard } from "./cards.js";
import { fromLocation, permalink } from "./permalink.js";

const MAX_PREFIX = 200;
const FIELDS = { prefix: "prefix", temperature: "temperature", n: "count" };

const $ = (id) => document.getElementById(id);
const form = $("compose");
const prefixInput = $("prefix");
const temperatureInput = $("temperature");
const countInput = $("count");
const button = $("generate");
const results = $("results");
const banner = $("banner");
const status = $("status");

let running = null; // the AbortController of the generation in flight

function temperatureHint(value) {
  if (value <= 0.4) return "safest: predictable, often repetitive";
  if (value <= 0.7) return "safer: sticks to his favourite phrases";
  if (value <= 1.0) return "balanced: the archive's own mix";
  if (value <= 1.2) return "wilder: more surprising words";
  return "wildest: expect covfefe";
}

function showTemperature() {
  const value = Number(temperatureInput.value);
  $("temperature-value").textContent = value.toFixed(1);
  $("temperature-hint").textContent = temperatureHint(value);
  temperatureInput.setAttribute("aria-valuetext", `${value.toFixed(1)}, ${temperatureHint(value)}`);
}

function showCount() {
  const length = [...prefixInput.value].length;
  const counter = $("prefix-count");
  counter.textContent = `${length} / ${MAX_PREFIX}`;
  counter.classList.toggle("near-limit", length > MAX_PREFIX - 20);
}

function clearErrors() {
  banner.hidden = true;
  banner.textContent = "";
  $("prefix-note").textContent = "";
  for (const id of Object.values(FIELDS)) {
    $(id).removeAttribute("aria-invalid");
    $(`${id}-error`).textContent = "";
  }
}

function showBanner(message, kind) {
  banner.textContent = message;
  banner.dataset.kind = kind;
  banner.hidden = false;
}

function showError(error) {
  if (error.kind === "validation" && error.field && FIELDS[error.field]) {
    const id = FIELDS[error.field];
    $(id).setAttribute("aria-invalid", "true");
    $(`${id}-error`).textContent = error.message;
    $(id).focus();
  } else if (error.kind === "rate-limit") {
    const wait = error.retryAfter ? ` Try again in ${error.retryAfter} seconds.` : "";
    showBanner(`Slow down: too many tweets requested from your address.${wait}`, "rate-limit");
  } else if (error.kind === "unreachable") {
    showBanner("The tweet generator cannot be reached right now. Check your connection, " +
               "or try again in a minute.", "unreachable");
  } else {
    showBanner(`Something went wrong: ${error.message}`, error.kind || "server");
  }
}

// Characters the model never learned are read as "some rare character": say so, quietly.
function showUnknown(unknown) {
  if (!unknown.length) return;
  const list = unknown.map((char) => `“${char}”`).join(", ");
  $("prefix-note").textContent = `The model does not know ${list}: it reads ` +
    `${unknown.length > 1 ? "them" : "it"} as a rare character.`;
}

function setBusy(busy) {
  form.setAttribute("aria-busy", String(busy));
  button.disabled = busy;
  button.textContent = busy ? "Writing…" : "Generate";
}

function showEmpty() {
  results.replaceChildren();
  const empty = document.createElement("p");
  empty.className = "empty";
  empty.textContent = "Your tweets will appear here. Type how one begins (or nothing at all) " +
    "and press Generate.";
  results.append(empty);
}

async function run({ prefix, temperature, n, seed, highlight = null }) {
  if (running) running.abort();
  const controller = new AbortController();
  running = controller;
  clearErrors();
  setBusy(true);
  status.textContent = "Writing…";
  const cards = Array.from({ length: n }, (_, index) => new TweetCard(index, n, prefix));
  results.replaceChildren(...cards.map((card) => card.root));
  try {
    const result = await generate({ prefix, temperature, n, seed }, {
      onStart: (start) => {
        cards.forEach((card) => card.setPrefix(start.prefix));
        showUnknown(start.unknown || []);
      },
      onChars: (chars) => chars.forEach((char, index) => cards[index].append(char)),
    }, controller.signal);
    const state = { prefix, temperature, n, seed: result.seed, model: result.model.version };
    result.completions.forEach((completion, index) => {
      cards[index].finish(completion, permalink(state, index));
    });
    status.textContent = `Wrote ${n} tweet${n > 1 ? "s" : ""}.`;
    if (highlight !== null && cards[highlight]) {
      cards[highlight].root.classList.add("linked");
      cards[highlight].root.scrollIntoView({ block: "center" });
    }
  } catch (error) {
    if (error.name === "AbortError") return;
    showEmpty();
    status.textContent = "";
    showError(error instanceof ApiError ? error : new ApiError("server", String(error)));
  } finally {
    if (running === controller) {
      running = null;
      setBusy(false);
    }
  }
}

function randomSeed() {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

function submit(event) {
  event.preventDefault();
  run({
    prefix: prefixInput.value,
    temperature: Number(temperatureInput.value),
    n: Number(countInput.value),
    seed: randomSeed(),
  });
}

async function showModel(expectedVersion) {
  try {
    const card = await modelCard();
    const metrics = card.metrics || {};
    $("model-name").textContent = `${card.name} (version ${card.version})`;
    $("model-bits").textContent = Number(metrics.validation_bits_per_char).toFixed(3);
    const baseline = metrics.baseline || {};
    $("baseline-bits").textContent = Number(baseline.validation_bits_per_char).toFixed(3);
    $("baseline-name").textContent = `a ${baseline.order}-character Markov table ` +
      "(Kneser-Ney)";
    const data = card.data || {};
    $("model-data").textContent = `${Number(data.tweets).toLocaleString("en")} tweets, ` +
      `${(data.first_tweet || "").slice(0, 4)}–${(data.last_tweet || "").slice(0, 4)}`;
    if (expectedVersion && expectedVersion !== card.version) {
      showBanner(`This link was made with model version ${expectedVersion}; the generator now ` +
                 `runs ${card.version}, so the tweet may differ.`, "version");
    }
  } catch {
    $("model-name").textContent = "unavailable (the API cannot be reached)";
  }
}

$("api-link").href = `${apiBase()}/api/openapi.json`;
prefixInput.addEventListener("input", showCount);
prefixInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});
temperatureInput.addEventListener("input", showTemperature);
form.addEventListener("submit", submit);

const linked = fromLocation();
if (linked) {
  prefixInput.value = linked.prefix;
  temperatureInput.value = String(linked.temperature);
  countInput.value = String(Math.min(linked.n, Number(countInput.max)));
  showCount();
  showTemperature();
  run({ ...linked, highlight: linked.k - 1 }).then(() => showModel(linked.model));
} else {
  showCount();
  showTemperature();
  showEmpty();
  showModel(null);
}
