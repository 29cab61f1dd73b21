// One alert: what, where, which device (and resident), its history, and the readings and
// events of the device around the moment it fired.

import { api, apiAll, enc } from "./api.js";
import { lineChart } from "./chart.js";
import { h, replace } from "./dom.js";
import { fmtNumber, fmtTime, onLangChange, t, tOr, unitLabel } from "./i18n.js";
import { refreshAlert, store, subscribe, timeZoneOf } from "./store.js";
import {
  actionButtons,
  alertPlace,
  communityName,
  errorBlock,
  loadingBlock,
  sevBadge,
  stateBadge,
} from "./widgets.js";

// The chart spans this long before the condition began, and at least this long after.
const BEFORE_MS = 30 * 60_000;
const AFTER_MS = 15 * 60_000;
// Metrics that say nothing on a chart next to an alert.
const NOT_CHARTED = new Set(["lat", "lon", "rssi", "battery_v", "compartments"]);
const MAX_CHARTS = 3;

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function historyTable(history, timeZone) {
  return h("table", { class: "history" },
    h("thead", {}, h("tr", {}, h("th", {}, t("col.time")), h("th", {}, t("col.action")),
      h("th", {}, t("col.state")), h("th", {}, t("col.actor")), h("th", {}, t("col.note")))),
    h("tbody", {}, history.map((row) => h("tr", { dataset: { action: row.action } },
      h("td", { class: "num" }, fmtTime(row.at, timeZone, "datetime")),
      h("td", {}, tOr(`action.${row.action}`, row.action), " ", sevBadge(row.severity)),
      h("td", {}, stateBadge(row.to_state)),
      h("td", {}, row.actor),
      h("td", {}, row.note || "")))));
}

function detailsText(details) {
  return Object.entries(details || {}).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join("\n");
}

async function readingsAround(alert, device) {
  const fired = new Date(alert.first_seen).getTime();
  const start = fired - BEFORE_MS;
  const end = Math.min(Date.now(), Math.max(fired, new Date(alert.last_seen || alert.raised_at).getTime()) + AFTER_MS);
  const span = { start: new Date(start), end: new Date(Math.max(end, start + 60_000)) };
  const latest = await api(`/devices/${enc(device.id)}/latest`);
  const units = new Map(latest.data.map((m) => [m.metric, m.unit]));
  let metrics = alert.details && typeof alert.details.metric === "string" ? [alert.details.metric] : [];
  if (!metrics.length) {
    metrics = latest.data.map((m) => m.metric).filter((m) => !NOT_CHARTED.has(m));
    metrics.sort((a, b) => (a === "battery") - (b === "battery"));
    metrics = metrics.slice(0, MAX_CHARTS);
  }
  const [series, events] = await Promise.all([
    Promise.all(metrics.map((metric) => apiAll(`/devices/${enc(device.id)}/readings`, { metric, ...span }, { max: 10_000 })
      .then((rows) => ({ metric, rows })))),
    apiAll(`/devices/${enc(device.id)}/events`, span, { max: 500 }),
  ]);
  return { span, series, events, units };
}

function chartsBlock(alert, device, data, timeZone) {
  const { span, series, events, units } = data;
  const markers = [{ t: new Date(alert.first_seen).getTime(), label: t("detail.firedAt") }];
  const eventTicks = events.map((e) => ({ t: new Date(e.ts).getTime(), label: e.event }));
  const gap = Math.max(180_000, 3 * device.expected_interval_s * 1000);
  const charts = series.map(({ metric, rows }) => {
    const unit = unitLabel(units.get(metric));
    const threshold = alert.details && alert.details.metric === metric && typeof alert.details.raise === "number"
      ? alert.details.raise : null;
    return h("div", { class: "chart-block", dataset: { metric } },
      h("h4", {}, tOr(`metric.${metric}`, metric), threshold !== null ? `  (${t("detail.threshold", { v: fmtNumber(threshold) })})` : ""),
      lineChart({
        series: [{ points: rows.map((r) => ({ t: new Date(r.ts).getTime(), v: r.value })) }],
        threshold, markers, events: eventTicks, start: span.start.getTime(), end: span.end.getTime(),
        timeZone, unit, gapMs: gap,
      }));
  });
  const eventRows = events.slice(-50).reverse().map((e) => h("tr", {},
    h("td", { class: "num" }, fmtTime(e.ts, timeZone, "datetime")), h("td", {}, e.event),
    h("td", { class: "muted" }, JSON.stringify(e.data))));
  return [
    h("h2", {}, t("detail.readings")),
    charts.length ? charts : lineChart({ start: span.start.getTime(), end: span.end.getTime(), timeZone }),
    h("h3", {}, t("detail.events")),
    eventRows.length ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, t("col.time")),
      h("th", {}, t("col.event")), h("th", {}, t("col.data")))), h("tbody", {}, eventRows))
      : h("p", { class: "muted" }, t("device.noEvents")),
  ];
}

