// attnmt's page: translate, draw the attention heatmap, explain one decoding step.
// Plain browser JavaScript, no build step. Every text from the server is inserted
// with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { text: "", beam: 5, result: null, explanation: null, selected: -1 };

function apiKey() {
  return sessionStorage.getItem("attnmt-key") || "";
}

async function api(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  const response = await fetch(path, body === undefined ? { headers } : { method: "POST", headers, body: JSON.stringify(body) });
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) {
    if (response.status === 401) $("key-label").classList.remove("hidden");
    const problem = data && data.error ? data.error : { field: "", message: `the server answered ${response.status}` };
    const where = problem.field ? `${problem.field}: ` : "";
    const retry = response.headers.get("Retry-After");
    throw new Error(`${where}${problem.message}${retry ? ` (try again in ${retry} s)` : ""}`);
  }
  return data;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.classList.toggle("hidden", !message);
}

function piece(token) {
  return token.replace(/^▁/, "");
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function percent(weight) {
  return `${(weight * 100).toFixed(1)}%`;
}

function tokenButton(token, index) {
  const button = element("button", piece(token) || token, "tok");
  button.type = "button";
  button.dataset.step = String(index);
  button.setAttribute("aria-pressed", "false");
  button.setAttribute("aria-label", `output token ${index + 1}: ${token}; show how it was chosen`);
  button.addEventListener("click", () => selectStep(index));
  return button;
}

function drawTokens(record) {
  const strip = $("tokens");
  strip.replaceChildren();
  record.target_tokens.forEach((token, index) => {
    const button = tokenButton(token, index);
    button.setAttribute("role", "listitem");
    strip.append(button);
  });
}

function drawHeatmap(record) {
  const table = $("heatmap");
  table.replaceChildren();
  const head = element("thead");
  const headRow = element("tr");
  headRow.append(element("th", ""));
  for (const token of record.source_tokens) {
    const cell = element("th", token);
    cell.scope = "col";
    headRow.append(cell);
  }
  head.append(headRow);
  const body = element("tbody");
  record.weights.forEach((row, t) => {
    const line = element("tr");
    line.dataset.step = String(t);
    const header = element("th");
    header.scope = "row";
    header.append(tokenButton(record.target_tokens[t], t));
    line.append(header);
    row.forEach((weight, s) => line.append(heatCell(weight, record.source_tokens[s], record.target_tokens[t])));
    body.append(line);
  });
  table.append(head, body);
}

function heatCell(weight, sourceToken, targetToken) {
  const cell = element("td", percent(weight), weight > 0.55 ? "strong" : "");
  cell.dataset.weight = String(weight);
  cell.tabIndex = 0;
  cell.style.background = `rgba(var(--heat), ${Math.max(0.03, weight).toFixed(3)})`;
  const label = `${targetToken} attends to ${sourceToken}: ${percent(weight)}`;
  cell.title = label;
  cell.setAttribute("aria-label", label);
  const readout = () => { $("heat-readout").textContent = label; };
  cell.addEventListener("mouseenter", readout);
  cell.addEventListener("focus", readout);
  return cell;
}

async function translate(event) {
  event.preventDefault();
  const text = $("source").value.trim();
  showError("");
  if (!text) { showError("text: type a sentence first"); return; }
  const key = $("api-key").value.trim();
  if (key) sessionStorage.setItem("attnmt-key", key);
  const beam = Number($("beam").value);
  $("translate").disabled = true;
  try {
    const data = await api("/v1/translate", { text, beam, attention: true });
    state.text = text;
    state.beam = beam;
    state.result = data.attention[0];
    state.explanation = null;
    state.selected = -1;
    $("translation").textContent = data.translations[0];
    $("result").classList.remove("hidden");
    $("step").classList.add("hidden");
    drawTokens(state.result);
    if (state.result.weights.length) {
      drawHeatmap(state.result);
    } else {
      $("heatmap").replaceChildren();
      $("heat-readout").textContent = "This model has no attention (attention: none): nothing to draw.";
    }
  } catch (error) {
    showError(error.message);
  } finally {
    $("translate").disabled = false;
  }
}

async function selectStep(index) {
  showError("");
  state.selected = index;
  for (const node of document.querySelectorAll(".tok")) {
    node.setAttribute("aria-pressed", String(node.dataset.step === String(index)));
  }
  for (const row of document.querySelectorAll("#heatmap tbody tr")) {
    row.classList.toggle("selected", row.dataset.step === String(index));
  }
  try {
    if (!state.explanation) state.explanation = await api("/v1/explain", { text: state.text, beam: state.beam });
    drawStep(state.explanation, index);
  } catch (error) {
    showError(error.message);
  }
}

function drawStep(explanation, index) {
  const step = explanation.steps[index];
  if (!step) return;
  $("step").classList.remove("hidden");
  $("step-title").textContent = `Step ${step.step}: choosing “${piece(step.chosen) || step.chosen}”`;
  const window = step.window ? ` Local attention: aligned position p_t = ${step.aligned_position.toFixed(2)}, window ${step.window[0]}–${step.window[1]}.` : "";
  $("step-summary").textContent = `Previous word fed in: ${step.input_token}. Scoring function: ${explanation.scoring}.${window}`;
  drawScores(explanation, step);
  const list = $("step-topk");
  list.replaceChildren();
  for (const candidate of step.top_k) {
    const item = element("li", `${candidate.token}  ${percent(candidate.prob)}`, candidate.token === step.chosen ? "chosen" : "");
    list.append(item);
  }
  $("step-note").textContent = explanation.ensemble_note || explanation.note || "";
}

function drawScores(explanation, step) {
  const table = $("step-scores");
  table.replaceChildren();
  const head = element("tr");
  for (const title of ["source token", `${explanation.scoring} score`, "weight", ""]) head.append(element("th", title));
  table.append(head);
  if (!step.weights) {
    const row = element("tr");
    const cell = element("td", "No attention: the decoder sees the source only through the encoder's final state.");
    cell.colSpan = 4;
    row.append(cell);
    table.append(row);
    return;
  }
  explanation.source_tokens.forEach((token, s) => {
    const row = element("tr");
    const score = step.scores[s];
    row.append(element("td", token));
    row.append(element("td", score === null ? "outside" : score.toFixed(3), "num"));
    row.append(element("td", percent(step.weights[s]), "num"));
    const barCell = element("td", undefined, "bar-cell");
    const bar = element("span", "", "bar");
    bar.style.width = `${(step.weights[s] * 100).toFixed(1)}%`;
    barCell.append(bar);
    row.append(barCell);
    table.append(row);
  });
}

async function describeModel() {
  try {
    const model = await api("/v1/model");
    const a = model.architecture;
    const bleu = model.training && model.training.best_valid_bleu != null ? `, validation BLEU ${model.training.best_valid_bleu.toFixed(2)}` : "";
    $("model-info").textContent = `Model ${model.name}: ${a.rnn.toUpperCase()} ${a.decoder} decoder, ${a.attention} attention (${a.attention_span}), ${(model.parameters / 1e6).toFixed(1)}M parameters${bleu}.`;
  } catch (error) {
    $("model-info").textContent = `Model details unavailable (${error.message}).`;
  }
}

$("translate-form").addEventListener("submit", translate);
$("source").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) translate(event);
});
describeModel();
