// The control-room page: sign in, the header (community, live status, clock, language,
// sound), the live alert stream, and a view per route (#/board, #/overview/{community},
// #/building/{community}/{building}, #/device/{id}, #/alert/{id}, #/incidents).

import { alertView } from "./alert.js";
import { api, describe, getToken, setToken } from "./api.js";
import { boardView } from "./board.js";
import { deviceView } from "./device.js";
import { incidentsView } from "./incidents.js";
import { $, h, replace, s } from "./dom.js";
import { applyStatic, fmtTime, onLangChange, t, toggleLang } from "./i18n.js";
import { buildingView, overviewView } from "./overview.js";
import { cue, setSound, soundOn, unlock } from "./sound.js";
import {
  ALARMING,
  applyEvent,
  criticalOpen,
  loadSession,
  notify,
  refreshCommunity,
  reset,
  selectCommunity,
  stopRefreshing,
  store,
  subscribe,
  syncAlerts,
  timeZoneOf,
} from "./store.js";
import { AlertStream } from "./stream.js";
import { renderFigures, wireActionDialog } from "./widgets.js";

// A full resynchronisation now and then, on top of the stream (it costs one query).
const RESYNC_MS = 60_000;
// Tiles and figures older than this (refreshed every 30 s) are shown as not current.
const COMMUNITY_STALE_MS = 75_000;

