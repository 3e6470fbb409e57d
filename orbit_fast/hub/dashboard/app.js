// The hub's dashboard: a client of the JSON API only (the same calls scripts make).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
let me = null;
let stream = null;
let detailStream = null;
let detailId = null;
const jobs = new Map();

function cookie(name) {
  const m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
  return m ? decodeURIComponent(m[1]) : "";
}

async function api(method, path, body) {
  const opts = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  if (method !== "GET") opts.headers["X-CSRF-Token"] = cookie("orbit_csrf");
  const resp = await fetch(path, opts);
  const data = resp.headers.get("content-type")?.includes("json") ? await resp.json() : null;
  if (!resp.ok) {
    const err = new Error(data?.error?.message || resp.statusText);
    err.status = resp.status;
    throw err;
  }
  return data;
}

// Binary units, as the CLI prints them; below 1 KiB (a rate of 0.3 B/s too) in bytes.
function fmtBytes(n) {
  n = Number(n) || 0;
  if (n < 1024) return Math.round(n) + " B";
  const u = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  const i = Math.min(u.length - 1, Math.floor(Math.log2(n) / 10) - 1);
  return (n / 2 ** (10 * (i + 1))).toFixed(1) + " " + u[i];
}

function fmtTime(t) {
  return t ? new Date(t * 1000).toLocaleString() : "";
}

function notice(text, ok) {
  $("#notice-text").textContent = text;
  $("#notice").className = ok ? "ok" : "";
  $("#notice").hidden = !text;
}

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k ?? "")));
  return e;
}

function show(view) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + view;
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.view === view);
  if (view !== "detail" && detailStream) { detailStream.close(); detailStream = null; detailId = null; }
  if (view === "jobs") loadJobs();
  if (view === "users") loadUsers();
}

const canOperate = () => me && (me.role === "operator" || me.role === "admin");

function stateText(job) {
  if (job.state === "retrying" && job.retry_at) {
    const s = Math.max(0, Math.round(job.retry_at - Date.now() / 1000));
    const n = job.config?.retry_attempts || 5;
    return `retrying in ${s} s (attempt ${job.retries} of ${n})`;
  }
  if (job.state === "running" && job.progress?.stalled) return `running · stalled: ${job.progress.stalled}`;
  return job.state;
}

function actionButtons(job) {
  const box = el("span");
  if (!canOperate()) return box;
  const act = (what) => async () => {
    try { await api("POST", `/api/jobs/${job.id}/${what}`); } catch (e) { alert(e.message); }
    loadJobs();
  };
  const running = ["running", "pending", "retrying"].includes(job.state);
  if (!running && job.state !== "paused") box.append(el("button", { class: "run-btn", type: "button", onclick: act("run") }, "Run"));
  if (running || job.state === "paused") box.append(el("button", { class: "cancel-btn", type: "button", onclick: act("cancel") }, "Cancel"));
  if (running) box.append(el("button", { class: "pause-btn", type: "button", onclick: act("pause") }, "Pause"));
  if (job.state === "paused") box.append(el("button", { class: "resume-btn", type: "button", onclick: act("resume") }, "Resume"));
  return box;
}

function renderRow(job) {
  const p = job.progress || {};
  const pct = p.percent ?? 0;
  const fill = el("div", { class: "fill" });
  fill.style.width = pct + "%";
  const row = el("tr", { "data-job-id": job.id },
    el("td", {}, el("a", { href: "#job/" + job.id, class: "job-link" }, job.name)),
    el("td", {}, job.mode, job.mode === "backup" ? el("span", { class: "enc " + (job.encryption === "none" ? "plain" : "sealed"),
      title: job.encryption === "none" ? "repository NOT encrypted" : "repository encrypted (" + job.encryption + ")" },
      job.encryption === "none" ? " · not encrypted" : " · encrypted") : ""),
    el("td", { class: "state " + job.state }, stateText(job)),
    el("td", {}, el("span", { class: "bar" }, fill), " ", el("span", { class: "pct" }, pct.toFixed(1) + "%")),
    el("td", { class: "rate" }, p.rate_bps ? fmtBytes(p.rate_bps) + "/s" : ""),
    el("td", { class: "schedule muted" }, job.schedule ? `${job.schedule} · next ${fmtTime(job.next_run_at)}` : ""),
    el("td", { class: "error" }, el("span", { class: "clip", title: job.last_error || "" }, job.last_error || "")),
    el("td", { class: "actions" }, actionButtons(job)));
  return row;
}

