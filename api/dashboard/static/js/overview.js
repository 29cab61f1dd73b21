// A community at a glance (buildings as tiles, every device with its link and battery)
// and one building (its tiles per class, its alerts, its devices).

import { h, replace } from "./dom.js";
import { fmtNumber, fmtTime, onLangChange, t } from "./i18n.js";
import {
  CLASSES,
  community,
  loadDevices,
  selectCommunity,
  store,
  subscribe,
} from "./store.js";
import {
  alertSortKey,
  alertTable,
  connBadge,
  errorBlock,
  loadingBlock,
  placeText,
  renderTile,
  renderTiles,
  syncOptions,
} from "./widgets.js";

// Devices are listed from the registry; re-read this often while the page is open.
const DEVICES_REFRESH_MS = 60_000;
// Rows drawn at once; a 2,000-device community shows more on request.
const PAGE_ROWS = 300;

function deviceAlerts() {
  const counts = new Map();
  for (const a of store.alerts.values()) {
    if (a.device_id && (a.state === "open" || a.state === "acknowledged")) {
      counts.set(a.device_id, (counts.get(a.device_id) || 0) + 1);
    }
  }
  return counts;
}

function deviceRow(device, alerting, timeZone) {
  const battery = device.battery === null ? t("none") : `${fmtNumber(device.battery)}%`;
  return h("tr", { dataset: { deviceId: device.id, connectivity: device.connectivity } },
    h("td", {}, h("a", { href: `#/device/${encodeURIComponent(device.id)}` }, device.id)),
    h("td", { class: "hide-narrow" }, device.name || ""),
    h("td", {}, t(`class.${device.device_class}`)),
    h("td", {}, placeText(device.community_id, device.building, device.unit, device.floor)),
    h("td", {}, t(`devstate.${device.state}`)),
    h("td", {}, connBadge(device.connectivity)),
    h("td", { class: "num" }, fmtTime(device.last_received_at, timeZone, "datetime")),
    h("td", { class: ["num", device.battery !== null && device.battery < 20 ? "error" : ""] }, battery),
    h("td", { class: "num" }, alerting ? h("span", { class: "state open" }, String(alerting)) : ""));
}

/** The device table with its own filters; ``only`` narrows it (a building). */
function deviceList(communityId, only) {
  const filters = { cls: "", conn: "", text: "" };
  let limit = PAGE_ROWS;
  const body = h("div");
  const search = h("input", { type: "search", class: "device-search" });
  const cls = h("select", {});
  const conn = h("select", {});
  const panel = h("section", { class: "panel" }, h("h2", { class: "devices-title" }),
    h("div", { class: "filters" }, search, cls, conn), body);
  search.addEventListener("input", () => { filters.text = search.value.trim().toLowerCase(); limit = PAGE_ROWS; render(); });
  cls.addEventListener("change", () => { filters.cls = cls.value; render(); });
  conn.addEventListener("change", () => { filters.conn = conn.value; render(); });

  function render() {
    panel.querySelector(".devices-title").textContent = t("overview.devices");
    search.placeholder = t("overview.search");
    syncOptions(cls, [["", `${t("filter.class")}: ${t("filter.all")}`],
      ...CLASSES.map((c) => [c, t(`class.${c}`)])], filters.cls);
    syncOptions(conn, [["", `${t("col.conn")}: ${t("filter.all")}`],
      ...["online", "offline", "silent", "never_seen"].map((c) => [c, t(`conn.${c}`)])], filters.conn);
    const c = community(communityId);
    const devices = [...store.devices.values()]
      .filter((d) => d.community_id === communityId && d.state !== "decommissioned")
      .filter((d) => !only || only(d))
      .filter((d) => !filters.cls || d.device_class === filters.cls)
      .filter((d) => !filters.conn || d.connectivity === filters.conn)
      .filter((d) => !filters.text || d.id.toLowerCase().includes(filters.text) || (d.name || "").toLowerCase().includes(filters.text))
      .sort((a, b) => a.id.localeCompare(b.id));
    // Until the community's list has come, the cache holds only the devices the board
    // fetched one by one for its alerts: a table of those would look complete.
    if (!loaded) {
      replace(body, loadingBlock());
      return;
    }
    const counts = deviceAlerts();
    const rows = devices.slice(0, limit).map((d) => deviceRow(d, counts.get(d.id), c?.time_zone));
    const more = devices.length - limit;
    replace(body,
      h("table", { class: "devices" },
        h("thead", {}, h("tr", {},
          h("th", {}, t("col.device")), h("th", { class: "hide-narrow" }, t("col.name")),
          h("th", {}, t("col.class")), h("th", {}, t("col.place")), h("th", {}, t("col.deviceState")),
          h("th", {}, t("col.conn")), h("th", {}, t("col.lastSeen")), h("th", {}, t("col.battery")),
          h("th", {}, t("col.alerting")))),
        h("tbody", {}, rows)),
      more > 0 ? h("button", { type: "button", on: { click: () => { limit += PAGE_ROWS; render(); } } },
        t("overview.showMore", { n: more })) : null);
  }

  let loaded = false;
  const load = () => loadDevices(communityId)
    .then(() => { loaded = true; render(); })
    .catch((error) => replace(body, errorBlock(error)));
  load();
  const timer = setInterval(load, DEVICES_REFRESH_MS);
  return { panel, render, stop: () => clearInterval(timer) };
}

