// The playground and model card. Plain JavaScript, no dependencies, no build step.
//
// Talks to the public HTTP API of the origin that served it, and to nothing else:
//   GET  /health/ready                                   the status line
//   GET  /v1/models                                      models, versions, labels
//   GET  /v1/models/{name}/versions/{v}/files/{file}     the card's files
//   POST /v1/predict                                     one model served
//   POST /v1/models/{name}/predict                       several models served
//   POST /v1/models/{name}/versions/{v}/predict          a version chosen
//   POST /v1/models/{name}/labels/{label}/predict        a version label chosen
//
// Optional parts of a model description light up optional controls:
//   several entries in /v1/models        the model and version selectors
//   "version_labels": {label: version}   the version label selector
//   an input with "optional": true       image-only and text-only requests
//   "explain": ["modality", ...]         the modality explanation (explain=modality)
//
// The API key lives in one variable of this closure: never in the address, in storage
// or in a cookie, so reloading the page forgets it.
"use strict";

(() => {
  const TOP_CLASSES = 10;
  const MAX_LOAD_RETRIES = 30;
  const CARD_FILES = {
    metadata: "metadata.json",
    evaluation: "evaluation.json",
    confusion: "confusion_matrix.png",
    curves: "training_curves.png",
  };
  const METRIC_COLUMNS = [
    ["accuracy", "Accuracy"],
    ["precision_macro", "Precision"],
    ["recall_macro", "Recall"],
    ["f1_macro", "F1"],
  ];

  const $ = (id) => document.getElementById(id);
  const el = (tag, props = {}, children = []) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role") {
        node.setAttribute(key, value);
      } else node[key] = value;
    }
    for (const child of children) node.append(child);
    return node;
  };

  let apiKey = "";
  let models = [];
  let image = null; // the File (or Blob) to send
  let previewUrl = null;
  let cardUrls = [];
  let lastAnswer = null;
  let showAll = false;
  let loadTries = 0;
  let cardRequest = 0;

  // --- HTTP -------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message, retryAfter) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter;
    }
  }

  async function call(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (apiKey) headers.set("Authorization", `Bearer ${apiKey}`);
    let response;
    try {
      response = await fetch(path, { ...options, headers, cache: "no-store", credentials: "omit" });
    } catch (err) {
      throw new ApiError(0, "unreachable", "The service cannot be reached. Is it running?", null);
    }
    if (response.ok) return response;
    let code = `http_${response.status}`;
    let message = response.statusText || "request failed";
    try {
      const body = await response.json();
      if (body && body.error && typeof body.error === "object") {
        code = body.error.code || code;
        message = body.error.message || message;
      } else if (body && typeof body.error === "string") {
        message = body.error;
      }
    } catch (err) {
      // not JSON: keep the status text
    }
    const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    throw new ApiError(response.status, code, message, Number.isFinite(retry) ? retry : null);
  }

  const json = async (path) => (await call(path)).json();
  const seg = encodeURIComponent;

  // --- status and errors ------------------------------------------------------------

  function setStatus(text, tone) {
    const status = $("status");
    status.textContent = text;
    status.dataset.tone = tone;
  }

  function describe(err) {
    switch (err.status) {
      case 0:
        return err.message;
      case 401:
        return "The service needs a valid API key (401). Enter it above and try again.";
      case 400:
        return err.code === "invalid_image"
          ? `Not an image the service can read (400 invalid_image): ${err.message}`
          : `${err.message} (${err.status} ${err.code})`;
      case 413:
        return `Too large (413): ${err.message}`;
      case 415:
        return `Not an image format this service accepts (415): ${err.message}`;
      case 503: {
        const wait = err.retryAfter ? ` Try again in ${err.retryAfter} s.` : " Try again shortly.";
        return `The service is busy or starting (503): ${err.message}.${wait}`;
      }
      default:
        return `${err.message} (${err.status} ${err.code})`;
    }
  }

  function showError(err) {
    $("error-text").textContent = describe(err);
    $("error").dataset.status = String(err.status);
    $("error").dataset.code = err.code;
    $("retry").hidden = err.status !== 503 && err.status !== 0;
    $("error").hidden = false;
    if (err.status === 401) askForKey();
  }

  function clearError() {
    $("error").hidden = true;
    $("error-text").textContent = "";
  }

  function askForKey() {
    $("access").hidden = false;
    document.body.dataset.state = "auth";
    setStatus("This service needs an API key", "warn");
    $("api-key").focus();
  }

  // --- models -------------------------------------------------------------------------

  async function loadModels() {
    try {
      const list = await json("/v1/models");
      models = Array.isArray(list.models) ? list.models : [];
      if (!models.length) throw new ApiError(503, "no_models", "no model is served", 5);
      loadTries = 0;
      $("access").hidden = !apiKey;
      fillModelChoice();
      document.body.dataset.state = "ready";
      refreshStatus();
      await selectionChanged();
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (err.status === 401) {
        askForKey();
        if (apiKey) showError(err);
        return;
      }
      if ((err.status === 503 || err.status === 0) && loadTries < MAX_LOAD_RETRIES) {
        loadTries += 1;
        const wait = Math.min(err.retryAfter || 2, 10);
        setStatus(`Waiting for the service (${err.message}); next try in ${wait} s`, "wait");
        setTimeout(loadModels, wait * 1000);
        return;
      }
      document.body.dataset.state = "error";
      setStatus(describe(err), "bad");
      $("card-note").textContent = "The model's description could not be loaded.";
    }
  }

  async function refreshStatus() {
    try {
      const ready = await json("/health/ready");
      setStatus(`Ready: ${ready.model} version ${ready.version}`, "good");
    } catch (err) {
      if (err instanceof ApiError) setStatus(`Not ready: ${err.message}`, "wait");
    }
  }

  const names = () => [...new Set(models.map((m) => m.name))];
  const entriesOf = (name) => models.filter((m) => m.name === name);

  function versionsOf(name) {
    const found = new Set();
    for (const entry of entriesOf(name)) {
      found.add(entry.version);
      if (Array.isArray(entry.versions)) {
        for (const v of entry.versions) found.add(typeof v === "object" ? v.version : v);
      }
    }
    return [...found].filter(Number.isInteger).sort((a, b) => b - a);
  }

  function versionLabelsOf(name) {
    const labels = {};
    for (const entry of entriesOf(name)) {
      if (entry.version_labels && typeof entry.version_labels === "object") {
        Object.assign(labels, entry.version_labels);
      }
    }
    return labels;
  }

  function replaceOptions(select, options) {
    const previous = select.value;
    select.replaceChildren(...options.map(([value, text]) => el("option", { value, text })));
    if (options.some(([value]) => value === previous)) select.value = previous;
  }

  function fillModelChoice() {
    const all = names();
    replaceOptions($("model"), all.map((n) => [n, n]));
    $("model-field").hidden = all.length < 2;
    fillVersionChoice();
  }

  function fillVersionChoice() {
    const name = $("model").value;
    const versions = versionsOf(name);
    replaceOptions($("version"), [
      ["", "as served"],
      ...versions.map((v) => [String(v), `version ${v}`]),
    ]);
    $("version-field").hidden = versions.length < 2;
    const labels = Object.entries(versionLabelsOf(name));
    replaceOptions($("version-label"), [
      ["", "none"],
      ...labels.map(([label, v]) => [label, `${label} (version ${v})`]),
    ]);
    $("label-field").hidden = labels.length === 0;
    $("model-choice").hidden = $("model-field").hidden && $("version-field").hidden && $("label-field").hidden;
  }

  // The entry the selectors point at: the model, at the chosen label's or version's number
  // (none chosen: the highest version listed, what an unpinned request gets by default).
  function selected() {
    const name = $("model").value;
    const entries = entriesOf(name).sort((a, b) => b.version - a.version);
    const label = $("version-label").value;
    const labelled = label ? versionLabelsOf(name)[label] : undefined;
    const wanted = labelled !== undefined ? Number(labelled) : Number($("version").value || NaN);
    const entry = entries.find((m) => m.version === wanted) || entries[0];
    const version = Number.isInteger(wanted) ? wanted : entry.version;
    return { name, entry, version, label };
  }

  function predictPath() {
    const { name, label } = selected();
    const version = $("version").value;
    if (label) return `/v1/models/${seg(name)}/labels/${seg(label)}/predict`;
    if (version) return `/v1/models/${seg(name)}/versions/${seg(version)}/predict`;
    return names().length > 1 ? `/v1/models/${seg(name)}/predict` : "/v1/predict";
  }

  async function selectionChanged() {
    const { entry } = selected();
    const optional = (entry.inputs || []).some((input) => input.optional === true);
    $("modality").hidden = !optional;
    if (!optional) document.querySelector('input[name="modality"][value="both"]').checked = true;
    const explainable = Array.isArray(entry.explain) && entry.explain.includes("modality");
    $("explain-field").hidden = !explainable;
    if (!explainable) $("explain").checked = false;
    await renderCard();
  }

  // --- the image ----------------------------------------------------------------------

  function useImage(file) {
    if (!file) return;
    image = file;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    const preview = $("preview");
    preview.src = previewUrl;
    preview.hidden = !(file.type || "").startsWith("image/");
    $("image-name").textContent = `${file.name || "pasted image"} · ${formatBytes(file.size)}`;
    $("drop").dataset.filled = "true";
    clearError();
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  }

  function wireImageInputs() {
    const input = $("image");
    const drop = $("drop");
    input.addEventListener("change", () => useImage(input.files[0]));
    for (const type of ["dragenter", "dragover"]) {
      drop.addEventListener(type, (event) => {
        event.preventDefault();
        drop.dataset.over = "true";
      });
    }
    drop.addEventListener("dragleave", () => delete drop.dataset.over);
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      delete drop.dataset.over;
      const file = event.dataTransfer && event.dataTransfer.files[0];
      if (file) useImage(file);
    });
    document.addEventListener("paste", (event) => {
      const items = event.clipboardData ? [...event.clipboardData.items] : [];
      const item = items.find((i) => i.kind === "file" && i.type.startsWith("image/"));
      if (item) {
        event.preventDefault();
        useImage(item.getAsFile());
      }
    });
  }

  // --- predicting ---------------------------------------------------------------------

  async function predict(event) {
    if (event) event.preventDefault();
    clearError();
    const modality = document.querySelector('input[name="modality"]:checked').value;
    const text = $("text").value;
    const form = new FormData();
    if (modality !== "text") {
      if (!image) {
        showError(new ApiError(400, "no_image", "Choose an image first", null));
        $("image").focus();
        return;
      }
      form.append("image", image, image.name || "image");
    }
    if (modality !== "image") form.append("text", text);
    const explainIt = !$("explain-field").hidden && $("explain").checked;
    const path = predictPath() + (explainIt ? "?explain=modality" : "");
    const submit = $("submit");
    submit.disabled = true;
    submit.textContent = "Classifying…";
    document.body.dataset.busy = "true";
    try {
      const answer = await (await call(path, { method: "POST", body: form })).json();
      lastAnswer = answer;
      showAll = false;
      renderAnswer(answer);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      $("result").hidden = true;
      showError(err);
    } finally {
      submit.disabled = false;
      submit.textContent = "Classify";
      delete document.body.dataset.busy;
    }
  }

  const sorted = (predictions) =>
    [...predictions].sort((a, b) => b.probability - a.probability);

  function barList(predictions, limit) {
    const rows = sorted(predictions).slice(0, limit);
    return rows.map((p, i) => {
      const exact = String(p.probability);
      const fill = el("span", { class: "bar-fill" });
      // CSSOM, not a style attribute: allowed by the page's Content-Security-Policy.
      fill.style.width = `${Math.max(0, Math.min(1, p.probability)) * 100}%`;
      return el(
        "li",
        {
          class: i === 0 ? "bar top" : "bar",
          tabIndex: 0,
          "data-label": p.label,
          "data-probability": exact,
          "aria-label": `${p.label}: probability ${exact}`,
        },
        [
          el("span", { class: "bar-label", text: p.label }),
          el("span", { class: "bar-track", "aria-hidden": "true" }, [fill]),
          el("span", { class: "bar-value", "aria-hidden": "true", text: p.probability.toFixed(4) }),
          el("span", { class: "bar-exact", role: "tooltip", "aria-hidden": "true", text: exact }),
        ],
      );
    });
  }

  function renderAnswer(answer) {
    const predictions = answer.predictions || [];
    const top = sorted(predictions)[0];
    $("answer").replaceChildren(
      el("strong", { text: answer.label }),
      ` · probability ${top ? top.probability.toFixed(4) : "?"} · ${answer.model} version ${answer.version}`,
    );
    const limit = showAll ? predictions.length : TOP_CLASSES;
    $("bars").replaceChildren(...barList(predictions, limit));
    $("show-all").hidden = predictions.length <= TOP_CLASSES;
    $("show-all").textContent = showAll ? `Show the top ${TOP_CLASSES}` : `Show all ${predictions.length} classes`;
    renderExplanation(answer.explanation);
    $("result").hidden = false;
  }

  // The explanation's shape belongs to the API: every part that holds predictions gets
  // its own bars, side by side; anything else is shown as it came.
  function renderExplanation(explanation) {
    const box = $("explanation");
    if (!explanation || typeof explanation !== "object") {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    const parts = [];
    for (const [name, part] of Object.entries(explanation)) {
      const predictions = Array.isArray(part) ? part : part && part.predictions;
      if (Array.isArray(predictions)) {
        parts.push(
          el("section", { class: "explain-part" }, [
            el("h4", { text: name.replaceAll("_", " ") }),
            el("ol", { class: "bars compact" }, barList(predictions, 3)),
          ]),
        );
      }
    }
    if (!parts.length) parts.push(el("pre", { text: JSON.stringify(explanation, null, 2) }));
    box.replaceChildren(el("h4", { class: "sr-only", text: "Explanation by modality" }), ...parts);
    box.hidden = false;
  }

  function clearForm() {
    image = null;
    $("image").value = "";
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    $("preview").hidden = true;
    $("preview").removeAttribute("src");
    $("image-name").textContent = "No image chosen";
    $("drop").dataset.filled = "false";
    $("text").value = "";
    $("result").hidden = true;
    clearError();
  }

  // --- the model card -----------------------------------------------------------------

  const fileUrl = (name, version, file) =>
    `/v1/models/${seg(name)}/versions/${seg(String(version))}/files/${file}`;

  async function optionalJson(path) {
    try {
      return await json(path);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return null;
      throw err;
    }
  }

  // A picture as a blob: URL (an <img src> could not send the API key); null when absent.
  async function optionalPicture(path) {
    try {
      const url = URL.createObjectURL(await (await call(path)).blob());
      cardUrls.push(url);
      return url;
    } catch (err) {
      return null;
    }
  }

  function showPicture(id, url) {
    $(`${id}-figure`).dataset.present = String(url !== null);
    if (url) $(id).src = url;
    $(id).hidden = url === null;
  }

  // A class name that may wrap after its underscores on a narrow screen.
  const breakable = (text) =>
    String(text)
      .split(/(?<=_)/)
      .flatMap((part, i) => (i ? [el("wbr"), part] : [part]));

  const num = (value) =>
    el("td", { "data-value": String(value), text: typeof value === "number" ? value.toFixed(4) : "–" });

  function fact(list, term, value, key) {
    const dd = el("dd", {}, [value]);
    if (key) dd.dataset.fact = key;
    list.append(el("dt", { text: term }), dd);
  }

  function datasetSize(counts) {
    // counts: {split: {label: n}} or {split: n}
    const splits = {};
    for (const [split, value] of Object.entries(counts || {})) {
      splits[split] =
        typeof value === "number"
          ? value
          : Object.values(value || {}).reduce((a, b) => a + (Number(b) || 0), 0);
    }
    return splits;
  }

  function renderFacts(entry, meta) {
    const facts = $("facts");
    facts.replaceChildren();
    fact(facts, "Name", entry.name, "name");
    fact(facts, "Version", String(entry.version), "version");
    const labels = el("ul", { class: "labels" }, entry.labels.map((l) => el("li", { text: l })));
    fact(facts, `Labels (${entry.labels.length})`, labels, "labels");
    const created = meta ? meta.created_at : entry.created_at;
    const time = el("time", { dateTime: created, text: formatDate(created) });
    fact(facts, "Trained", time, "created_at");
    if (meta && meta.dataset) {
      const splits = datasetSize(meta.dataset.counts);
      const total = Object.values(splits).reduce((a, b) => a + b, 0);
      const parts = Object.entries(splits).map(([k, v]) => `${k} ${v}`).join(", ");
      const size = el("span", { "data-total": String(total), text: `${total} examples (${parts})` });
      fact(facts, "Dataset", size, "dataset");
      if (meta.dataset.fingerprint) {
        const fp = el("code", { title: meta.dataset.fingerprint, text: meta.dataset.fingerprint.slice(0, 16) + "…" });
        fact(facts, "Dataset fingerprint", fp, "fingerprint");
      }
    }
    if (meta && meta.image_size) fact(facts, "Image size", meta.image_size.join(" × "), "image_size");
    if (entry.device) fact(facts, "Served on", entry.device, "device");
    const framework = (meta && meta.framework) || entry.framework || {};
    const versions = Object.entries(framework).map(([k, v]) => `${k} ${v}`).join(", ");
    if (versions) fact(facts, "Framework", versions, "framework");
  }

  function formatDate(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
  }

  function renderMetrics(metrics) {
    const rows = [];
    if (metrics.test) rows.push(["test", "image and text", metrics.test]);
    for (const [name, values] of Object.entries(metrics.ablation || {})) {
      rows.push([`ablation.${name}`, name.replaceAll("_", " "), values]);
    }
    for (const [name, values] of Object.entries(metrics.baselines || {})) {
      rows.push([`baselines.${name}`, `baseline: ${name.replaceAll("_", " ")}`, values]);
    }
    const table = $("metrics");
    const head = el("tr", {}, [
      el("th", { scope: "col", text: "Model" }),
      ...METRIC_COLUMNS.map(([, title]) => el("th", { scope: "col", text: title })),
    ]);
    const body = rows.map(([key, title, values]) => {
      const cells = METRIC_COLUMNS.map(([metric]) => {
        const cell = num(values[metric]);
        cell.dataset.metric = `${key}.${metric}`;
        return cell;
      });
      return el("tr", { "data-row": key }, [el("th", { scope: "row", text: title }), ...cells]);
    });
    table.replaceChildren(el("thead", {}, [head]), el("tbody", {}, body));
    $("metrics-wrap").hidden = rows.length === 0;
  }

  function renderPerClass(evaluation) {
    const table = $("per-class");
    const perClass = evaluation && evaluation.per_class;
    if (!perClass) {
      table.replaceChildren(el("caption", { text: "Not in this artifact." }));
      return;
    }
    const columns = [["precision", "Precision"], ["recall", "Recall"], ["f1-score", "F1"], ["support", "Support"]];
    const head = el("tr", {}, [
      el("th", { scope: "col", text: "Class" }),
      ...columns.map(([, title]) => el("th", { scope: "col", text: title })),
    ]);
    const body = Object.entries(perClass).map(([label, values]) =>
      el("tr", { "data-row": label }, [
        el("th", { scope: "row" }, breakable(label)),
        ...columns.map(([key]) => {
          const value = values[key];
          const cell = key === "support" ? el("td", { "data-value": String(value), text: String(value) }) : num(value);
          cell.dataset.metric = key;
          return cell;
        }),
      ]),
    );
    table.replaceChildren(el("thead", {}, [head]), el("tbody", {}, body));
  }

  function renderTraining(training) {
    const list = $("training");
    list.replaceChildren();
    const flat = [];
    const walk = (prefix, value) => {
      for (const [key, inner] of Object.entries(value || {})) {
        if (key === "history") continue; // drawn as the training curves
        const name = prefix ? `${prefix}.${key}` : key;
        if (inner && typeof inner === "object" && !Array.isArray(inner)) walk(name, inner);
        else flat.push([name, Array.isArray(inner) ? inner.join(" × ") : String(inner)]);
      }
    };
    walk("", training);
    for (const [key, value] of flat) fact(list, key.replaceAll("_", " "), value, `training.${key}`);
    if (!flat.length) list.append(el("dd", { text: "Not in this artifact." }));
  }

  async function renderCard() {
    const request = ++cardRequest;
    const { entry, version } = selected();
    const card = $("card");
    card.dataset.state = "loading";
    for (const url of cardUrls) URL.revokeObjectURL(url);
    cardUrls = [];
    for (const id of ["confusion", "curves"]) {
      $(id).hidden = true;
      $(id).removeAttribute("src");
    }
    // All four at once: the pictures need nothing from the JSON files.
    const pictures = Promise.all([
      optionalPicture(fileUrl(entry.name, version, CARD_FILES.confusion)),
      optionalPicture(fileUrl(entry.name, version, CARD_FILES.curves)),
    ]);
    const [meta, evaluation] = await Promise.all([
      optionalJson(fileUrl(entry.name, version, CARD_FILES.metadata)),
      optionalJson(fileUrl(entry.name, version, CARD_FILES.evaluation)),
    ]).catch((err) => {
      if (err instanceof ApiError && err.status === 401) askForKey();
      return [null, null];
    });
    if (request !== cardRequest) return; // a newer selection is being drawn
    const shown = meta || entry;
    renderFacts({ ...entry, version: shown.version ?? version, labels: shown.labels || entry.labels }, meta);
    renderMetrics((meta && meta.metrics) || entry.metrics || {});
    renderPerClass(evaluation);
    renderTraining(meta && meta.training);
    $("card-note").textContent = meta
      ? "From the artifact's metadata.json and evaluation.json."
      : "From the service's model description (the artifact's files are not available).";
    const [confusion, curves] = await pictures;
    if (request !== cardRequest) return;
    showPicture("confusion", confusion);
    showPicture("curves", curves);
    card.dataset.state = "ready";
    // Time from navigation to a complete card (User Timing: for developer tools and tests).
    if (!performance.getEntriesByName("mmserve:card-ready").length) performance.mark("mmserve:card-ready");
  }

  // --- start --------------------------------------------------------------------------

  function start() {
    wireImageInputs();
    $("predict-form").addEventListener("submit", predict);
    $("clear").addEventListener("click", clearForm);
    $("retry").addEventListener("click", () => predict());
    $("show-all").addEventListener("click", () => {
      showAll = !showAll;
      if (lastAnswer) renderAnswer(lastAnswer);
    });
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      apiKey = $("api-key").value.trim();
      $("api-key").value = ""; // the only copy stays in this closure
      $("api-key").placeholder = apiKey ? "key in use (memory only)" : "";
      clearError();
      loadModels();
    });
    $("model").addEventListener("change", () => {
      fillVersionChoice();
      selectionChanged();
    });
    $("version").addEventListener("change", () => {
      $("version-label").value = "";
      selectionChanged();
    });
    $("version-label").addEventListener("change", () => {
      $("version").value = "";
      selectionChanged();
    });
    loadModels();
  }

  start();
})();