function renderJobs() {
  const body = $("#jobs-table tbody");
  body.replaceChildren(...[...jobs.values()].map(renderRow));
  $("#jobs-empty").hidden = jobs.size > 0;
}

async function loadJobs() {
  const data = await api("GET", "/api/jobs?limit=1000");
  jobs.clear();
  for (const j of data.jobs) jobs.set(j.id, j);
  renderJobs();
}

function applyEvent(kind, data) {
  const job = jobs.get(data.job_id);
  if (kind === "progress" && job) {
    job.progress = data;
    const row = document.querySelector(`tr[data-job-id="${job.id}"]`);
    if (row) row.replaceWith(renderRow(job));
  } else if (kind === "job") {
    refreshJob(data.job_id);
  }
  if (detailId === data.job_id) {
    if (data.event === "deleted") { detailId = null; location.hash = "jobs"; return; }
    // A job deleted elsewhere meanwhile answers 404: the next event or view says so.
    loadDetail(detailId, kind === "progress" ? data : null).catch(() => {});
  }
}

async function refreshJob(id) {
  try {
    const job = await api("GET", `/api/jobs/${id}`);
    jobs.set(id, job);
  } catch (e) {
    if (e.status === 404) jobs.delete(id);
  }
  renderJobs();
}

function connect() {
  if (stream) stream.close();
  stream = new EventSource("/api/events");
  stream.onopen = () => { $("#live").textContent = "live"; };
  stream.onerror = () => { $("#live").textContent = "reconnecting…"; };
  for (const kind of ["job", "progress", "warning"]) {
    stream.addEventListener(kind, (ev) => applyEvent(kind, JSON.parse(ev.data)));
  }
}

async function loadDetail(id, progress) {
  const job = progress ? { ...jobs.get(id), progress } : await api("GET", `/api/jobs/${id}`);
  if (!job || !job.name) return;
  const p = job.progress || {};
  $("#d-name").textContent = job.name;
  $("#d-state").textContent = stateText(job);
  $("#d-state").className = "state " + job.state;
  $("#d-paths").textContent = `${job.mode}: ${job.source} → ${job.destination}` +
    (job.mode === "backup" ? (job.encryption === "none" ? " (repository NOT encrypted)" : ` (repository encrypted, ${job.encryption})`) : "");
  $("#d-fill").style.width = (p.percent ?? 0) + "%";
  $("#d-stats").textContent = job.state === "created" && !p.files_total ? "Not run yet." :
    p.note ? `${p.note}` + (p.elapsed_s ? ` (checked in ${p.elapsed_s.toFixed(1)} s)` : "") :
    `${(p.percent ?? 0).toFixed(1)}% · ${p.files_done ?? 0}/${p.files_total ?? 0} files · ` +
    `${fmtBytes(p.bytes_done)} of ${fmtBytes(p.bytes_total)}` + (p.rate_bps ? ` · ${fmtBytes(p.rate_bps)}/s` : "") +
    (p.eta_s ? ` · ETA ${Math.round(p.eta_s)} s` : "");
  $("#d-schedule").textContent = job.schedule ? `Schedule ${job.schedule}; next run ${fmtTime(job.next_run_at)}` : "No schedule: runs when asked.";
  $("#d-error").textContent = job.last_error || "";
  $("#d-warnings").replaceChildren(...(job.warnings || []).map((w) => el("li", {}, w)));
  const actions = actionButtons(job);
  if (canOperate() && !["running", "pending", "retrying", "paused"].includes(job.state)) {
    actions.append(el("button", { type: "button", class: "edit-btn", onclick: () => editJob(job) }, "Edit"),
      el("button", { type: "button", class: "delete-btn", onclick: () => deleteJob(job) }, "Delete"));
  }
  $("#d-actions").replaceChildren(actions);
  showRate(job, progress);
  if (progress) return;
  const runs = (await api("GET", `/api/jobs/${id}/runs`)).runs;
  $("#runs-table tbody").replaceChildren(...runs.map((r) => el("tr", {},
    el("td", {}, r.id), el("td", {}, r.trigger), el("td", {}, new Date(r.started_at * 1000).toLocaleString()),
    el("td", {}, r.finished_at ? (r.finished_at - r.started_at).toFixed(1) + " s" : "…"),
    el("td", { class: "state " + r.state }, r.state),
    el("td", {}, r.stats ? (r.stats.files_copied ?? r.stats.files_new ?? "") : ""),
    el("td", {}, r.stats ? fmtBytes(r.stats.bytes_copied ?? r.stats.bytes_read) : ""),
    el("td", { class: "error" }, r.error || ""))));
  showHistory(runs);
  $("#d-snapshots").hidden = job.mode !== "backup";
  if (job.mode === "backup") loadSnapshots(job);
  const last = runs.find((r) => r.finished_at);
  const errs = last ? (await api("GET", `/api/jobs/${id}/runs/${last.id}/errors`)).errors : [];
  $("#d-file-errors").replaceChildren(...errs.map((e) => el("li", {}, `${e.path}: ${e.message}`)));
}

