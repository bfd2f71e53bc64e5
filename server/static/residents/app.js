// The residents' warning page: no build step, no external resources (works on an intranet).
// Reads /api/v1/public/*; draws its own map (SVG) from the areas' GeoJSON; subscribes to Web
// Push when the browser can, and keeps the live stream open while the page is visible.
"use strict";

const API = "/api/v1/public";
const COLOURS = { blue: "#1e6fd9", yellow: "#e0b400", orange: "#f08c00", red: "#d6231e" };
const state = {
  lang: localStorage.getItem("liandong.lang") || "zh_CN",
  texts: {},
  areas: null,
  point: null,
  warnings: [],
  stream: null,
  highlight: new URLSearchParams(location.search).get("alert"),
};

const $ = (id) => document.getElementById(id);
const t = (key) => state.texts[key] || key;

async function getJSON(url, options) {
  const r = await fetch(url, options);
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.status === 204 ? null : r.json();
}

async function loadTexts() {
  state.texts = await getJSON(`${API}/texts/${state.lang}`);
  document.documentElement.lang = state.lang === "en" ? "en" : "zh-CN";
  for (const el of document.querySelectorAll("[data-t]")) el.textContent = t(el.dataset.t);
  document.title = t("title");
}

// ---- the map: an equirectangular projection fitted to the district --------------------------

function rings(geometry) {
  if (geometry.type === "Polygon") return geometry.coordinates;
  if (geometry.type === "MultiPolygon") return geometry.coordinates.flat();
  return [];
}

function frame() {
  const boxes = [];
  for (const f of state.areas.features) {
    if (f.properties.level === "city") continue; // the city would shrink the district to a dot
    for (const ring of rings(f.geometry)) boxes.push(...ring);
  }
  for (const w of state.warnings) for (const ring of rings(w.area)) boxes.push(...ring);
  if (state.point) boxes.push(state.point);
  if (!boxes.length) return null;
  const xs = boxes.map((p) => p[0]), ys = boxes.map((p) => p[1]);
  const w = Math.min(...xs), e = Math.max(...xs), s = Math.min(...ys), n = Math.max(...ys);
  const k = Math.cos(((s + n) / 2) * Math.PI / 180);
  const scale = Math.min(380 / ((e - w) * k || 1e-6), 280 / ((n - s) || 1e-6));
  return (p) => [10 + (p[0] - w) * k * scale, 10 + (n - p[1]) * scale];
}

function pathOf(geometry, project) {
  return rings(geometry)
    .map((ring) => "M" + ring.map((p) => project(p).map((v) => v.toFixed(1)).join(",")).join("L") + "Z")
    .join("");
}

function drawMap() {
  const svg = $("map");
  const project = state.areas && frame();
  if (!project) return;
  const parts = [];
  for (const f of state.areas.features) {
    if (f.properties.level === "city") continue;
    parts.push(`<path class="boundary" d="${pathOf(f.geometry, project)}"><title>${esc(f.properties.name)}</title></path>`);
  }
  for (const w of state.warnings) {
    const c = COLOURS[w.color] || "#888";
    parts.push(`<path class="warning" data-alert="${w.id}" fill="${c}" stroke="${c}" d="${pathOf(w.area, project)}"></path>`);
  }
  if (state.point) {
    const [x, y] = project(state.point);
    parts.push(`<circle class="me" cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="5"></circle>`);
  }
  svg.innerHTML = parts.join("");
}

