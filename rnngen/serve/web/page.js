// The page of `rnngen serve`: asks POST /v1/generate for a stream of tokens with their top
// candidates ("explain": true), writes the text as it arrives and draws the probabilities of the
// latest step, or of any token clicked. Plain JavaScript, no libraries, nothing from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const steps = [];          // one entry per generated token: {token, candidates}
let pinned = null;         // index of the clicked token, or null to follow the latest
let controller = null;     // aborts the running request
let drawPending = false;

function visible(token) {
  // Whitespace made visible in the chart's labels.
  return token.replace(/ /g, "\u2423").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5") || "\u2205";
}

function percent(p) {
  return p >= 0.1 ? (100 * p).toFixed(0) + "%" : p >= 0.001 ? (100 * p).toFixed(1) + "%" : p > 0 ? "<0.1%" : "0";
}

async function describeModel() {
  const reply = await fetch("v1/model");
  const info = await reply.json();
  const trained = info.step ? `, trained ${info.step} steps` : "";
  const loss = info.val_loss != null ? `, validation loss ${info.val_loss.toFixed(3)} nats/token` : "";
  const shape = info.cell === "ngram" ? `${info.order}-gram model`
    : `${info.cell.toUpperCase()}, ${info.num_layers} layer(s) of ${info.hidden_size} units`;
  $("model").textContent = `Model: ${info.level}-level ${shape}, vocabulary of ${info.vocab_size} tokens${trained}${loss}.`;
  const d = info.defaults;
  $("seed").value = d.seed ?? "";
  $("length").value = Math.min(d.length, 300, info.limits.max_length);
  $("length").max = info.limits.max_length;
  $("temperature").value = d.temperature;
  $("top_p").value = d.top_p ?? 1;
  $("top_k").value = d.top_k ?? "";
  $("repetition_penalty").value = d.repetition_penalty;
  for (const name of ["temperature", "top_p", "repetition_penalty"]) showValue(name);
}

function showValue(name) {
  const value = Number($(name).value);
  const off = (name === "top_p" && value >= 1) || (name === "repetition_penalty" && value === 1);
  $(name + "_out").textContent = off ? "off" : value.toFixed(2);
}

function options() {
  const body = {
    seed: $("seed").value,
    length: Number($("length").value),
    temperature: Number($("temperature").value),
    repetition_penalty: Number($("repetition_penalty").value),
    stream: true,
    explain: true,
  };
  const topP = Number($("top_p").value);
  if (topP < 1) body.top_p = topP;
  if ($("top_k").value !== "") body.top_k = Number($("top_k").value);
  if ($("random_seed").value !== "") body.random_seed = Number($("random_seed").value);
  return body;
}

function setState(state, message, isError) {
  document.body.dataset.state = state;
  $("go").disabled = state === "running";
  $("stop").disabled = state !== "running";
  if (message !== undefined) {
    $("status").textContent = message;
    $("status").classList.toggle("error", Boolean(isError));
  }
}

async function generate(event) {
  event.preventDefault();
  steps.length = 0;
  pinned = null;
  const text = $("text");
  text.textContent = "";
  const seed = document.createElement("span");
  seed.className = "seed";
  seed.textContent = $("seed").value;
  text.append(seed);
  drawChart();
  controller = new AbortController();
  setState("running", "Warming the state on the seed…");
  const started = performance.now();
  try {
    const reply = await fetch("v1/generate", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(options()),
      signal: controller.signal,
    });
    if (!reply.ok) {
      const problem = await reply.json().catch(() => ({error: reply.statusText}));
      setState("error", `Refused (${reply.status}): ${problem.error}`, true);
      return;
    }
    await readEvents(reply, started);
  } catch (error) {
    if (error.name === "AbortError") setState("done", `Stopped after ${steps.length} tokens.`);
    else setState("error", `Failed: ${error.message}`, true);
  }
}

async function readEvents(reply, started) {
  // Server-Sent Events over a POST: read the body and split it at blank lines.
  const reader = reply.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const kind = /^event: (.*)$/m.exec(block)[1];
      const data = JSON.parse(/^data: (.*)$/m.exec(block)[1]);
      handle(kind, data, started);
    }
  }
}