let editing = null; // the job the form changes (PATCH), or null: the form creates one

function editJob(job) {
  editing = job;
  const c = job.config || {};
  const set = (id, v) => { $(id).value = v ?? ""; };
  set("#f-name", job.name); set("#f-source", job.source); set("#f-destination", job.destination);
  set("#f-mode", job.mode); set("#f-concurrency", c.concurrency); set("#f-chunk", c.chunk_size_mb);
  set("#f-retries", c.retry_attempts); set("#f-compression", c.compression);
  set("#f-password-file", c.password_file); set("#f-schedule", job.schedule);
  set("#f-exclude", (c.exclude || []).join("\n")); set("#f-bwlimit", c.bwlimit);
  set("#f-max-delete", c.max_delete); set("#f-backup-dir", c.backup_dir);
  $("#form-title").textContent = `Edit job ${job.id}`;
  $("#create-btn").textContent = "Save changes";
  $("#create-result").textContent = "";
  show("create");
}

async function deleteJob(job) {
  if (!confirm(`Delete job "${job.name}" and its run history? The files it copied stay.`)) return;
  detailId = null; // its events stop being this page's
  try {
    await api("DELETE", `/api/jobs/${job.id}`);
    notice(`Deleted job ${job.id} (${job.name}).`, true);
    location.hash = "jobs";
  } catch (e) {
    $("#d-error").textContent = e.message;
  }
}

function resetForm() {
  editing = null;
  $("#create-form").reset();
  $("#form-title").textContent = "Create Job";
  $("#create-btn").textContent = "Launch Orbit Job";
}

// ---- charts (uPlot, vendored) --------------------------------------------------------------

const MIB = 1024 * 1024;
let rateChart = null;
let rateData = [[], []]; // seconds into the pass, MiB/s: the open job's run, from its events
let historyChart = null;

function chartWidth(id) {
  return Math.max(320, ($(id).clientWidth || 900) - 2);
}

function showRate(job, p) {
  if (job.state === "running" && p) {
    rateData[0].push(p.elapsed_s ?? rateData[0].length);
    rateData[1].push((p.rate_bps || 0) / MIB);
    if (rateData[0].length > 2400) rateData = rateData.map((a) => a.slice(-2000));
  }
  $("#d-rate-empty").hidden = rateData[0].length > 1;
  if (rateData[0].length < 2) return;
  if (!rateChart) {
    rateChart = new uPlot({
      width: chartWidth("#d-rate-chart"), height: 180,
      series: [{ label: "s" }, { label: "MiB/s", stroke: "#3b82f6", fill: "rgba(59,130,246,.12)", width: 2 }],
      axes: [{ label: "seconds into the pass" }, { label: "MiB/s" }],
      scales: { x: { time: false }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    }, rateData, $("#d-rate-chart"));
  } else {
    rateChart.setData(rateData);
  }
}

function showHistory(runs) {
  const done = runs.filter((r) => r.finished_at).reverse(); // oldest first
  if (historyChart) { historyChart.destroy(); historyChart = null; }
  if (done.length < 1) return;
  // One bar per run (its number on the x axis): MiB moved; its duration as a line of points.
  const data = [
    done.map((r) => r.id),
    done.map((r) => ((r.stats?.bytes_copied ?? r.stats?.bytes_read) || 0) / MIB),
    done.map((r) => r.finished_at - r.started_at),
  ];
  historyChart = new uPlot({
    width: chartWidth("#d-history-chart"), height: 200,
    series: [{ label: "run" },
      { label: "MiB moved", scale: "mib", stroke: "#15803d", fill: "rgba(21,128,61,.35)", width: 1,
        paths: uPlot.paths.bars({ size: [0.5, 40] }), points: { show: false } },
      { label: "duration (s)", scale: "s", stroke: "#b45309", width: 2, points: { size: 8 } }],
    axes: [{ label: "run", incrs: [1, 2, 5, 10, 20, 50, 100] }, { scale: "mib", label: "MiB" },
           { scale: "s", side: 1, label: "seconds", grid: { show: false } }],
    scales: { x: { time: false, range: (u, min, max) => [min - 0.6, max + 0.6] },
              mib: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] },
              s: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] } },
  }, data, $("#d-history-chart"));
}