// ---- warnings, shelters ----------------------------------------------------------------------

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function when(iso) {
  return new Date(iso).toLocaleString(state.lang === "en" ? "en-GB" : "zh-CN", {
    month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
}

// A warning's texts in the page's language (its English info where it has one).
function info(w) {
  const infos = w.infos || [];
  const zh = infos.find((i) => i.language.toLowerCase().startsWith("zh")) || infos[0] || {};
  const en = infos.find((i) => i.language.toLowerCase().startsWith("en"));
  return state.lang === "en" && en ? { ...zh, ...Object.fromEntries(Object.entries(en).filter(([, v]) => v)) } : zh;
}

function highlighted(w) {
  return state.highlight && (w.id === state.highlight || w.chain_id === state.highlight);
}

function renderWarnings() {
  const box = $("warnings");
  if (!state.warnings.length) {
    box.innerHTML = `<p class="none">${esc(t("none"))}</p>`;
  } else {
    box.innerHTML = state.warnings.map((w) => {
      const i = info(w);
      return `
      <article class="card ${esc(w.color || "")}${highlighted(w) ? " highlight" : ""}" id="alert-${w.id}" data-chain="${w.chain_id}">
        <div class="level">${esc(w.color ? t("colour_" + w.color) : "")} · ${esc(i.event)}</div>
        <h2>${esc(i.headline || i.event)}</h2>
        ${i.instruction ? `<p><strong>${esc(t("instruction"))}:</strong> ${esc(i.instruction)}</p>` : ""}
        ${w.expires ? `<p class="expires">${esc(t("expires"))} ${esc(when(w.expires))}</p>` : ""}
      </article>`;
    }).join("");
    const target = document.querySelector(".card.highlight");
    if (target) target.scrollIntoView({ block: "center" });
  }
  drawMap();
}

function pointQuery() {
  return state.point ? `?point=${state.point[0]},${state.point[1]}` : "";
}

async function refresh() {
  const found = await getJSON(`${API}/alerts${pointQuery()}`);
  state.warnings = found.items;
  renderWarnings();
  if (state.point) {
    const shelters = await getJSON(`${API}/shelters?lon=${state.point[0]}&lat=${state.point[1]}`);
    $("shelters").innerHTML = shelters.map((s) =>
      `<li>${esc(s.name)} — ${esc(t("metres").replace("{n}", s.distance_m))}${s.address ? ` · ${esc(s.address)}` : ""}</li>`).join("");
  }
}

// ---- the live stream (the fallback where push is unavailable) --------------------------------

function openStream() {
  closeStream();
  const live = $("live");
  const source = new EventSource(`${API}/alerts/stream${pointQuery()}`);
  source.addEventListener("alerts", (event) => {
    state.warnings = JSON.parse(event.data).items;
    renderWarnings();
    live.hidden = false; live.className = "live"; live.textContent = "● " + t("live");
  });
  source.onerror = () => { live.hidden = false; live.className = "live off"; live.textContent = t("offline"); };
  state.stream = source;
}

function closeStream() {
  if (state.stream) state.stream.close();
  state.stream = null;
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") openStream(); else closeStream();
});

// ---- choosing a place ------------------------------------------------------------------------

async function setPoint(point) {
  state.point = point;
  localStorage.setItem("liandong.point", JSON.stringify(point));
  await refresh();
  openStream();
}

function centreOf(geometry) {
  const pts = rings(geometry).flat();
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  return [(Math.min(...xs) + Math.max(...xs)) / 2, (Math.min(...ys) + Math.max(...ys)) / 2];
}

$("locate").addEventListener("click", () => {
  navigator.geolocation.getCurrentPosition(
    (pos) => setPoint([+pos.coords.longitude.toFixed(5), +pos.coords.latitude.toFixed(5)]),
    () => $("area").focus(),
    { enableHighAccuracy: false, timeout: 15000, maximumAge: 300000 },
  );
});

$("area").addEventListener("change", (event) => {
  const f = state.areas.features.find((a) => a.id === event.target.value);
  if (f) setPoint(centreOf(f.geometry).map((v) => +v.toFixed(5)));
});

$("lang").addEventListener("click", async () => {
  state.lang = state.lang === "en" ? "zh_CN" : "en";
  localStorage.setItem("liandong.lang", state.lang);
  await loadTexts();
  renderWarnings();
});

// ---- subscribing (service worker + Push API with our VAPID key) ------------------------------

function keyBytes(b64) {
  const raw = atob(b64.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((b64.length + 3) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

async function subscribe() {
  const status = $("subscribe-status");
  try {
    if (!("serviceWorker" in navigator) || !("PushManager" in window) || !state.point) throw new Error("unsupported");
    const { vapid_public_key: key } = await getJSON(`${API}/push-key`);
    if (!key) throw new Error("no key");
    const registration = await navigator.serviceWorker.ready;
    const subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true, applicationServerKey: keyBytes(key),
    });
    const saved = JSON.parse(localStorage.getItem("liandong.subscription") || "null");
    const body = { places: [{ lon: state.point[0], lat: state.point[1] }], lang: state.lang };
    let out;
    if (saved) {
      out = await getJSON(`${API}/subscriptions/${saved.id}`, {
        method: "PUT", headers: { "Content-Type": "application/json", "X-Subscription-Secret": saved.secret },
        body: JSON.stringify({ ...body, subscription: subscription.toJSON() }),
      }).catch(() => null);
    }
    if (!out) {
      out = await getJSON(`${API}/subscriptions`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ...body, channel: "webpush", subscription: subscription.toJSON() }),
      });
      localStorage.setItem("liandong.subscription", JSON.stringify({ id: out.id, secret: out.secret }));
    }
    status.textContent = t("subscribed");
  } catch (err) {
    status.textContent = t("push_unavailable");
    openStream();
  }
}

$("subscribe").addEventListener("click", subscribe);

// ---- start -----------------------------------------------------------------------------------

async function start() {
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("sw.js").catch(() => {});
  }
  await loadTexts();
  state.areas = await getJSON(`${API}/areas`);
  const select = $("area");
  for (const f of state.areas.features.filter((a) => a.properties.level !== "city")) {
    const option = document.createElement("option");
    option.value = f.id; option.textContent = f.properties.name;
    select.appendChild(option);
  }
  const q = new URLSearchParams(location.search);
  const saved = JSON.parse(localStorage.getItem("liandong.point") || "null");
  const given = q.get("lon") && q.get("lat") ? [+q.get("lon"), +q.get("lat")] : null;
  state.point = given || saved;
  await refresh();
  openStream();
  document.body.dataset.ready = "1";
}

start();
