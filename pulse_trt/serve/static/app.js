// pulse-trt web page: submit a job (POST /v1/jobs), follow its server-sent events, show the
// result beside the LR input and its bicubic upscale. Plain JS, no build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, job: null, source: null, series: [], steps: 0, eps: null, ended: false };

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("status").textContent = "";
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function loadInfo() {
  try {
    const r = await fetch("/v1/info");
    const info = await r.json();
    state.eps = info.defaults.eps;
    $("engine").textContent = `${info.generator.name}: ${info.lr_size}x${info.lr_size} faces to ` +
      `${info.resolution}x${info.resolution}, ${info.backend}, ${info.slots} slots` +
      (info.ready ? "" : " (the engine is still starting)");
    $("steps").value = info.defaults.steps;
    $("steps").max = info.limits.max_steps;
    $("restarts").max = info.limits.max_restarts;
    $("restarts").value = info.defaults.restarts;
    $("early_stop").checked = !!info.defaults.early_stop;
    $("seed").value = info.defaults.seed;
  } catch (e) {
    $("engine").textContent = "PULSE face super-resolution (engine description unavailable)";
  }
}

function choose(file) {
  if (!file) return;
  state.file = file;
  const img = $("chosen");
  img.src = URL.createObjectURL(file);
  img.hidden = false;
  $("droptext").textContent = `${file.name} (${file.size} bytes)`;
  clearError();
}

function setupDrop() {
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
  $("file").addEventListener("change", () => choose($("file").files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    choose(e.dataTransfer.files[0]);
  });
}

// L2 per step on a log axis, one line per face, the eps line dashed.
function drawCurve() {
  const c = $("curve");
  const g = c.getContext("2d");
  const W = c.width, H = c.height, left = 56, right = 10, top = 12, bottom = 28;
  g.clearRect(0, 0, W, H);
  const values = state.series.flat().filter((v) => v > 0 && Number.isFinite(v));
  c.dataset.points = String(state.series.reduce((n, s) => n + s.filter((v) => v !== undefined).length, 0));
  if (!values.length) return;
  const eps = state.eps || Math.min(...values);
  let lo = Math.log10(Math.min(eps, ...values)) - 0.1, hi = Math.log10(Math.max(...values)) + 0.1;
  if (hi - lo < 0.5) hi = lo + 0.5;
  const steps = Math.max(state.steps, ...state.series.map((s) => s.length), 2);
  const x = (i) => left + (W - left - right) * (i / (steps - 1));
  const y = (v) => top + (H - top - bottom) * (1 - (Math.log10(v) - lo) / (hi - lo));
  g.strokeStyle = "#999"; g.lineWidth = 1;
  g.strokeRect(left, top, W - left - right, H - top - bottom);
  g.fillStyle = "#555"; g.font = "11px system-ui, sans-serif";
  for (let e = Math.ceil(lo); e <= Math.floor(hi); e++) {
    g.fillText(`1e${e}`, 8, y(10 ** e) + 4);
    g.beginPath(); g.strokeStyle = "#eee"; g.moveTo(left, y(10 ** e)); g.lineTo(W - right, y(10 ** e)); g.stroke();
  }
  g.fillText("step", W / 2, H - 8);
  g.fillText("L2 (log)", left + 6, top + 14);
  g.setLineDash([5, 4]); g.strokeStyle = "#c33";
  g.beginPath(); g.moveTo(left, y(eps)); g.lineTo(W - right, y(eps)); g.stroke();
  g.setLineDash([]);
  g.fillStyle = "#c33"; g.fillText(`eps ${eps}`, W - right - 70, y(eps) - 4);
  const colours = ["#2f6fed", "#0a7a2f", "#a15c00", "#8e24aa", "#00838f"];
  state.series.forEach((s, f) => {
    g.strokeStyle = colours[f % colours.length]; g.lineWidth = 1.6;
    g.beginPath();
    let started = false;
    s.forEach((v, i) => {
      if (!(v > 0)) return;
      if (!started) { g.moveTo(x(i), y(v)); started = true; } else g.lineTo(x(i), y(v));
    });
    g.stroke();
  });
}

function figure(src, caption, pixelated) {
  const f = document.createElement("figure");
  const img = document.createElement("img");
  img.src = src; img.alt = caption;
  if (pixelated) img.className = "pixelated";
  const cap = document.createElement("figcaption");
  cap.textContent = caption;
  f.append(img, cap);
  return f;
}

