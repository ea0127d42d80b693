/* facetrail web UI: every page's data comes from the /v1 routes (the same ones API clients use).
   Changes carry the page's CSRF token; text is always set with textContent (never parsed as HTML). */
"use strict";
const $ = (s, el = document) => el.querySelector(s);
const $$ = (s, el = document) => Array.from(el.querySelectorAll(s));
const CSRF = ($('meta[name="csrf-token"]') || {}).content || "";

async function api(method, path, body) {
  const opt = { method, credentials: "same-origin", headers: { "Accept": "application/json", "X-CSRF-Token": CSRF } };
  if (body instanceof FormData) opt.body = body;
  else if (body !== undefined) { opt.body = JSON.stringify(body); opt.headers["Content-Type"] = "application/json"; }
  const r = await fetch(path, opt);
  if (r.status === 401) {
    location.href = "/ui/login?next=" + encodeURIComponent(location.pathname + location.search);
    throw new Error("log in first");
  }
  let data = null;
  if (r.status !== 204) { const t = await r.text(); try { data = t ? JSON.parse(t) : null; } catch (e) { data = t; } }
  if (!r.ok) {
    const msg = data && data.error ? data.error.message : (data && typeof data.detail === "string" ? data.detail : "");
    const err = new Error(msg || "HTTP " + r.status);
    err.status = r.status; err.data = data; throw err;
  }
  return data;
}

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of kids.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