export function alertView(container, { alertId }) {
  const id = Number(alertId);
  const crumbs = h("div", { class: "crumbs" });
  const left = h("section", { class: "panel", id: "alert-detail" });
  const right = h("section", { class: "panel", id: "alert-readings" });
  replace(container, h("div", { class: "stack" }, crumbs, h("div", { class: "detail" }, left, right)));
  let device = null;
  let resident = null;
  let readings = null;
  let failed = null;

  function current() {
    return store.alerts.get(id) || store.resolved.get(id) || null;
  }

  // A resync of the board (on reconnect, now and then) puts the alert's list row in the
  // store, which has no history, and drops a full record fetched meanwhile: fetch it
  // again until it sticks, rather than show "loading" for good.
  let historyPending = false;
  let closed = false;
  function ensureHistory() {
    if (historyPending || failed || closed) return;
    historyPending = true;
    refreshAlert(id).finally(() => {
      historyPending = false;
      const alert = current();
      if (alert && !alert.history && !closed) setTimeout(renderLeft, 500);
    });
  }

  function renderLeft() {
    replace(crumbs, h("a", { href: "#/board" }, t("detail.back")));
    const alert = current();
    if (failed) return replace(left, errorBlock(failed));
    if (!alert) return replace(left, loadingBlock());
    const tz = timeZoneOf(alert.community_id);
    const at = (time, who) => (time ? `${fmtTime(time, tz, "datetime")}${who ? ` · ${who}` : ""}` : null);
    replace(left,
      h("div", { class: "row" }, sevBadge(alert.severity), stateBadge(alert.state)),
      h("h2", { class: "alert-title" }, alert.title),
      h("div", { class: "row" }, actionButtons(alert)),
      h("h3", {}, t("detail.details")),
      facts([
        [t("detail.community"), communityName(alert.community_id)],
        [t("detail.place"), alertPlace(alert)],
        [t("detail.device"), alert.device_id ? h("a", { href: `#/device/${encodeURIComponent(alert.device_id)}` },
          device ? `${alert.device_id} · ${device.name || device.model}` : alert.device_id) : null],
        [t("detail.resident"), resident ? `${resident.name}${resident.address ? ` · ${resident.address}` : ""}` : null],
        [t("detail.rule"), alert.rule_id],
        [t("detail.subject"), alert.subject],
        [t("detail.firstSeen"), at(alert.first_seen)],
        [t("detail.raised"), at(alert.raised_at)],
        [t("detail.lastSeen"), at(alert.last_seen)],
        [t("detail.occurrences"), alert.occurrences > 1 ? String(alert.occurrences) : null],
        [t("detail.ackBy"), at(alert.acknowledged_at, alert.acknowledged_by)],
        [t("detail.resolvedBy"), at(alert.resolved_at, [alert.resolved_by, alert.resolution_note].filter(Boolean).join(": "))],
        [t("detail.members"), alert.members && alert.members.length ? alert.members.map((m) =>
          h("a", { href: `#/alert/${m}` }, `#${m} `)) : null],
        [t("col.data"), alert.details && Object.keys(alert.details).length
          ? h("pre", { class: "muted" }, detailsText(alert.details)) : null],
      ]),
      h("h3", {}, t("detail.history")),
      alert.history ? historyTable(alert.history, tz) : (ensureHistory(), loadingBlock()));
  }

  function renderRight() {
    const alert = current();
    if (!alert || failed) return replace(right);
    if (!alert.device_id && !(alert.details && Array.isArray(alert.details.devices))) return replace(right);
    if (readings instanceof Error) return replace(right, errorBlock(readings));
    if (!readings || !device) return replace(right, h("h2", {}, t("detail.readings")), loadingBlock());
    replace(right, chartsBlock(alert, device, readings, timeZoneOf(alert.community_id)));
  }

  async function load() {
    const alert = await refreshAlert(id);
    if (!alert) {
      failed = { status: 404 };
      renderLeft();
      renderRight();
      return;
    }
    renderLeft();
    const deviceId = alert.device_id || (alert.details?.devices || [])[0];
    if (!deviceId) return;
    try {
      device = await api(`/devices/${enc(deviceId)}`);
      store.devices.set(device.id, device);
      const role = store.me?.role;
      if (device.resident_id && (role === "admin" || role === "operator")) {
        resident = await api(`/residents/${enc(device.resident_id)}`).catch(() => null);
      }
      renderLeft();
      readings = await readingsAround(alert, device);
    } catch (error) {
      readings = error instanceof Error ? error : new Error(String(error));
    }
    renderRight();
  }

  renderLeft();
  renderRight();
  load();
  const unsubscribe = subscribe((changes) => { if (changes.has("alerts") || changes.has("devices")) renderLeft(); });
  const offLang = onLangChange(() => { renderLeft(); renderRight(); });
  return () => { closed = true; unsubscribe(); offLang(); };
}

