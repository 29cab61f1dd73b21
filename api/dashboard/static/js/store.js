// What the page knows: who is signed in, their communities, the active alerts (kept
// current by the live stream), devices and buildings as needed, the selected
// community's tiles and figures. Views subscribe and re-render on change.

import { api, apiAll, enc } from "./api.js";

export const CLASSES = ["fire", "wearable", "access", "locker"];
export const SEVERITIES = ["critical", "major", "minor", "warning", "info"];
export const ACTIVE_STATES = ["open", "acknowledged", "suppressed"];
// Actions after which an alert is a new or worse emergency (sound and highlight).
export const ALARMING = new Set(["raised", "severity_raised", "escalated", "unsuppressed"]);
// Tiles and figures refresh at least this often, and this long after an alert moves.
const COMMUNITY_REFRESH_MS = 30_000;
const AFTER_EVENT_MS = 1_000;
// Resolved alerts are shown for a day ("resolved today"), then forgotten.
const KEEP_RESOLVED_MS = 26 * 3_600_000;

export const store = {
  me: null,
  communities: new Map(),
  current: null,
  alerts: new Map(), // not resolved
  resolved: new Map(), // resolved, as far as this page has seen or loaded them
  arrived: new Map(), // alert id -> when it arrived live (a brief highlight)
  devices: new Map(),
  buildings: new Map(), // community -> Map(building id -> building)
  overview: null,
  figures: null,
  communityLoadedAt: null,
  live: { state: "connecting", attempt: 0, lastDataAt: null },
  syncedAt: null,
};

const listeners = new Set();
let notifyQueued = new Set();
let frame = null;

/** fn(changes: Set of "alerts" | "community" | "live" | "devices" | ...) */
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function notify(what) {
  notifyQueued.add(what);
  if (frame !== null) return;
  frame = requestAnimationFrame(() => {
    frame = null;
    const changes = notifyQueued;
    notifyQueued = new Set();
    for (const fn of [...listeners]) {
      try {
        fn(changes);
      } catch (error) {
        console.error("render failed", error);
      }
    }
  });
}

export function reset() {
  store.me = null;
  store.communities.clear();
  store.current = null;
  store.alerts.clear();
  store.resolved.clear();
  store.arrived.clear();
  store.devices.clear();
  store.buildings.clear();
  store.overview = null;
  store.figures = null;
  store.syncedAt = null;
}

export function community(id) {
  return store.communities.get(id) || null;
}

export function timeZoneOf(communityId) {
  const c = community(communityId);
  return c ? c.time_zone : "Asia/Shanghai";
}

export async function loadSession() {
  const [me, communities] = await Promise.all([api("/me"), apiAll("/communities")]);
  store.me = me;
  store.communities = new Map(communities.map((c) => [c.id, c]));
  const saved = localStorage.getItem("sc.community");
  store.current = store.communities.has(saved) ? saved : communities.length ? communities[0].id : null;
  // Nobody chose yet: the first synchronisation picks the community with most to do.
  autoPick = !store.communities.has(saved) && communities.length > 1;
}

let autoPick = false;

function pickBusiestCommunity() {
  autoPick = false;
  const counts = new Map();
  for (const a of store.alerts.values()) {
    if (a.state === "open") counts.set(a.community_id, (counts.get(a.community_id) || 0) + 1);
  }
  const [busiest] = [...counts.entries()].sort((x, y) => y[1] - x[1])[0] || [];
  if (busiest && busiest !== store.current && store.communities.has(busiest)) {
    store.current = busiest;
    store.overview = null;
    store.figures = null;
    notify("community");
  }
}

export function selectCommunity(id) {
  autoPick = false;
  if (!store.communities.has(id) || id === store.current) return;
  store.current = id;
  localStorage.setItem("sc.community", id);
  store.overview = null;
  store.figures = null;
  notify("community");
  refreshCommunity();
}

export function canAct() {
  return store.me && (store.me.role === "admin" || store.me.role === "operator");
}

// --- alerts -------------------------------------------------------------------------

let epoch = 0;
const fetchSeq = new Map();

function put(alert) {
  if (alert.state === "resolved") {
    store.alerts.delete(alert.id);
    store.resolved.set(alert.id, alert);
  } else {
    store.resolved.delete(alert.id);
    store.alerts.set(alert.id, alert);
  }
}

/** The whole list of alerts not resolved: after every (re)connection and now and then. */
export async function syncAlerts() {
  epoch += 1;
  const rows = await apiAll("/alerts", { active: true }, { max: 20_000 });
  store.alerts = new Map(rows.map((a) => [a.id, a]));
  store.syncedAt = new Date();
  // A wall screen runs for days: forget what it no longer shows.
  const now = Date.now();
  for (const [id, a] of store.resolved) {
    if (now - new Date(a.resolved_at || a.raised_at).getTime() > KEEP_RESOLVED_MS) store.resolved.delete(id);
  }
  for (const [id, at] of store.arrived) if (now - at > 60_000) store.arrived.delete(id);
  if (autoPick) pickBusiestCommunity();
  notify("alerts");
  scheduleCommunityRefresh(0);
}

export async function loadResolvedSince(since) {
  const rows = await apiAll("/alerts", { state: "resolved", since }, { max: 2000 });
  for (const a of rows) store.resolved.set(a.id, a);
  notify("alerts");
}

function toIso(value) {
  if (typeof value === "number") return new Date(value * 1000).toISOString();
  return value || new Date().toISOString();
}