const pad = (n) => String(n).padStart(2, "0");
function fmtTime(t) {
  if (t === null || t === undefined || t === "") return "—";
  const d = new Date(t * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function fmtDur(s) {
  if (!(s >= 0)) return "—";
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m ${pad(Math.round(s % 60))}s` : `${Math.floor(m / 60)}h ${pad(m % 60)}m`;
}
const fmtScore = (x) => (x === null || x === undefined ? "—" : Number(x).toFixed(2));
const enc = encodeURIComponent;

function show(el, text, cls) {
  if (!el) return;
  el.hidden = !text; el.textContent = text || "";
  if (cls !== undefined) el.className = cls;
}
let toastTimer = 0;
function toast(text, bad) {
  const t = $("#toast");
  t.textContent = text; t.className = bad ? "bad" : ""; t.hidden = false;
  clearTimeout(toastTimer); toastTimer = setTimeout(() => { t.hidden = true; }, 5000);
}
function confirmBox(text, okLabel) {
  const d = $("#confirm");
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = okLabel || "Delete";
  d.returnValue = "";
  d.showModal();
  return new Promise((resolve) => d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true }));
}
async function fillNames(list) {
  try {
    const people = await api("GET", "/v1/gallery");
    $$(`datalist#${list}`).forEach((dl) => dl.replaceChildren(...people.map((p) => h("option", { value: p.name }))));
    return people;
  } catch (e) { return []; }
}
const img = (src, alt, cls) => h("img", { src, alt, class: cls, loading: "lazy", decoding: "async" });
const placeholder = (cls) => h("div", { class: (cls || "") + " noimg", "aria-hidden": "true" });

/* ---- events ------------------------------------------------------------------------------------------ */
function eventRow(ev) {
  const name = ev.identity || "unknown";
  return h("li", { class: "ev" + (ev.identity ? "" : " unknown"), "data-id": ev.id },
    h("a", { href: `/ui/events/${ev.id}` },
      ev.snapshot_id ? img(`/v1/events/${ev.id}/snapshot`, `snapshot of ${name}`, "thumb") : placeholder("thumb"),
      h("span", { class: "who" }, h("b", { class: "name", text: name }), h("span", { class: "type", text: ev.type.replace("identity.", "").replace("track.", "track ") })),
      h("span", { class: "cam", text: ev.camera }),
      h("time", { class: "when", datetime: new Date(ev.last_seen * 1000).toISOString(), text: fmtTime(ev.last_seen) }),
      h("span", { class: "dur", title: "duration", text: fmtDur(ev.last_seen - ev.first_seen) }),
      h("span", { class: "score", title: "score", text: fmtScore(ev.score) })));
}

function eventsPage() {
  const q = new URLSearchParams(location.search);
  const form = $("#filters");
  for (const k of ["camera", "person", "since", "until", "type"]) if (q.get(k)) form.elements[k].value = q.get(k);
  form.elements.unknown.checked = q.get("unknown") === "1";
  /* empty fields stay out of the URL; re-enabled when the page comes back from the back/forward cache */
  form.addEventListener("submit", () => { for (const el of Array.from(form.elements)) if (el.name && el.type !== "checkbox" && !el.value) el.disabled = true; });
  window.addEventListener("pageshow", () => { for (const el of Array.from(form.elements)) el.disabled = false; });
  fillNames("people-names");
  api("GET", "/v1/cameras").then((cams) => $("#camera-names").replaceChildren(...cams.map((c) => h("option", { value: c.name })))).catch(() => {});

  const filt = new URLSearchParams();
  if (q.get("camera")) filt.set("camera", q.get("camera"));
  if (q.get("person")) filt.set("identity", q.get("person"));
  if (q.get("unknown") === "1") filt.set("unknown", "true");
  if (q.get("type")) filt.set("type", q.get("type"));
  const list = $("#events"), older = $("#older"), seen = new Set();
  let cursor = null;

  async function load() {
    const p = new URLSearchParams(filt);
    for (const k of ["since", "until"]) if (q.get(k)) p.set(k, q.get(k));
    p.set("limit", "50"); p.set("order", "desc");
    if (cursor) p.set("cursor", cursor);
    older.disabled = true;
    try {
      const page = await api("GET", "/v1/events?" + p);
      for (const ev of page.events) if (!seen.has(ev.id)) { seen.add(ev.id); list.append(eventRow(ev)); }
      cursor = page.next_cursor;
      older.hidden = !cursor;
      $("#events-empty").hidden = list.children.length > 0;
      show($("#events-error"), "");
    } catch (e) { show($("#events-error"), "Could not load events: " + e.message); }
    older.disabled = false;
  }
  older.addEventListener("click", load);
  load();

  const live = $("#live");
  if (q.get("until") || !window.EventSource) { live.hidden = true; return; }
  const es = new EventSource("/v1/events/stream?" + filt, { withCredentials: true });
  const onEvent = (m) => {
    let ev; try { ev = JSON.parse(m.data); } catch (e) { return; }
    if (seen.has(ev.id)) return;
    seen.add(ev.id);
    const row = eventRow(ev); row.classList.add("new");
    list.prepend(row);
    $("#events-empty").hidden = true;
  };
  for (const t of ["track.started", "identity.matched", "track.ended", "track.named"]) es.addEventListener(t, onEvent);
  es.onopen = () => { live.className = "badge on"; live.textContent = "live"; };
  es.onerror = () => { live.className = "badge off"; live.textContent = "reconnecting"; };
}

async function eventPage() {
  const id = $("#event").dataset.id;
  let ev;
  try { ev = await api("GET", `/v1/events/${id}`); } catch (e) { show($("#event-name"), e.message); return; }
  const name = ev.identity || "unknown";
  $("#event-name").textContent = name;
  document.title = `${name} · ${ev.camera} · facetrail`;
  if (ev.snapshot_id) { const s = $("#event-snapshot"); s.src = `/v1/events/${ev.id}/snapshot`; s.alt = `snapshot of ${name}`; s.hidden = false; }
  const facts = [["type", ev.type], ["camera", ev.camera], ["first seen", fmtTime(ev.first_seen)], ["last seen", fmtTime(ev.last_seen)],
    ["duration", fmtDur(ev.last_seen - ev.first_seen)], ["score", fmtScore(ev.score)], ["frames", ev.frames], ["track", ev.track_id]];
  $("#event-facts").replaceChildren(...facts.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: String(v) })]));
  const votes = Object.entries(ev.votes || {}).sort((a, b) => b[1] - a[1]);
  $("#event-votes tbody").replaceChildren(...votes.map(([n, w]) => h("tr", {}, h("td", { text: n }), h("td", { class: "num", text: Number(w).toFixed(2) }))));
  $("#event-novotes").hidden = votes.length > 0;
  $("#event-votes").hidden = votes.length === 0;
  const btn = $("#wrong");
  btn.hidden = !ev.identity;
  btn.onclick = async () => {
    if (!(await confirmBox(`Mark this track as NOT ${ev.identity}? Its events become unknown and the faces go to the unknown visitors.`, "Wrong person"))) return;
    btn.disabled = true;
    try {
      const res = await api("POST", `/v1/events/${ev.id}/wrong`);
      show($("#event-msg"), `Marked: not ${res.identity}. The track is unknown now` +
        (res.cluster ? `; its faces joined unknown cluster ${res.cluster}.` : "."), "ok");
      $("#event-name").textContent = "unknown";
      btn.hidden = true;
      /* the track's other events now read unknown; a rejected match itself is withdrawn (404 from now on) */
      api("GET", `/v1/events/${ev.id}`).then(() => eventPage()).catch(() => {
        $("#event-votes").hidden = true;
        show($("#event-novotes"), "This match was withdrawn.");
      });
    } catch (e) { show($("#event-msg"), "Refused: " + e.message, "error"); }
    btn.disabled = false;
  };
}

