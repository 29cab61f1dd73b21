// One device: where it is, its state and link, its latest values, charts of recent
// readings (raw for hours, hourly and daily rollups for days and weeks), events, alerts.

import { api, apiAll, enc } from "./api.js";
import { lineChart } from "./chart.js";
import { h, replace } from "./dom.js";
import { fmtDuration, fmtNumber, fmtTime, onLangChange, t, tOr, unitLabel } from "./i18n.js";
import { store, subscribe, timeZoneOf } from "./store.js";
import { alertTable, connBadge, errorBlock, loadingBlock, placeText } from "./widgets.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
// raw: every reading; hourly and daily: the rollups (mean line, min-max band).
const RANGES = {
  "6h": { span: 6 * HOUR, bucket: null },
  "7d": { span: 7 * DAY, bucket: "1h" },
  "30d": { span: 30 * DAY, bucket: "1d" },
};
// What a person looks at first for each class; anything else after, signal last.
const FIRST = {
  wearable: ["heart_rate", "spo2", "skin_temperature", "steps", "worn"],
  fire: ["smoke_obscuration", "temperature", "gas_lel", "residual_current", "cable_temperature",
    "pipe_pressure", "tank_level", "extinguisher_pressure", "door_open"],
  locker: ["temperature", "occupied", "door_open", "mains_power", "overdue"],
  access: ["door_open", "tamper"],
};
const NOT_CHARTED = new Set(["lat", "lon", "compartments"]);
const REFRESH_MS = 60_000;

function chartedMetrics(device, latest) {
  const first = FIRST[device.device_class] || [];
  const rank = (m) => (first.includes(m) ? first.indexOf(m) : m === "rssi" ? 1000 : 100);
  return latest.filter((m) => !NOT_CHARTED.has(m.metric)).sort((a, b) => rank(a.metric) - rank(b.metric));
}

async function seriesFor(device, metric, range, end) {
  const start = new Date(end - RANGES[range].span);
  const window = { metric, start, end: new Date(end) };
  const bucket = RANGES[range].bucket;
  if (!bucket) {
    const rows = await apiAll(`/devices/${enc(device.id)}/readings`, window, { max: 50_000 });
    return { points: rows.map((r) => ({ t: new Date(r.ts).getTime(), v: r.value })), band: [] };
  }
  const [avg, lo, hi] = await Promise.all(["avg", "min", "max"].map((agg) =>
    apiAll(`/devices/${enc(device.id)}/aggregates`, { ...window, bucket, agg }, { max: 5000 })));
  const point = (r) => ({ t: new Date(r.bucket).getTime(), v: r.value });
  const low = new Map(lo.map((r) => [r.bucket, r.value]));
  return {
    points: avg.map(point),
    band: hi.map((r) => ({ t: new Date(r.bucket).getTime(), hi: r.value, lo: low.get(r.bucket) ?? r.value })),
  };
}