function showResults(job) {
  const box = $("results");
  box.innerHTML = "";
  for (const face of job.faces) {
    const base = `/v1/jobs/${job.id}/image?face=${face.index}`;
    const rec = face.record;
    const div = document.createElement("div");
    div.className = "face";
    div.dataset.face = String(face.index);
    const row = document.createElement("div");
    row.className = "row";
    const result = figure(`${base}&kind=pulse`, `PULSE ${rec.hr_size}x${rec.hr_size}`, false);
    result.querySelector("img").classList.add("result");
    row.append(figure(`${base}&kind=input`, `LR input ${rec.lr_size}x${rec.lr_size}`, true),
               figure(`${base}&kind=bicubic`, "bicubic upscale", false), result);
    if (face.box) row.append(figure(`${base}&kind=aligned`, "aligned crop (truth)", false));
    const info = document.createElement("div");
    info.className = "record";
    const verdict = rec.success ? `<span class="ok">downscales within eps</span>` : `<span class="miss">missed eps</span>`;
    info.innerHTML = `${verdict}: min L2 ${rec.min_l2.toPrecision(4)} (eps ${rec.eps}), best step ${rec.best_step} of ` +
      `${rec.steps}, start ${rec.restart}; `;
    const a = document.createElement("a");
    a.href = `${base}&kind=pulse`;
    a.download = `${rec.input.replace(/\.[^.]*$/, "")}_pulse.png`;
    a.textContent = "download PNG";
    a.className = "download";
    info.append(a);
    div.append(row, info);
    box.append(div);
  }
}

function finish(job) {
  state.ended = true;
  if (state.source) state.source.close();
  $("go").disabled = false;
  $("cancel").hidden = true;
  if (job.state === "done") {
    const ok = job.faces.filter((f) => f.record && f.record.success).length;
    $("status").textContent = `done: ${ok} of ${job.faces.length} face(s) downscale within eps`;
    showResults(job);
  } else {
    showError(`${job.state}: ${job.error || "no result"}`);
  }
}

function follow(id, faces) {
  state.job = id;
  state.series = Array.from({ length: faces }, () => []);
  state.ended = false;
  $("live").hidden = false;
  const es = new EventSource(`/v1/jobs/${id}/events`);
  state.source = es;
  es.addEventListener("progress", (e) => {
    const d = JSON.parse(e.data);
    state.steps = Math.max(state.steps, d.steps);
    const s = state.series[d.face];
    d.l2.forEach((v, i) => { s[d.first_step - 1 + i] = v; });
    drawCurve();
    if (d.state === "running" || d.state === "queued") {
      const l2 = d.l2.length ? d.l2[d.l2.length - 1] : null;
      $("status").textContent = `face ${d.face}: step ${d.step} of ${d.steps}` + (l2 !== null ? `, L2 ${l2.toPrecision(4)}` : "");
    }
  });
  es.addEventListener("preview", (e) => {
    const d = JSON.parse(e.data);
    $("current").src = `data:image/png;base64,${d.png}`;
    $("currentcap").textContent = `best face so far (face ${d.face}, step ${d.step})`;
  });
  es.addEventListener("end", (e) => finish(JSON.parse(e.data)));
  es.onerror = async () => {
    if (state.ended) return;
    // The stream broke (server gone or restarted): ask once for the job's state.
    try {
      const r = await fetch(`/v1/jobs/${id}`);
      const body = await r.json();
      if (!r.ok) { es.close(); showError(body.error); $("go").disabled = false; }
      else if (["done", "failed", "cancelled"].includes(body.state)) finish(body);
    } catch (err) {
      es.close(); showError("lost the connection to the server"); $("go").disabled = false;
    }
  };
}

async function submit() {
  clearError();
  $("results").innerHTML = "";
  if (!state.file) { showError("choose an image first"); return; }
  const q = new URLSearchParams({ steps: $("steps").value, restarts: $("restarts").value, seed: $("seed").value });
  if ($("align").checked) q.set("align", "true");
  if ($("early_stop").checked) q.set("early_stop", "true");
  const form = new FormData();
  form.append("file", state.file, state.file.name);
  $("go").disabled = true;
  $("status").textContent = "uploading";
  state.steps = Number($("steps").value) || 0;
  try {
    const r = await fetch(`/v1/jobs?${q}`, { method: "POST", body: form });
    const body = await r.json();
    if (!r.ok) { showError(body.error || `HTTP ${r.status}`); $("go").disabled = false; return; }
    $("status").textContent = "queued";
    $("cancel").hidden = false;
    follow(body.id, body.faces_total);
  } catch (err) {
    showError(`could not reach the server: ${err}`);
    $("go").disabled = false;
  }
}

async function cancel() {
  if (!state.job) return;
  await fetch(`/v1/jobs/${state.job}`, { method: "DELETE" });
}

setupDrop();
$("go").addEventListener("click", submit);
$("cancel").addEventListener("click", cancel);
loadInfo();