function ensureCommunity(container, communityId) {
  if (communityId && !store.communities.has(communityId)) {
    replace(container, h("section", { class: "panel" }, errorBlock({ status: 404 })));
    return false;
  }
  if (communityId) selectCommunity(communityId);
  return true;
}

export function overviewView(container, { communityId }) {
  if (!ensureCommunity(container, communityId)) return () => {};
  const id = communityId || store.current;
  if (!id) {
    replace(container, h("p", { class: "empty" }, t("tiles.empty")));
    return () => {};
  }
  const tiles = h("section", { class: "panel", id: "overview-tiles" });
  const list = deviceList(id);
  replace(container, h("div", { class: "stack" }, tiles, list.panel));

  function renderTilesPanel() {
    const c = community(id);
    const title = h("h2", {}, `${c ? c.name : id} · ${t("tiles.title")}`);
    if (store.overview && store.overview.community_id === id) {
      replace(tiles, title, renderTiles(id, store.overview.buildings));
    } else if (store.communityError) {
      replace(tiles, title, errorBlock(store.communityError));
    } else {
      replace(tiles, title, loadingBlock());
    }
  }
  const render = () => { renderTilesPanel(); list.render(); };
  render();
  const unsubscribe = subscribe((changes) => {
    if (changes.has("community") || changes.has("buildings")) renderTilesPanel();
    if (changes.has("devices") || changes.has("alerts")) list.render();
  });
  const offLang = onLangChange(render);
  return () => { unsubscribe(); offLang(); list.stop(); };
}

export function buildingView(container, { communityId, buildingId }) {
  if (!ensureCommunity(container, communityId)) return () => {};
  const building = buildingId === "~" ? null : buildingId;
  const crumbs = h("div", { class: "crumbs" });
  const head = h("section", { class: "panel", id: "building-tile" });
  const alerts = h("section", { class: "panel", id: "building-alerts" });
  const inBuilding = (d) => (d.building || null) === building;
  const list = deviceList(communityId, inBuilding);
  replace(container, h("div", { class: "stack" }, crumbs, h("div", { class: "detail" }, head, alerts), list.panel));

  function render() {
    replace(crumbs, h("a", { href: `#/overview/${encodeURIComponent(communityId)}` }, t("overview.back")));
    const tile = store.overview && store.overview.community_id === communityId
      ? store.overview.buildings.find((b) => b.id === building) : null;
    if (tile) replace(head, renderTile(communityId, tile));
    else if (store.overview && store.overview.community_id === communityId) replace(head, errorBlock({ status: 404 }));
    else replace(head, loadingBlock());
    const shown = [...store.alerts.values()]
      .filter((a) => a.community_id === communityId && a.state !== "suppressed")
      .filter((a) => ((a.building || store.devices.get(a.device_id)?.building) || null) === building)
      .sort(alertSortKey);
    replace(alerts, h("h2", {}, t("overview.alerts")), alertTable(shown, { showCommunity: false }));
    list.render();
  }
  render();
  const unsubscribe = subscribe(render);
  const offLang = onLangChange(render);
  return () => { unsubscribe(); offLang(); list.stop(); };
}