// ---- snapshots: browse one directory at a time, restore a chosen path --------------------

let browsing = null; // {job, snap, path, what}

async function loadSnapshots(job) {
  $("#snaps-error").textContent = "";
  try {
    const snaps = (await api("GET", `/api/jobs/${job.id}/snapshots`)).snapshots;
    $("#snaps-table tbody").replaceChildren(...snaps.map((s) => el("tr", { "data-snap": s.id },
      el("td", {}, el("code", {}, s.id.slice(0, 8))), el("td", {}, fmtTime(s.time)),
      el("td", {}, s.files), el("td", {}, fmtBytes(s.bytes)), el("td", {}, fmtBytes(s.bytes_added)),
      el("td", {}, el("button", { type: "button", class: "browse-btn", onclick: () => browse(job, s.id, "") }, "Browse")))));
  } catch (e) {
    $("#snaps-error").textContent = e.message;
  }
}

async function browse(job, snap, path) {
  browsing = { job, snap, path, what: path || "/" };
  $("#browser").hidden = false;
  $("#b-snap").textContent = snap.slice(0, 8);
  $("#b-path").textContent = "/" + path;
  $("#restore-status").textContent = "";
  let data;
  try {
    data = await api("GET", `/api/jobs/${job.id}/snapshots/${snap}/tree?path=${encodeURIComponent(path)}`);
  } catch (e) {
    $("#restore-status").textContent = e.message;
    return;
  }
  const rows = [];
  if (path) {
    const up = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : "";
    rows.push(el("tr", {}, el("td", {}, el("a", { href: "#", class: "up-link", onclick: (ev) => { ev.preventDefault(); browse(job, snap, up); } }, "..")),
      el("td", {}), el("td", {}), el("td", {})));
  }
  for (const e of data.entries) {
    const name = e.path.slice(e.path.lastIndexOf("/") + 1);
    const label = e.kind === "d" ? el("a", { href: "#", class: "dir-link", onclick: (ev) => { ev.preventDefault(); browse(job, snap, e.path); } }, name + "/")
      : el("span", {}, e.kind === "l" ? `${name} → ${e.target}` : name);
    rows.push(el("tr", { "data-path": e.path }, el("td", {}, label), el("td", {}, e.kind === "f" ? fmtBytes(e.size) : ""),
      el("td", {}, fmtTime(e.mtime_ns / 1e9)),
      el("td", {}, canOperate() ? el("button", { type: "button", class: "pick-btn", onclick: () => pick(e.path) }, "Restore…") : "")));
  }
  $("#browse-table tbody").replaceChildren(...rows);
  $("#b-more").hidden = !data.truncated;
  pick(path, true);
}

function pick(path, quiet) {
  browsing.what = path;
  $("#r-what").textContent = "/" + path;
  $("#restore-form").hidden = !canOperate();
  if (!quiet) $("#r-target").focus();
}

async function restoreChosen(ev) {
  ev.preventDefault();
  const { job, snap, what } = browsing;
  $("#restore-status").className = "";
  try {
    let r = await api("POST", `/api/jobs/${job.id}/restore`, { snapshot: snap, paths: what ? [what] : [], target: $("#r-target").value });
    $("#restore-status").textContent = `Restoring /${what} into ${r.target}…`;
    while (r.state === "running") {
      await new Promise((ok) => setTimeout(ok, 700));
      r = await api("GET", `/api/restores/${r.id}`);
    }
    $("#restore-status").className = r.state === "completed" ? "" : "error";
    $("#restore-status").textContent = r.state === "completed"
      ? `Restored ${r.files} file(s), ${fmtBytes(r.bytes)}, into ${r.target}.` : `Restore failed: ${r.error}`;
  } catch (e) {
    $("#restore-status").className = "error";
    $("#restore-status").textContent = e.message;
  }
}