/* ---- people -------------------------------------------------------------------------------------------- */
async function personCard(p) {
  const card = h("section", { class: "card person", "data-name": p.name, "data-id": p.id });
  const thumbs = h("div", { class: "faces" });
  const recent = h("ul", { class: "recent" });
  const renameForm = h("form", { class: "inline rename" },
    h("input", { name: "name", value: p.name, required: true, maxlength: "200", "aria-label": "new name" }),
    h("button", { type: "submit", class: "ghost", text: "Rename" }));
  renameForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const to = renameForm.elements.name.value.trim();
    if (!to || to === p.name) return;
    try { await api("PATCH", `/v1/gallery/${enc(p.id)}`, { name: to }); toast(`Renamed ${p.name} to ${to}`); peoplePage(); }
    catch (err) { toast("Rename refused: " + err.message, true); }
  });
  const del = h("button", { class: "danger", text: "Delete" });
  del.addEventListener("click", async () => {
    const msg = `Delete ${p.name}? This erases their ${p.templates} face template(s) and thumbnails from the gallery, ` +
      `and every event and snapshot in which they were recognised. It cannot be undone.`;
    if (!(await confirmBox(msg, `Delete ${p.name}`))) return;
    try { const r = await api("DELETE", `/v1/gallery/${enc(p.id)}`); toast(`Deleted ${r.name} (${r.templates} templates)`); peoplePage(); }
    catch (err) { toast("Delete refused: " + err.message, true); }
  });
  card.append(h("div", { class: "row spread" }, h("h2", { text: p.name }), h("span", { class: "muted", text: `${p.templates} template(s)` })),
    thumbs, h("h3", { text: "Recent events" }), recent,
    h("div", { class: "row" }, h("a", { href: `/ui/events?person=${enc(p.name)}`, text: "All events →" })),
    h("div", { class: "row spread" }, renameForm, del));
  api("GET", `/v1/gallery/${enc(p.id)}`).then((d) => thumbs.replaceChildren(...d.template_list.map((t) =>
    img(`/v1/gallery/${enc(p.id)}/templates/${t.id}/thumbnail`, `${p.name} template ${t.id}`, "face")))).catch(() => {});
  api("GET", `/v1/events?identity_id=${enc(p.id)}&limit=5`).then((pg) => {
    recent.replaceChildren(...pg.events.map((ev) => h("li", {}, h("a", { href: `/ui/events/${ev.id}`, text: `${fmtTime(ev.last_seen)} · ${ev.camera} · ${ev.type}` }))));
    if (!pg.events.length) recent.append(h("li", { class: "muted", text: "none yet" }));
  }).catch(() => {});
  return card;
}