export function deviceView(container, { deviceId }) {
  const info = h("section", { class: "panel", id: "device-info" });
  const charts = h("section", { class: "panel", id: "device-charts" });
  const events = h("section", { class: "panel", id: "device-events" });
  const alertsPanel = h("section", { class: "panel", id: "device-alerts" });
  replace(container, h("div", { class: "stack" },
    h("div", { class: "crumbs", id: "device-crumbs" }),
    h("div", { class: "detail" }, h("div", { class: "stack" }, info, alertsPanel, events), charts)));
  let range = sessionStorage.getItem("sc.deviceRange") || "6h";
  if (!RANGES[range]) range = "6h";
  let device = null;
  let latest = [];
  let data = null;
  let eventRows = [];
  let failed = null;
  let loading = 0;

  function tz() {
    return timeZoneOf(device?.community_id);
  }

  function renderInfo() {
    const crumbs = container.querySelector("#device-crumbs");
    if (failed) {
      replace(crumbs, h("a", { href: "#/board" }, t("detail.back")));
      return replace(info, errorBlock(failed));
    }
    if (!device) return replace(info, loadingBlock());
    replace(crumbs,
      h("a", { href: `#/overview/${encodeURIComponent(device.community_id)}` }, t("overview.back")),
      device.building !== null ? [" · ", h("a", { href: `#/building/${encodeURIComponent(device.community_id)}/${encodeURIComponent(device.building)}` },
        placeText(device.community_id, device.building, null, null))] : null);
    replace(info,
      h("h2", {}, `${device.id} · ${device.name || ""}`),
      h("dl", { class: "facts" },
        h("dt", {}, t("col.class")), h("dd", {}, t(`class.${device.device_class}`)),
        h("dt", {}, t("device.model")), h("dd", {}, device.model || t("none")),
        h("dt", {}, t("col.place")), h("dd", {}, placeText(device.community_id, device.building, device.unit, device.floor)),
        h("dt", {}, t("col.deviceState")), h("dd", {}, t(`devstate.${device.state}`)),
        h("dt", {}, t("col.conn")), h("dd", {}, connBadge(device.connectivity)),
        h("dt", {}, t("col.lastSeen")), h("dd", {}, fmtTime(device.last_received_at, tz(), "datetime")),
        h("dt", {}, t("device.interval")), h("dd", {}, fmtDuration(device.expected_interval_s)),
        h("dt", {}, t("col.battery")), h("dd", {}, device.battery === null ? t("none") : `${fmtNumber(device.battery)}%`)),
      h("h3", {}, t("device.latest")),
      h("div", { class: "latest" }, latest.map((m) => h("div", { dataset: { metric: m.metric } },
        h("small", {}, tOr(`metric.${m.metric}`, m.metric)),
        h("b", {}, `${fmtNumber(m.value)} ${unitLabel(m.unit)}`),
        h("small", {}, fmtTime(m.ts, tz(), "time"))))));
    const shown = [...store.alerts.values(), ...store.resolved.values()]
      .filter((a) => a.device_id === device.id)
      .sort((a, b) => new Date(b.raised_at) - new Date(a.raised_at))
      .slice(0, 20);
    replace(alertsPanel, h("h2", {}, t("device.alerts")), alertTable(shown, { showCommunity: false }));
    replace(events, h("h2", {}, t("device.events")),
      eventRows.length ? h("table", {}, h("tbody", {}, eventRows.slice(-50).reverse().map((e) => h("tr", {},
        h("td", { class: "num" }, fmtTime(e.ts, tz(), "datetime")), h("td", {}, e.event),
        h("td", { class: "muted" }, JSON.stringify(e.data))))))
        : h("p", { class: "muted" }, t("device.noEvents")));
  }

  function renderCharts() {
    if (failed) return replace(charts);
    const tabs = h("div", { class: "row range-tabs" }, Object.keys(RANGES).map((key) =>
      h("button", { type: "button", "aria-pressed": String(key === range), dataset: { range: key },
        on: { click: () => { range = key; sessionStorage.setItem("sc.deviceRange", key); loadCharts(); } } },
      t(`device.range.${key}`))));
    if (!data || !device) return replace(charts, tabs, loadingBlock());
    const bucket = RANGES[data.range].bucket;
    const gap = bucket === "1h" ? 3 * HOUR : bucket === "1d" ? 3 * DAY : Math.max(180_000, 3 * device.expected_interval_s * 1000);
    replace(charts, tabs, data.series.map(({ metric, unit, points, band }) =>
      h("div", { class: "chart-block", dataset: { metric } },
        h("h4", {}, tOr(`metric.${metric}`, metric)),
        lineChart({ series: [{ points }], band, start: data.start, end: data.end, timeZone: tz(),
          unit: unitLabel(unit), gapMs: gap, height: 160 }))));
  }

  async function loadCharts() {
    const mine = ++loading;
    data = data && data.range === range ? data : null;
    renderCharts();
    const end = Date.now();
    try {
      const metrics = chartedMetrics(device, latest);
      const series = await Promise.all(metrics.map(async (m) => ({
        metric: m.metric, unit: m.unit, ...(await seriesFor(device, m.metric, range, end)),
      })));
      if (mine !== loading) return;
      data = { range, start: end - RANGES[range].span, end, series };
    } catch (error) {
      if (mine !== loading) return;
      replace(charts, errorBlock(error));
      return;
    }
    renderCharts();
  }

  async function load() {
    try {
      const [d, l] = await Promise.all([api(`/devices/${enc(deviceId)}`), api(`/devices/${enc(deviceId)}/latest`)]);
      device = d;
      latest = l.data;
      store.devices.set(d.id, d);
      const since = new Date(Date.now() - 7 * DAY);
      const [ev, alerts] = await Promise.all([
        apiAll(`/devices/${enc(deviceId)}/events`, { start: since, end: new Date() }, { max: 1000 }),
        api("/alerts", { params: { device_id: d.id, limit: 20 } }),
      ]);
      eventRows = ev;
      for (const a of alerts.data) if (a.state === "resolved" && !store.alerts.has(a.id)) store.resolved.set(a.id, a);
    } catch (error) {
      failed = error;
    }
    renderInfo();
    if (device) await loadCharts();
  }

  renderInfo();
  renderCharts();
  load();
  const timer = setInterval(() => { if (device && !failed) load(); }, REFRESH_MS);
  const unsubscribe = subscribe((changes) => { if (changes.has("alerts")) renderInfo(); });
  const offLang = onLangChange(() => { renderInfo(); renderCharts(); });
  return () => { clearInterval(timer); unsubscribe(); offLang(); };
}