function handle(kind, data, started) {
  if (kind === "token") {
    addToken(data);
    const seconds = (performance.now() - started) / 1000;
    $("status").textContent = `${steps.length} tokens, ${(steps.length / seconds).toFixed(0)} tokens/s`;
  } else if (kind === "text") {
    $("text").append(document.createTextNode(data.text));
  } else if (kind === "done") {
    const sample = data.samples[0];
    const why = {length: "reached the length", stop: "met a stop text", max_time: "ran out of time"}[sample.stopped_by];
    setState("done", `${sample.tokens} tokens; ${why}; mean log-probability ${sample.mean_logprob.toFixed(3)}. ` +
      `Random seed ${data.settings.random_seed}: type it in to get the same text again.`);
  } else if (kind === "error") {
    setState("error", data.error, true);
  }
}

function addToken(data) {
  const index = steps.length;
  steps.push({token: data.token, candidates: data.candidates || []});
  const span = document.createElement("span");
  span.className = "tok";
  span.textContent = data.text;
  span.dataset.index = index;
  span.title = `step ${index + 1}: "${data.token}"`;
  const text = $("text");
  text.append(span);
  text.scrollTop = text.scrollHeight;
  scheduleChart();
}

function scheduleChart() {
  // Tokens can arrive faster than the screen refreshes: draw at most once per frame.
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    drawChart();
  });
}

function drawChart() {
  const chart = $("chart");
  chart.textContent = "";
  const index = pinned ?? steps.length - 1;
  const step = steps[index];
  document.querySelectorAll("#text .tok.selected").forEach((el) => el.classList.remove("selected"));
  if (!step) {
    $("chart_title").textContent = "Next-token probabilities";
    $("chart_note").textContent = "Generate some text to see the choice the model makes at every step.";
    return;
  }
  if (pinned !== null) document.querySelector(`#text .tok[data-index="${index}"]`)?.classList.add("selected");
  $("chart_title").textContent = `Step ${index + 1}: the model chose "${visible(step.token)}"` +
    (pinned === null ? " (latest)" : "");
  for (const c of step.candidates) chart.append(candidateRow(c, c.token === step.token));
  const rawSum = step.candidates.reduce((s, c) => s + c.raw, 0);
  const finalSum = step.candidates.reduce((s, c) => s + c.final, 0);
  $("chart_note").textContent = `These ${step.candidates.length} tokens hold ${percent(rawSum)} of the model's ` +
    `probability and ${percent(finalSum)} of the distribution the token was drawn from.` +
    (pinned === null ? " Click a token in the text to look at an earlier step." : " Click it again to follow the latest step.");
}

function candidateRow(candidate, chosen) {
  const row = document.createElement("div");
  row.className = chosen ? "row chosen" : "row";
  const label = document.createElement("div");
  label.className = "label";
  label.textContent = visible(candidate.token);
  label.title = JSON.stringify(candidate.token);
  const bars = document.createElement("div");
  bars.className = "bars";
  for (const kind of ["raw", "final"]) {
    const track = document.createElement("div");
    track.className = "track";
    const bar = document.createElement("div");
    bar.className = `bar ${kind}`;
    bar.dataset.p = candidate[kind];
    bar.style.width = `${Math.min(100, 100 * candidate[kind])}%`;
    const value = document.createElement("span");
    value.textContent = percent(candidate[kind]);
    track.append(bar, value);
    bars.append(track);
  }
  row.append(label, bars);
  return row;
}

function pick(event) {
  const span = event.target.closest(".tok");
  if (!span) return;
  const index = Number(span.dataset.index);
  pinned = pinned === index ? null : index;
  drawChart();
}

document.addEventListener("DOMContentLoaded", () => {
  $("controls").addEventListener("submit", generate);
  $("stop").addEventListener("click", () => controller?.abort());
  $("text").addEventListener("click", pick);
  for (const name of ["temperature", "top_p", "repetition_penalty"]) {
    $(name).addEventListener("input", () => showValue(name));
  }
  describeModel().catch((error) => { $("model").textContent = `Could not describe the model: ${error.message}`; });
  drawChart();
});