async function peoplePage() {
  let people;
  try { people = await fillNames("people-names"); people = await api("GET", "/v1/gallery"); }
  catch (e) { show($("#people-error"), "Could not load people: " + e.message); return; }
  const cards = await Promise.all(people.map(personCard));
  $("#people").replaceChildren(...cards);
  $("#people-empty").hidden = people.length > 0;
}

function enrollForm() {
  const f = $("#enroll"), out = $("#enroll-result");
  f.addEventListener("submit", async (e) => {
    e.preventDefault();
    const fd = new FormData(f);
    if (!f.elements.skip_bad.checked) fd.delete("skip_bad");
    const btn = f.querySelector("button"); btn.disabled = true; btn.textContent = "Enrolling…";
    try {
      const r = await api("POST", "/v1/gallery", fd);
      const kids = [h("p", { text: `Enrolled ${r.name}: ${r.added} template(s) added from ${r.images} photo(s); ${r.templates} in all.` })];
      if (r.refused.length) kids.push(h("p", { text: "Refused:" }), h("ul", { class: "refused" }, r.refused.map((x) => h("li", { text: x }))));
      out.replaceChildren(...kids); out.className = "ok"; out.hidden = false;
      f.reset(); peoplePage();
    } catch (err) {
      out.replaceChildren(h("p", { class: "refusal", text: "Refused: " + err.message }));
      out.className = "error"; out.hidden = false;
    }
    btn.disabled = false; btn.textContent = "Enroll";
  });
}

/* ---- unknowns ----------------------------------------------------------------------------------------- */
function clusterCard(c, reload) {
  const card = h("section", { class: "card cluster" + (c.ignored ? " ignored" : ""), "data-id": c.id });
  const pick = h("input", { type: "checkbox", class: "pick", "aria-label": `select ${c.id} for merging` });
  pick.addEventListener("change", updateMerge);
  const faces = h("div", { class: "faces" }, (c.faces || []).map((f) =>
    img(`/v1/unknowns/faces/${enc(f.id)}/thumbnail`, `face ${f.id} quality ${fmtScore(f.quality)}`, "face")));
  const nameForm = h("form", { class: "inline name-form" },
    h("input", { name: "name", list: "people-names", placeholder: "Who is this?", required: true, maxlength: "200", autocomplete: "off", "aria-label": "name" }),
    h("button", { type: "submit", text: "Name" }));
  const msg = h("p", { class: "msg", hidden: true });
  async function name(n) {
    try {
      const r = await api("POST", `/v1/unknowns/${enc(c.id)}/name`, { name: n });
      toast(`Named ${r.tracks_named} track(s) ${r.name}` + (r.refused && r.refused.length ? ` (${r.refused.length} face(s) refused)` : ""));
      msg.replaceChildren(`Named ${r.name}: ${r.templates_added} template(s) added. `, h("a", { href: `/ui/events?person=${enc(r.name)}`, text: `See ${r.name}'s events →` }));
      msg.hidden = false; msg.className = "msg ok";
      fillNames("people-names"); reload(false);
    } catch (err) { msg.textContent = "Refused: " + err.message; msg.hidden = false; msg.className = "msg error"; }
  }
  nameForm.addEventListener("submit", (e) => { e.preventDefault(); const n = nameForm.elements.name.value.trim(); if (n) name(n); });
  const sugg = c.suggestion
    ? h("p", { class: "suggestion" }, "Looks like ", h("b", { text: c.suggestion }), ` (${fmtScore(c.suggestion_score)}) `,
        h("button", { class: "ghost small", onclick: () => name(c.suggestion), text: `Name ${c.suggestion}` }))
    : h("p", { class: "muted", text: "No suggestion." });
  const ignore = h("button", { class: "ghost", text: c.ignored ? "Ignored" : "Ignore", disabled: c.ignored });
  ignore.addEventListener("click", async () => {
    try { await api("POST", `/v1/unknowns/${enc(c.id)}/ignore`); toast(`Ignoring ${c.id}`); reload(); } catch (err) { toast(err.message, true); }
  });
  const del = h("button", { class: "danger", text: "Delete" });
  del.addEventListener("click", async () => {
    if (!(await confirmBox(`Delete unknown ${c.id}? This erases its ${c.faces.length} stored face crop(s); its events stay unknown.`, "Delete"))) return;
    try { const r = await api("DELETE", `/v1/unknowns/${enc(c.id)}`); toast(`Deleted ${r.id} (${r.faces} faces)`); reload(); } catch (err) { toast(err.message, true); }
  });
  card.append(h("div", { class: "row spread" }, h("label", { class: "check" }, pick, h("b", { text: c.id })),
      h("span", { class: "muted", text: `${c.tracks} track(s) · ${(c.cameras || []).join(", ")}` })),
    faces,
    h("p", { class: "muted", text: `first ${fmtTime(c.first_seen)} · last ${fmtTime(c.last_seen)}` }),
    sugg, nameForm, msg, h("div", { class: "row spread" }, ignore, del));
  return card;
}