/** One event of the stream: shown at once from its payload, then the full record. */
export function applyEvent({ type, data }) {
  const id = data.id;
  if (typeof id !== "number") return;
  const known = store.alerts.get(id) || store.resolved.get(id);
  const merged = {
    ...(known || {}),
    id,
    rule_id: data.rule_id ?? known?.rule_id,
    subject: data.subject ?? known?.subject,
    community_id: data.community_id ?? known?.community_id,
    device_id: data.device_id ?? known?.device_id ?? null,
    building: data.building ?? known?.building ?? null,
    rule_type: data.rule_type ?? known?.rule_type,
    severity: data.severity ?? known?.severity,
    state: data.state ?? known?.state,
    title: data.title ?? known?.title,
    occurrences: data.occurrences ?? known?.occurrences ?? 1,
    group_id: data.group_id ?? known?.group_id ?? null,
    raised_at: known?.raised_at ?? toIso(data.raised_at ?? data.at),
    first_seen: known?.first_seen ?? toIso(data.first_seen ?? data.at),
  };
  put(merged);
  if (!known || ALARMING.has(type)) store.arrived.set(id, Date.now());
  notify("alerts");
  refreshAlert(id);
  if (merged.community_id === store.current) scheduleCommunityRefresh(AFTER_EVENT_MS);
}

/** Fetch one alert; a reply older than a later request or a resync is dropped. */
export async function refreshAlert(id) {
  const seq = (fetchSeq.get(id) || 0) + 1;
  fetchSeq.set(id, seq);
  const at = epoch;
  try {
    const alert = await api(`/alerts/${id}`);
    if (fetchSeq.get(id) !== seq || epoch !== at) return alert;
    put(alert);
    notify("alerts");
    return alert;
  } catch (error) {
    if (error.status === 404) {
      store.alerts.delete(id);
      notify("alerts");
    }
    return null;
  }
}

async function transition(id, request) {
  const alert = await request;
  fetchSeq.set(id, (fetchSeq.get(id) || 0) + 1);
  put(alert);
  notify("alerts");
  scheduleCommunityRefresh(AFTER_EVENT_MS);
  return alert;
}

export const acknowledge = (id, note) =>
  transition(id, api(`/alerts/${id}/ack`, { method: "POST", body: { note: note || "" } }));
export const resolve = (id, note) =>
  transition(id, api(`/alerts/${id}/resolve`, { method: "POST", body: { note } }));

export function criticalOpen() {
  let n = 0;
  for (const a of store.alerts.values()) if (a.severity === "critical" && a.state === "open") n += 1;
  return n;
}

// --- devices and buildings -----------------------------------------------------------

// Devices fetched one by one for the board (a flood names hundreds): a few at a time.
const DEVICE_FETCHES = 4;
const wantedDevices = [];
const askedDevices = new Set();
let devicesInFlight = 0;

function pumpDevices() {
  while (devicesInFlight < DEVICE_FETCHES && wantedDevices.length) {
    const id = wantedDevices.shift();
    devicesInFlight += 1;
    api(`/devices/${enc(id)}`)
      .then((d) => {
        store.devices.set(id, d);
        notify("devices");
      })
      .catch(() => {})
      .finally(() => {
        devicesInFlight -= 1;
        setTimeout(() => askedDevices.delete(id), 60_000);
        pumpDevices();
      });
  }
}

/** A device from the cache, fetching it once in the background if it is not there. */
export function deviceOf(id) {
  if (!id) return null;
  const found = store.devices.get(id);
  if (found) return found;
  if (!askedDevices.has(id)) {
    askedDevices.add(id);
    wantedDevices.push(id);
    pumpDevices();
  }
  return null;
}

export function alertClass(alert) {
  const prefix = (alert.rule_id || "").split(".")[0];
  if (CLASSES.includes(prefix)) return prefix;
  const device = deviceOf(alert.device_id);
  return device ? device.device_class : "other";
}

export async function loadDevices(communityId) {
  const rows = await apiAll("/devices", { community_id: communityId }, { max: 50_000 });
  for (const d of rows) store.devices.set(d.id, d);
  notify("devices");
  return rows;
}

export async function loadBuildings(communityId) {
  if (store.buildings.has(communityId)) return store.buildings.get(communityId);
  const rows = await apiAll(`/communities/${enc(communityId)}/buildings`);
  const map = new Map(rows.map((b) => [b.id, b]));
  store.buildings.set(communityId, map);
  notify("buildings");
  return map;
}

export function buildingName(communityId, buildingId) {
  const b = store.buildings.get(communityId)?.get(buildingId);
  return b && b.name ? b.name : buildingId;
}

// --- the selected community: tiles and figures --------------------------------------

let refreshTimer = null;
let refreshing = null;
let again = false;

export function scheduleCommunityRefresh(delay) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshCommunity, delay);
}

export async function refreshCommunity() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshCommunity, COMMUNITY_REFRESH_MS);
  const id = store.current;
  if (!id) return;
  if (refreshing) {
    again = true;
    return;
  }
  refreshing = Promise.all([
    api(`/communities/${enc(id)}/figures`),
    api(`/communities/${enc(id)}/overview`),
    loadBuildings(id),
  ]);
  try {
    const [figures, overview] = await refreshing;
    if (id !== store.current) return;
    store.figures = figures;
    store.overview = overview;
    store.communityLoadedAt = new Date();
    store.communityError = null;
  } catch (error) {
    store.communityError = error;
  } finally {
    refreshing = null;
    notify("community");
    if (again || id !== store.current) {
      again = false;
      scheduleCommunityRefresh(0);
    }
  }
}

export function stopRefreshing() {
  clearTimeout(refreshTimer);
}