const decode = (part) => (part === undefined ? undefined : decodeURIComponent(part));
const ROUTES = [
  [/^#\/board$/, "board", (el) => boardView(el)],
  [/^#\/overview(?:\/([^/]+))?$/, "overview", (el, m) => overviewView(el, { communityId: decode(m[1]) })],
  [/^#\/building\/([^/]+)\/([^/]+)$/, "overview",
    (el, m) => buildingView(el, { communityId: decode(m[1]), buildingId: decode(m[2]) })],
  [/^#\/device\/([^/]+)$/, "overview", (el, m) => deviceView(el, { deviceId: decode(m[1]) })],
  [/^#\/alert\/(\d+)$/, "board", (el, m) => alertView(el, { alertId: m[1] })],
  [/^#\/incidents$/, "incidents", (el) => incidentsView(el)],
];

let cleanup = null;
let stream = null;
let resyncTimer = null;
let clockTimer = null;
let unsubscribers = [];

function route() {
  if (!store.me) return;
  if (cleanup) cleanup();
  cleanup = null;
  const hash = location.hash || "#/board";
  const found = ROUTES.map(([re, tab, view]) => [hash.match(re), tab, view]).find(([m]) => m);
  const [match, tab, view] = found || ["#/board".match(ROUTES[0][0]), "board", ROUTES[0][2]];
  for (const a of document.querySelectorAll(".tabs a")) a.classList.toggle("active", a.id === `nav-${tab}`);
  const container = $("#view");
  replace(container);
  window.scrollTo(0, 0);
  cleanup = view(container, match);
}

// --- header ---------------------------------------------------------------------------

function renderCommunityPicker() {
  const select = $("#community-select");
  replace(select, [...store.communities.values()].map((c) => h("option", { value: c.id }, c.name)));
  select.value = store.current || "";
  select.disabled = store.communities.size < 2;
}

function renderWho() {
  $("#who-name").textContent = store.me ? store.me.name : "";
  $("#who-role").textContent = store.me ? t(`role.${store.me.role}`) : "";
  const sound = $("#sound-toggle");
  const on = soundOn();
  sound.setAttribute("aria-pressed", String(on));
  sound.title = t(on ? "sound.on" : "sound.off");
  sound.setAttribute("aria-label", sound.title);
  replace(sound, s("svg", { viewBox: "0 0 24 24", width: 20, height: 20, "aria-hidden": "true", class: "icon" },
    s("path", { d: "M4 9h4l5-4v14l-5-4H4z", fill: "currentColor" }),
    on ? s("path", { d: "M16 8.5a5 5 0 0 1 0 7M18.5 6a8.5 8.5 0 0 1 0 12", fill: "none", stroke: "currentColor", "stroke-width": 2 })
      : s("path", { d: "M16 9l5 6M21 9l-5 6", fill: "none", stroke: "currentColor", "stroke-width": 2 })));
}

function renderLive() {
  const { state, attempt, lastDataAt } = store.live;
  const el = $("#live-status");
  el.dataset.state = state;
  const label = state === "live" ? t("live.live")
    : state === "reconnecting" ? t("live.reconnecting", { n: attempt })
    : state === "connecting" ? t("live.connecting") : t("live.stopped");
  el.querySelector(".label").textContent = label;
  const tz = timeZoneOf(store.current);
  el.title = lastDataAt ? t("live.title", { time: fmtTime(lastDataAt, tz, "time") }) : "";
  const stale = state !== "live";
  document.body.classList.toggle("stale", stale);
  const banner = $("#stale-banner");
  banner.hidden = !stale || state === "stopped";
  banner.textContent = store.syncedAt && lastDataAt
    ? t("stale.banner", { time: fmtTime(lastDataAt, tz, "time") }) : t("stale.never");
}

function renderBanners() {
  const n = criticalOpen();
  const banner = $("#critical-banner");
  banner.hidden = n === 0;
  banner.textContent = t("critical.banner", { n });
}

function renderFiguresStrip() {
  const el = $("#figures");
  renderFigures(el);
  const old = !store.communityLoadedAt || Date.now() - store.communityLoadedAt > COMMUNITY_STALE_MS;
  el.classList.toggle("stale-part", Boolean(store.figures) && (old || Boolean(store.communityError)));
}

function tickClock() {
  const tz = timeZoneOf(store.current);
  const clock = $("#clock");
  clock.textContent = fmtTime(new Date(), tz, "datetime");
  clock.title = tz;
  renderFiguresStrip();
  if (store.live.state === "live") renderLive();
}

// --- session ----------------------------------------------------------------------------

function showSignIn(message) {
  document.body.classList.add("signed-out");
  $("#app").hidden = true;
  $("#signin").hidden = false;
  const error = $("#signin-error");
  error.textContent = message || "";
  error.hidden = !message;
  $("#signin-token").focus();
}

function startStream() {
  stream = new AlertStream({
    url: "/api/v1/alerts/stream",
    token: getToken(),
    onOpen: async () => {
      await syncAlerts();
      // The server starts listening a moment after it answers: look once more shortly
      // after, so nothing committed in that moment is missed on a first connection.
      setTimeout(() => syncAlerts().catch(() => {}), 1500);
    },
    onEvent: (event) => {
      applyEvent(event);
      const a = event.data;
      if (ALARMING.has(event.type) && a.severity === "critical" && a.state === "open") cue();
    },
    onState: (state, info) => {
      store.live = {
        state,
        attempt: info.attempt ?? (state === "reconnecting" ? store.live.attempt : 0),
        lastDataAt: stream ? stream.lastDataAt : null,
      };
      renderLive();
      if (!info.heartbeat) notify("live");
    },
    onAuthError: () => signOut(t("signin.invalid")),
  });
  stream.start();
  clearInterval(resyncTimer);
  resyncTimer = setInterval(() => {
    if (store.live.state === "live") syncAlerts().catch(() => {});
  }, RESYNC_MS);
}

async function startSession() {
  try {
    await loadSession();
  } catch (error) {
    const invalid = error.status === 401;
    if (invalid) setToken("", false);
    showSignIn(invalid ? t("signin.invalid") : t("signin.failed", { msg: describe(error) }));
    return false;
  }
  document.body.classList.remove("signed-out");
  $("#signin").hidden = true;
  $("#app").hidden = false;
  renderCommunityPicker();
  renderWho();
  renderLive();
  unsubscribers = [
    subscribe((changes) => {
      if (changes.has("alerts")) renderBanners();
      if (changes.has("community")) {
        renderFiguresStrip();
        $("#community-select").value = store.current || "";
      }
    }),
    onLangChange(() => {
      renderWho();
      renderLive();
      renderBanners();
      renderFiguresStrip();
    }),
  ];
  startStream();
  refreshCommunity();
  clearInterval(clockTimer);
  clockTimer = setInterval(tickClock, 1000);
  tickClock();
  route();
  return true;
}

function signOut(message) {
  if (stream) stream.stop();
  stream = null;
  clearInterval(resyncTimer);
  clearInterval(clockTimer);
  stopRefreshing();
  for (const off of unsubscribers) off();
  unsubscribers = [];
  if (cleanup) cleanup();
  cleanup = null;
  setToken("", false);
  reset();
  replace($("#view"));
  replace($("#figures"));
  showSignIn(message);
}

// --- wiring -----------------------------------------------------------------------------

function wire() {
  for (const button of document.querySelectorAll(".lang-toggle")) button.addEventListener("click", toggleLang);
  $("#signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    unlock();
    const token = $("#signin-token").value.trim();
    if (!token) return;
    const submit = $("#signin-submit");
    submit.disabled = true;
    try {
      await api("/me", { auth: token });
      setToken(token, $("#signin-remember").checked);
      $("#signin-token").value = "";
      if (!location.hash || location.hash === "#") location.hash = "#/board";
      await startSession();
    } catch (error) {
      showSignIn(error.status === 401 ? t("signin.invalid") : t("signin.failed", { msg: describe(error) }));
    } finally {
      submit.disabled = false;
    }
  });
  $("#signout").addEventListener("click", () => signOut());
  $("#community-select").addEventListener("change", (event) => selectCommunity(event.target.value));
  $("#sound-toggle").addEventListener("click", () => {
    setSound(!soundOn());
    renderWho();
  });
  $("#critical-banner").addEventListener("click", () => {
    sessionStorage.setItem("sc.boardFilters", JSON.stringify({ severity: "critical", state: "open" }));
    if (location.hash === "#/board") route();
    else location.hash = "#/board";
  });
  document.addEventListener("click", unlock, { once: true });
  window.addEventListener("hashchange", route);
  window.addEventListener("sc-unauthorized", () => {
    if (store.me) signOut(t("signin.invalid"));
  });
  wireActionDialog();
}

function boot() {
  applyStatic();
  wire();
  // The demo prints a link with the token in the fragment (never sent to the server):
  // take it, and take it out of the address bar and the history. A link carrying
  // someone else's token must not silently replace who is signed in here: ask.
  const fragment = location.hash.match(/^#token=([^&]+)/);
  if (fragment) {
    const offered = decodeURIComponent(fragment[1]);
    const current = getToken();
    if (!current || current === offered || window.confirm(t("signin.switch"))) {
      setToken(offered, true);
    }
    history.replaceState(null, "", `${location.pathname}#/board`);
  }
  if (getToken()) startSession();
  else showSignIn();
}

boot();