function updateMerge() {
  const n = $$("#unknowns .pick:checked").length;
  const b = $("#merge"); b.disabled = n < 2; b.textContent = n >= 2 ? `Merge selected (${n})` : "Merge selected";
}

function unknownsPage() {
  fillNames("people-names");
  const box = $("#unknowns");
  async function reload(clear = true) {
    const p = new URLSearchParams({ limit: "100" });
    if ($("#show-ignored").checked) p.set("include_ignored", "true");
    try {
      const r = await api("GET", "/v1/unknowns?" + p);
      const cards = r.clusters.map((c) => clusterCard(c, reload));
      if (clear) box.replaceChildren(...cards);
      else {  /* keep the card just named (its message) in place; refresh the others */
        const fresh = new Map(cards.map((c) => [c.dataset.id, c]));
        for (const old of $$(".cluster", box)) if (fresh.has(old.dataset.id)) old.replaceWith(fresh.get(old.dataset.id));
      }
      $("#unknowns-empty").hidden = r.clusters.length > 0;
      show($("#unknowns-error"), "");
      updateMerge();
    } catch (e) {
      show($("#unknowns-error"), e.status === 404 ? "The unknown-visitors backend is not available on this server." : "Could not load unknowns: " + e.message);
    }
  }
  $("#show-ignored").addEventListener("change", () => reload());
  $("#merge").addEventListener("click", async () => {
    const ids = $$("#unknowns .pick:checked").map((x) => x.closest(".cluster").dataset.id);
    if (ids.length < 2) return;
    try { const c = await api("POST", "/v1/unknowns/merge", { ids }); toast(`Merged into ${c.id}`); reload(); } catch (e) { toast(e.message, true); }
  });
  reload();
}

/* ---- cameras ------------------------------------------------------------------------------------------ */
function cameraCard(c, reload) {
  const s = c.status || {};
  const stateName = s.state || (c.enabled ? "waiting" : "disabled");
  const shot = h("div", { class: "shot small" }, placeholder("thumb wide"));
  api("GET", `/v1/events?camera=${enc(c.name)}&limit=20`).then((pg) => {
    const ev = pg.events.find((e) => e.snapshot_id);
    if (ev) shot.replaceChildren(img(`/v1/events/${ev.id}/snapshot`, `recent snapshot from ${c.name}`, "thumb wide"));
  }).catch(() => {});
  const del = h("button", { class: "danger", text: "Remove" });
  del.addEventListener("click", async () => {
    if (!(await confirmBox(`Remove camera ${c.name}? Its grabber stops; events already recorded stay.`, `Remove ${c.name}`))) return;
    try { await api("DELETE", `/v1/cameras/${enc(c.name)}`); toast(`Removed ${c.name}`); reload(); } catch (e) { toast(e.message, true); }
  });
  const facts = [["fps", s.fps === null || s.fps === undefined ? "—" : Number(s.fps).toFixed(1)], ["drops", s.drops ?? 0],
    ["last frame", fmtTime(s.last_frame_at)], ["frames", s.frames ?? 0], ["analysis fps", c.fps ?? "all"]];
  return h("section", { class: "card camera", "data-name": c.name },
    h("div", { class: "row spread" }, h("h2", { text: c.name }), h("span", { class: `state ${stateName}`, text: stateName })),
    shot, h("p", { class: "url", text: c.url }),
    h("dl", { class: "facts-list" }, facts.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: String(v) })])),
    s.error ? h("p", { class: "error", text: s.error }) : null,
    h("div", { class: "row end" }, del));
}