function openDetail(id) {
  $("#browser").hidden = true;
  if (rateChart) { rateChart.destroy(); rateChart = null; }
  rateData = [[], []];
  detailId = id;
  show("detail");
  loadDetail(id);
}

async function loadUsers() {
  const users = (await api("GET", "/api/users")).users;
  $("#users-table tbody").replaceChildren(...users.map((u) => el("tr", {},
    el("td", {}, u.username), el("td", {}, u.role), el("td", {}, new Date(u.created_at * 1000).toLocaleString()))));
}

function route() {
  const m = location.hash.match(/^#job\/(\d+)$/);
  if (m) openDetail(Number(m[1]));
  else show(location.hash.slice(1) || "jobs");
}

async function start() {
  try {
    me = await api("GET", "/api/auth/me");
  } catch (e) {
    me = null;
  }
  $("#nav").hidden = !me;
  $("#who").hidden = !me;
  if (!me) {
    show("login");
    return;
  }
  $("#whoami").textContent = `${me.username} (${me.role})`;
  $("#tab-create").hidden = !canOperate();
  $("#tab-users").hidden = me.role !== "admin";
  connect();
  route();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const t of document.querySelectorAll(".tab")) t.addEventListener("click", () => {
    if (t.dataset.view === "create") resetForm();
    location.hash = t.dataset.view;
  });
  $("#notice-close").addEventListener("click", () => notice(""));
  $("#restore-form").addEventListener("submit", restoreChosen);
  window.addEventListener("hashchange", () => me && route());
  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("#login-error").textContent = "";
    try {
      await api("POST", "/api/auth/login", { username: $("#username").value, password: $("#password").value });
      $("#password").value = "";
      location.hash = "jobs";
      await start();
    } catch (e) {
      $("#login-error").textContent = e.message;
    }
  });
  $("#logout").addEventListener("click", async () => {
    try { await api("POST", "/api/auth/logout"); } finally { if (stream) stream.close(); location.hash = ""; start(); }
  });
  $("#create-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const num = (id) => ($(id).value === "" ? undefined : Number($(id).value));
    // An edit keeps the config fields this form does not show (set through the API).
    const config = { ...(editing?.config || {}) };
    for (const [k, id] of [["concurrency", "#f-concurrency"], ["chunk_size_mb", "#f-chunk"], ["retry_attempts", "#f-retries"]]) {
      if (num(id) !== undefined) config[k] = num(id); else delete config[k];
    }
    for (const [k, id] of [["compression", "#f-compression"], ["password_file", "#f-password-file"],
                           ["bwlimit", "#f-bwlimit"], ["max_delete", "#f-max-delete"], ["backup_dir", "#f-backup-dir"]]) {
      if ($(id).value.trim()) config[k] = $(id).value.trim(); else delete config[k];
    }
    const exclude = $("#f-exclude").value.split("\n").map((x) => x.trim()).filter(Boolean);
    if (exclude.length) config.exclude = exclude; else delete config.exclude;
    const body = { name: $("#f-name").value, source: $("#f-source").value, destination: $("#f-destination").value,
                   mode: $("#f-mode").value, config };
    if ($("#f-schedule").value || editing) body.schedule = $("#f-schedule").value;
    try {
      const job = editing ? await api("PATCH", `/api/jobs/${editing.id}`, body) : await api("POST", "/api/jobs", body);
      const verb = editing ? "Saved" : "Created";
      // Shown above the jobs list, where the form goes: warnings are not lost with the form.
      notice(`${verb} job ${job.id} (${job.name}).` + (job.warnings.length ? " Warnings: " + job.warnings.join("; ") : ""),
             !job.warnings.length);
      resetForm();
      location.hash = "jobs";
    } catch (e) {
      $("#create-result").className = "error";
      $("#create-result").textContent = e.message;
    }
  });
  $("#user-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("POST", "/api/users", { username: $("#u-name").value, password: $("#u-password").value, role: $("#u-role").value });
      $("#user-result").textContent = "Added.";
      ev.target.reset();
      loadUsers();
    } catch (e) {
      $("#user-result").textContent = e.message;
    }
  });
  // "retrying in N s" counts down between events.
  setInterval(() => {
    if ([...jobs.values()].some((j) => j.state === "retrying")) renderJobs();
  }, 1000);
  start();
});
