// The web app: sign-in, classify (with Grad-CAM), history and one record's detail.
// Plain DOM, no framework, no build step; the API calls and their wording are in api.js.

import * as api from "./api.js";

const CLASS_LABELS = {
  normal: "Normal",
  covid: "COVID-19",
  "no-covid": "Non-COVID infection",
};
const DEFAULT_CLASSES = ["normal", "covid", "no-covid"];
const PARALLEL_UPLOADS = 2;
const PARALLEL_THUMBNAILS = 4;
const HISTORY_PAGE_SIZE = 10;
const RECORD_FACTS = ["time", "kind", "user", "model", "target", "basis", "check", "input", "latency"];

const $ = (selector, root = document) => root.querySelector(selector);
const views = ["sign-in", "classify", "history", "record"];

const state = {
  returnTo: "#classify",
  knownClasses: [...DEFAULT_CLASSES],
  queue: [],
  running: 0,
  items: new Set(),
  nextId: 1,
  history: { loaded: false, stale: false, query: null, tokens: [""], urls: [] },
  recordUrls: [],
  recordTicket: 0,
  knownUsers: new Set(),
};

// -- small helpers ----------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

function show(node, visible = true) {
  node.hidden = !visible;
}

function percent(value) {
  return `${(Number(value) * 100).toFixed(1)} %`;
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

function classLabel(name) {
  return CLASS_LABELS[name] || name;
}

function formatTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

function localDate(date) {
  const pad = (value) => String(value).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

/** The UTC instant of local midnight at the start of `yyyy-mm-dd` (plus `days`). */
function midnightIso(value, days = 0) {
  const [year, month, day] = value.split("-").map(Number);
  return new Date(year, month - 1, day + days).toISOString();
}

function setMessage(node, text) {
  node.textContent = text || "";
  show(node, Boolean(text));
}

function rememberClasses(record) {
  if (Array.isArray(record.class_names) && record.class_names.length) {
    state.knownClasses = [...record.class_names];
  }
}

function revokeAll(urls) {
  for (const url of urls.splice(0)) URL.revokeObjectURL(url);
}

/** Run `task` over `values` with at most `limit` at a time. */
async function eachLimited(values, limit, task) {
  const pending = [...values];
  const worker = async () => {
    while (pending.length) await task(pending.shift());
  };
  await Promise.all(Array.from({ length: Math.min(limit, pending.length) }, worker));
}

// -- views and routing ------------------------------------------------------------------------

function showView(name, { focus = true } = {}) {
  for (const view of views) show($(`#view-${view}`), view === name);
  const signedIn = name !== "sign-in";
  show($("#nav"), signedIn);
  show($("#account"), signedIn);
  const section = name === "record" ? "history" : name;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.id === `nav-${section}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const titles = { "sign-in": "Sign in", classify: "Classify", history: "History", record: "Inference" };
  document.title = `${titles[name]} · Chest X-ray classifier`;
  if (focus) $(`#view-${name} h1`).focus();
}

function route() {
  const hash = location.hash || "#classify";
  if (!api.currentProfile()) {
    if (hash !== "#sign-in") state.returnTo = hash;
    showView("sign-in", { focus: false });
    $("#sign-in-email").focus();
    return;
  }
  setMessage($("#notice"), "");
  if (hash.startsWith("#record/")) {
    const [id, query] = hash.slice("#record/".length).split("?");
    openRecord(decodeURIComponent(id), new URLSearchParams(query || "").get("user") || "");
  } else if (hash === "#history") {
    showView("history");
    if (!state.history.loaded || (state.history.stale && state.history.tokens.length === 1)) {
      loadHistory(state.history.tokens.at(-1));
    }
  } else {
    showView("classify");
  }
}

// -- sign-in and sign-out ---------------------------------------------------------------------

async function submitSignIn(event) {
  event.preventDefault();
  const email = $("#sign-in-email").value.trim();
  const password = $("#sign-in-password").value;
  const error = $("#sign-in-error");
  if (!email || !password) {
    setMessage(error, "Enter your e-mail and password.");
    return;
  }
  const button = $("#sign-in-submit");
  button.disabled = true;
  show($(".spinner", button), true);
  setMessage(error, "");
  try {
    const profile = await api.signIn(email, password);
    $("#sign-in-password").value = "";
    setMessage($("#notice"), "");
    $("#account-email").textContent = profile.email;
    show($("#account-role"), profile.role === "admin");
    show($("#history-user-field"), profile.role === "admin");
    state.knownUsers.add(profile.id);
    refreshUserList();
    const target = state.returnTo && state.returnTo !== "#sign-in" ? state.returnTo : "#classify";
    if (location.hash === target) route();
    else location.hash = target;
  } catch (failure) {
    setMessage(error, failure.message);
    $("#sign-in-password").select();
  } finally {
    button.disabled = false;
    show($(".spinner", button), false);
  }
}

/** Forget everything the signed-in user saw, and show the sign-in form with `message`. */
function signedOut(message) {
  api.signOut();
  state.queue.length = 0;
  for (const item of state.items) revokeAll(item.urls);
  state.items.clear();
  $("#results").replaceChildren();
  show($("#results-head"), false);
  revokeAll(state.history.urls);
  revokeAll(state.recordUrls);
  state.history = { loaded: false, stale: false, query: null, tokens: [""], urls: [] };
  $("#history-rows").replaceChildren();
  show($("#history-table"), false);
  setMessage($("#history-status"), "");
  setMessage($("#history-error"), "");
  $("#record-detail").replaceChildren();
  state.knownUsers.clear();
  $("#history-user").value = "";
  $("#account-email").textContent = "";
  setMessage($("#notice"), message);
  setMessage($("#sign-in-error"), "");
  if (location.hash !== "#sign-in") {
    state.returnTo = location.hash || "#classify";
  }
  showView("sign-in", { focus: false });
  $("#sign-in-email").focus();
}

// -- classify ---------------------------------------------------------------------------------

function addFiles(fileList) {
  const files = [...fileList];
  if (!files.length) return;
  const cards = files.map((file) => {
    const item = newItem(file);
    state.items.add(item);
    state.queue.push(item);
    return item.card;
  });
  $("#results").prepend(...cards);
  show($("#results-head"), true);
  state.history.stale = true;
  pump();
}

function newItem(file) {
  const number = state.nextId++;
  const card = $("#result-template").content.firstElementChild.cloneNode(true);
  const item = { file, card, number, urls: [], record: null, options: {} };
  card.id = `result-${number}`;
  card.setAttribute("aria-labelledby", `result-${number}-name`);
  const name = $(".file-name", card);
  name.id = `result-${number}-name`;
  name.textContent = file.name || "Pasted image";
  for (const [control, label] of [["opacity", "opacity-label"], ["target", "target-label"]]) {
    $(`.${control}`, card).id = `${control}-${number}`;
    $(`.${label}`, card).htmlFor = `${control}-${number}`;
  }
  const opacity = $(".opacity", card);
  opacity.addEventListener("input", () => applyOpacity(item));
  $(".target", card).addEventListener("change", (event) =>
    run(item, { ...item.options, targetClass: event.target.value }),
  );
  $(".retry", card).addEventListener("click", () => run(item, item.options));
  $(".anyway", card).addEventListener("click", () => run(item, { ...item.options, acceptOod: true }));
  setState(item, "queued", "Waiting");
  return item;
}

function pump() {
  while (state.running < PARALLEL_UPLOADS && state.queue.length) {
    const item = state.queue.shift();
    state.running += 1;
    run(item, {}).finally(() => {
      state.running -= 1;
      pump();
    });
  }
}

function setState(item, name, text) {
  item.card.dataset.state = name;
  $(".state-text", item.card).textContent = text;
  show($(".state .spinner", item.card), name === "working");
}

async function run(item, options) {
  item.options = options;
  const card = item.card;
  const refreshing = item.record !== null;
  setMessage($(".message", card), "");
  show($(".message-actions", card), false);
  const doing = options.targetClass ? `Explaining ${classLabel(options.targetClass)}…` : "Classifying…";
  setState(item, "working", doing);
  show($(".frame-spinner", card), refreshing);
  $(".target", card).disabled = true;
  try {
    const { record, overlay } = await api.explain(item.file, options);
    if (!state.items.has(item)) return;
    showAnswer(item, record, overlay);
    setState(item, "done", record.decision === "refer" ? "Done: refer" : "Done");
  } catch (error) {
    if (!state.items.has(item)) return; // signed out meanwhile
    setState(item, "failed", "Failed");
    setMessage($(".message", card), error.message);
    const anyway = error.code === "not_a_chest_xray";
    show($(".message-actions", card), error.transient || anyway);
    show($(".retry", card), error.transient);
    show($(".anyway", card), anyway);
    if (item.record && item.record.gradcam) {
      $(".target", card).value = item.record.gradcam.target_class; // the overlay still shown
    }
  } finally {
    show($(".frame-spinner", card), false);
    $(".target", card).disabled = false;
  }
}

function isDicom(file) {
  return /\.(dcm|dicom)$/i.test(file.name) || file.type === "application/dicom";
}

function showAnswer(item, record, overlay) {
  const card = item.card;
  item.record = record;
  rememberClasses(record);
  card.dataset.predictedClass = record.predicted_class;
  card.dataset.decision = record.decision || record.predicted_class;
  card.dataset.inferenceId = record.id;
  if (!item.imageUrl && isDicom(item.file)) {
    // A browser cannot draw DICOM: the overlay (the image as the model saw it, with the heat
    // map) stands alone.
    item.imageUrl = "dicom";
    const original = $(".original", card);
    original.hidden = true;
    $(".under", card).hidden = true;
    original.closest("figure").querySelector("figcaption").textContent =
      `${item.file.name} is a DICOM file, which browsers cannot show: the heat map shows the image as the model saw it.`;
  } else if (!item.imageUrl) {
    item.imageUrl = URL.createObjectURL(item.file);
    item.urls.push(item.imageUrl);
    const original = $(".original", card);
    original.src = item.imageUrl;
    original.alt = `The uploaded image ${item.file.name}`;
    $(".under", card).src = item.imageUrl;
  }
  renderDecision($(".decision", card), $(".decision-note", card), record);
  $(".probabilities", card).replaceChildren(probabilityBars(record));
  $(".facts", card).replaceChildren(...facts(record, ["model", "time", "target"]));

  const overlayImage = $(".overlay", card);
  if (overlay) {
    const url = URL.createObjectURL(overlay);
    item.urls.push(url);
    if (item.overlayUrl) {
      URL.revokeObjectURL(item.overlayUrl);
      item.urls.splice(item.urls.indexOf(item.overlayUrl), 1);
    }
    item.overlayUrl = url;
    overlayImage.src = url;
  }
  const target = record.gradcam ? record.gradcam.target_class : record.predicted_class;
  overlayImage.alt = `Grad-CAM heat map for the class ${target}, over the image`;
  $(".overlay-caption", card).textContent = heatMapCaption(target);
  const select = $(".target", card);
  select.replaceChildren(
    ...record.class_names.map((name) =>
      el("option", { value: name, selected: name === target, text: classLabel(name) }),
    ),
  );
  select.value = target;
  applyOpacity(item);
  show($(".answer", card), true);
}

function heatMapCaption(target) {
  return `Heat map: where the model looked for “${classLabel(target)}”`;
}

function applyOpacity(item) {
  const value = Number($(".opacity", item.card).value);
  $(".overlay", item.card).style.opacity = String(value / 100);
  $(".opacity-value", item.card).textContent = `${value} %`;
}

/** The decision in words: the class, "refer", or "not a chest X-ray". */
function renderDecision(title, note, record) {
  const decision = record.decision || record.predicted_class;
  const top = record.probabilities ? record.probabilities[record.predicted_class] : undefined;
  title.replaceChildren();
  title.className = `decision decision-${decision === "not_a_chest_xray" ? "refused" : decision}`;
  if (decision === "refer") {
    title.append(el("span", { class: "chip", text: "Refer" }), " A radiologist should read this");
    const threshold = record.abstention && record.abstention.threshold;
    note.textContent =
      `The model is not sure enough: its best guess is “${record.predicted_class}” at ` +
      `${percent(top)}${threshold ? `, below the ${percent(threshold)} it needs` : ""}.`;
  } else if (decision === "not_a_chest_xray") {
    title.append(el("span", { class: "chip", text: "Refused" }), " Not a chest X-ray");
    note.textContent = "The model did not classify this image.";
  } else {
    title.append(el("span", { class: "chip", text: "Predicted" }), ` ${classLabel(decision)}`);
    note.textContent = `Class “${decision}”, with a probability of ${percent(top)}.`;
  }
  if (record.ood && record.ood.accepted) {
    note.textContent += " Flagged: this may not be a chest X-ray (answered on request).";
  }
}

function probabilityBars(record) {
  const list = el("ul", { class: "bars", "aria-label": "Probability of each class" });
  for (const name of record.class_names || Object.keys(record.probabilities || {})) {
    const value = Number(record.probabilities[name]);
    const fill = el("span", { class: "bar-fill" });
    fill.style.width = `${Math.max(0, Math.min(1, value)) * 100}%`;
    list.append(
      el(
        "li",
        {
          class: `bar-row${name === record.predicted_class ? " top" : ""}`,
          "data-class": name,
          "data-probability": String(value),
        },
        el("span", { class: "bar-label", text: classLabel(name) }),
        el("span", { class: "bar", "aria-hidden": "true" }, fill),
        el("span", { class: "bar-value", text: percent(value) }),
      ),
    );
  }
  return list;
}

const THRESHOLD_SOURCES = {
  deployment: "set by this deployment",
  model: "chosen for this model version",
};

/** One line of facts about a record: [term, detail], or null when the record has no such fact. */
const FACTS = {
  model: ({ model, routed_to: routed, canary_fallback: fallback }) => {
    let detail = `${model.name} version ${model.version}, run ${model.run_id || "unknown"}`;
    if (routed === "canary") detail += " (the canary: a new version tried on some users)";
    else if (fallback) detail += " (the canary was unavailable; the stable version answered)";
    return ["Model", detail];
  },
  time: (record) => ["Time", formatTime(record.created_at)],
  target: ({ gradcam }) => gradcam && ["Heat map of", classLabel(gradcam.target_class)],
  kind: ({ kind }) => ["Request", kind === "gradcam" ? "Classify and explain (Grad-CAM)" : "Classify"],
  user: (record) => ["User id", record.user_id],
  basis: ({ abstention }) => {
    if (!abstention) return null;
    const { confidence, threshold, source } = abstention;
    const by = THRESHOLD_SOURCES[source] || source;
    const rule = threshold ? `${percent(threshold)} (${by})` : "never (no threshold)";
    return ["Refer below", `${rule}; confidence ${percent(confidence)}`];
  },
  check: ({ ood }) => {
    if (!ood) return null;
    if (!ood.checked) return ["Chest X-ray check", "not made by this model version"];
    if (!ood.reason) return ["Chest X-ray check", "passed"];
    return ["Chest X-ray check", `failed (${ood.reason})${ood.accepted ? ", answered on request" : ""}`];
  },
  input: ({ input }) => {
    if (!input) return null;
    const size = `${input.width} × ${input.height} px, ${Math.round(input.size_bytes / 1024)} KiB`;
    return ["Image", `${input.format}, ${size}`];
  },
  latency: ({ latency_ms: latency }) =>
    latency && ["Time taken", `${Math.round(latency.total)} ms (model ${Math.round(latency.model)} ms)`],
};

function facts(record, names) {
  return names
    .map((name) => FACTS[name](record))
    .filter(Boolean)
    .flatMap(([term, detail]) => [el("dt", { text: term }), el("dd", { text: detail })]);
}

// -- history ----------------------------------------------------------------------------------

function refreshUserList() {
  $("#history-users").replaceChildren(
    ...[...state.knownUsers].sort().map((id) => el("option", { value: id })),
  );
}

function refreshDecisionOptions() {
  const select = $("#history-decision");
  const chosen = select.value;
  select.replaceChildren(
    el("option", { value: "", text: "Any" }),
    el("option", { value: "refer", text: "Referred" }),
    ...state.knownClasses.map((name) => el("option", { value: name, text: classLabel(name) })),
  );
  select.value = chosen;
}

function historyQuery() {
  const from = $("#history-from").value;
  const to = $("#history-to").value;
  if (!from || !to) throw new Error("Choose both dates.");
  if (from > to) throw new Error("The first date must not be after the second.");
  return {
    start: midnightIso(from),
    stop: midnightIso(to, 1),
    user: $("#history-user").value.trim(),
    decision: $("#history-decision").value,
  };
}

async function submitHistory(event) {
  event.preventDefault();
  try {
    state.history.query = historyQuery();
  } catch (error) {
    setMessage($("#history-error"), error.message);
    return;
  }
  state.history.tokens = [""];
  await loadHistory("");
}

async function loadHistory(pageToken) {
  const history = state.history;
  if (!history.query) {
    try {
      history.query = historyQuery();
    } catch (error) {
      setMessage($("#history-error"), error.message);
      return;
    }
  }
  setMessage($("#history-error"), "");
  $("#history-status").textContent = "Loading…";
  $("#history-show").disabled = true;
  for (const id of ["#history-next", "#history-first"]) $(id).disabled = true;
  try {
    const page = await api.history({ ...history.query, pageToken, limit: HISTORY_PAGE_SIZE });
    history.loaded = true;
    history.stale = false;
    history.next = page.next_page_token;
    if (page.user_id) state.knownUsers.add(page.user_id);
    if (history.query.user) state.knownUsers.add(history.query.user);
    refreshUserList();
    renderHistory(page);
  } catch (error) {
    if (error.status === 401) return;
    $("#history-status").textContent = "";
    setMessage($("#history-error"), error.message);
  } finally {
    $("#history-show").disabled = false;
    for (const id of ["#history-next", "#history-first"]) $(id).disabled = false;
  }
}

function renderHistory(page) {
  const history = state.history;
  revokeAll(history.urls);
  const rows = $("#history-rows");
  rows.replaceChildren();
  const records = page.records || [];
  for (const record of records) rememberClasses(record);
  refreshDecisionOptions();
  const pageNumber = history.tokens.length;
  const owner = history.query.user ? ` of user ${history.query.user}` : "";
  $("#history-status").textContent = records.length
    ? `Page ${pageNumber}: ${plural(records.length, "inference")}${owner}, newest first.`
    : pageNumber === 1
      ? `No inferences${owner} between these dates.`
      : "No more inferences.";
  show($("#history-table"), records.length > 0);
  const thumbnails = [];
  for (const record of records) {
    const { row, image } = historyRow(record, history.query.user);
    rows.append(row);
    if (image) thumbnails.push({ record, image });
  }
  $("#history-page").textContent = pageNumber > 1 || history.next ? `Page ${pageNumber}` : "";
  show($("#history-next"), Boolean(history.next));
  show($("#history-first"), pageNumber > 1);
  const urls = history.urls;
  eachLimited(thumbnails, PARALLEL_THUMBNAILS, async ({ record, image }) => {
    try {
      const blob = await api.recordOverlay(record.id, history.query.user);
      if (state.history.urls !== urls) return; // a newer page replaced this one
      const url = URL.createObjectURL(blob);
      urls.push(url);
      image.src = url;
    } catch {
      image.replaceWith(el("span", { class: "muted small", text: "unavailable" }));
    }
  });
}

/** One table row; `image` is the thumbnail to fill in (records with a stored overlay). */
function historyRow(record, user) {
  const when = formatTime(record.created_at);
  const picture = el("div", { class: "thumb" });
  let image = null;
  if (hasOverlay(record)) {
    image = el("img", { alt: `Heat map for ${record.gradcam.target_class}`, width: 64, height: 64 });
    picture.append(image);
  } else {
    picture.append(
      el("span", { "aria-hidden": "true", text: "–" }),
      el("span", { class: "visually-hidden", text: "No heat map" }),
    );
  }
  const confidence = record.probabilities ? percent(record.probabilities[record.predicted_class]) : "";
  const details = el(
    "a",
    { href: recordLink(record.id, user), class: "details-link" },
    "Details",
    el("span", { class: "visually-hidden", text: ` of the inference at ${when}` }),
  );
  const row = el(
    "tr",
    { "data-id": record.id, "data-decision": record.decision || record.predicted_class },
    el("td", {}, picture),
    el("td", {}, el("time", { datetime: record.created_at, text: when })),
    el("td", {}, decisionChip(record)),
    el("td", { text: confidence }),
    el("td", { text: `${record.model.name} v${record.model.version}` }),
    el("td", {}, details),
  );
  return { row, image };
}

function hasOverlay(record) {
  return record.kind === "gradcam" && Boolean(record.gradcam) && record.decision !== "not_a_chest_xray";
}

function recordLink(id, user) {
  return `#record/${encodeURIComponent(id)}${user ? `?${new URLSearchParams({ user })}` : ""}`;
}

function decisionChip(record) {
  const decision = record.decision || record.predicted_class;
  const text = {
    refer: `Refer (${record.predicted_class}?)`,
    not_a_chest_xray: "Not a chest X-ray",
  }[decision] || classLabel(decision);
  return el("span", { class: `chip decision-${decision}`, text });
}

async function openRecord(id, user) {
  const ticket = ++state.recordTicket;
  const current = () => ticket === state.recordTicket && api.currentProfile() !== null;
  showView("record");
  revokeAll(state.recordUrls);
  const detail = $("#record-detail");
  delete detail.dataset.inferenceId;
  const spinner = el("span", { class: "spinner", "aria-hidden": "true" });
  detail.replaceChildren(el("p", { class: "status" }, spinner, " Loading…"));
  setMessage($("#record-error"), "");
  $("#record-title").textContent = "Inference";
  try {
    const record = await api.record(id, user);
    if (!current()) return; // another record was asked for meanwhile
    rememberClasses(record);
    $("#record-title").textContent = `Inference of ${formatTime(record.created_at)}`;
    const title = el("p");
    const note = el("p", { class: "decision-note muted" });
    renderDecision(title, note, record);
    const text = el(
      "div",
      { class: "answer-text" },
      title,
      note,
      record.probabilities ? probabilityBars(record) : null,
      el("dl", { class: "facts" }, ...facts(record, RECORD_FACTS)),
    );
    const figure = el("figure", { class: "record-figure" });
    detail.replaceChildren(el("div", { class: "record-grid" }, text, figure));
    detail.dataset.inferenceId = record.id;
    if (hasOverlay(record)) {
      const frame = el("div", { class: "frame square large" });
      figure.append(frame, el("figcaption", { text: heatMapCaption(record.gradcam.target_class) }));
      await showStoredOverlay(frame, record, user, current);
    } else {
      figure.append(el("p", { class: "muted", text: "No heat map was stored for this inference." }));
    }
  } catch (error) {
    if (error.status === 401 || !current()) return;
    detail.replaceChildren();
    setMessage($("#record-error"), error.message);
  }
}

async function showStoredOverlay(frame, record, user, current) {
  try {
    const blob = await api.recordOverlay(record.id, user);
    if (!current()) return;
    const url = URL.createObjectURL(blob);
    state.recordUrls.push(url);
    const alt = `Grad-CAM heat map for the class ${record.gradcam.target_class}`;
    frame.append(el("img", { src: url, class: "record-overlay", alt }));
  } catch (error) {
    if (current()) frame.replaceWith(el("p", { class: "message error", text: error.message }));
  }
}

// -- start ------------------------------------------------------------------------------------

function start() {
  api.whenSignedOut(signedOut);
  $("#sign-in-form").addEventListener("submit", submitSignIn);
  $("#sign-out").addEventListener("click", () => {
    signedOut("You have signed out.");
    state.returnTo = "#classify";
    history.replaceState(null, "", "#sign-in");
  });

  const input = $("#file-input");
  input.addEventListener("change", () => {
    addFiles(input.files);
    input.value = "";
  });
  const zone = $("#drop-zone");
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    addFiles(event.dataTransfer.files);
  });
  // A file dropped beside the zone must not replace the page (and the signed-in session).
  for (const name of ["dragover", "drop"]) window.addEventListener(name, (event) => event.preventDefault());
  $("#clear-results").addEventListener("click", () => {
    state.queue.length = 0;
    for (const item of state.items) revokeAll(item.urls);
    state.items.clear();
    $("#results").replaceChildren();
    show($("#results-head"), false);
    $("#file-input").focus();
  });

  const today = new Date();
  const weekAgo = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 6);
  $("#history-from").value = localDate(weekAgo);
  $("#history-to").value = localDate(today);
  refreshDecisionOptions();
  $("#history-form").addEventListener("submit", submitHistory);
  $("#history-next").addEventListener("click", () => {
    state.history.tokens.push(state.history.next);
    loadHistory(state.history.next);
  });
  $("#history-first").addEventListener("click", () => {
    state.history.tokens = [""];
    loadHistory("");
  });

  window.addEventListener("hashchange", route);
  route();
}

start();