function camerasPage() {
  async function reload() {
    try {
      const cams = await api("GET", "/v1/cameras");
      $("#cameras").replaceChildren(...cams.map((c) => cameraCard(c, reload)));
      $("#cameras-empty").hidden = cams.length > 0;
      show($("#cameras-error"), "");
    } catch (e) { show($("#cameras-error"), "Could not load cameras: " + e.message); }
  }
  const f = $("#add-camera");
  f.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { name: f.elements.name.value.trim(), url: f.elements.url.value.trim() };
    if (f.elements.fps.value) body.fps = Number(f.elements.fps.value);
    try { const c = await api("POST", "/v1/cameras", body); show($("#camera-msg"), `Added ${c.name}.`, "ok"); f.reset(); reload(); }
    catch (err) { show($("#camera-msg"), "Refused: " + err.message, "error"); }
  });
  reload();
  setInterval(() => { if (!document.hidden && !$("#confirm").open) reload(); }, 10000);
}

/* ---- system ------------------------------------------------------------------------------------------- */
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(/^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}
const rows = (sel, data) => $(sel + " tbody").replaceChildren(...(data.length ? data.map((r) => h("tr", {}, r.map((x, i) => h("td", { class: i ? "num" : "", text: String(x) }))))
  : [h("tr", {}, h("td", { class: "muted", colspan: "4", text: "none" }))]));

function systemPage() {
  async function reload() {
    try {
      const r = await fetch("/metrics", { credentials: "same-origin" });
      if (r.status === 401) { location.href = "/ui/login?next=/ui/system"; return; }
      if (!r.ok) throw new Error("HTTP " + r.status);
      const ms = parseMetrics(await r.text());
      const get = (n) => ms.filter((m) => m.name === n);
      rows("#sys-workers", get("facetrail_workers").filter((m) => m.value > 0).map((m) => [m.labels.role, m.value]));
      const q = {};
      for (const [n, i] of [["facetrail_queue_depth", 1], ["facetrail_queue_pending", 2], ["facetrail_queue_consumers", 3]])
        for (const m of get(n)) { (q[m.labels.stream] = q[m.labels.stream] || [m.labels.stream, 0, 0, 0])[i] = m.value; }
      rows("#sys-queues", Object.values(q));
      const cams = {};
      for (const m of get("facetrail_camera_state")) if (m.value) (cams[m.labels.camera] = cams[m.labels.camera] || [m.labels.camera, "", "—", 0])[1] = m.labels.state;
      for (const m of get("facetrail_camera_fps")) (cams[m.labels.camera] = cams[m.labels.camera] || [m.labels.camera, "", "—", 0])[2] = m.value.toFixed(1);
      for (const m of get("facetrail_camera_drops_total")) (cams[m.labels.camera] = cams[m.labels.camera] || [m.labels.camera, "", "—", 0])[3] = m.value;
      rows("#sys-cameras", Object.values(cams));
      rows("#sys-events", get("facetrail_events_total").map((m) => [m.labels.type, m.value]));
      show($("#system-error"), "");
    } catch (e) { show($("#system-error"), "Could not read /metrics: " + e.message); }
  }
  reload();
  setInterval(() => { if (!document.hidden) reload(); }, 5000);
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "events") { if ($("#event")) eventPage(); else eventsPage(); }
  else if (page === "people") { enrollForm(); peoplePage(); }
  else if (page === "unknowns") unknownsPage();
  else if (page === "cameras") camerasPage();
  else if (page === "system") systemPage();
});
