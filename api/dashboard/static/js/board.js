// The live alert board: alerts not resolved, by severity then age (newest first within a
// severity), filters, acknowledge and resolve in place; the selected community's
// buildings beside it on a wide screen.

import { h, replace } from "./dom.js";
import { onLangChange, t } from "./i18n.js";
import {
  CLASSES,
  SEVERITIES,
  alertClass,
  community,
  loadResolvedSince,
  notify,
  store,
  subscribe,
} from "./store.js";
import {
  alertSortKey,
  alertTable,
  errorBlock,
  loadingBlock,
  renderTiles,
  syncOptions,
  tickAges,
} from "./widgets.js";

const FILTER_KEY = "sc.boardFilters";
const DEFAULTS = { community: "", building: "", cls: "", severity: "", state: "attention" };
const STATES = {
  attention: ["open", "acknowledged"],
  open: ["open"],
  acknowledged: ["acknowledged"],
  suppressed: ["suppressed"],
  resolved: ["resolved"],
};
const DAY_MS = 86_400_000;

function loadFilters() {
  try {
    return { ...DEFAULTS, ...JSON.parse(sessionStorage.getItem(FILTER_KEY) || "{}") };
  } catch {
    return { ...DEFAULTS };
  }
}

function buildingOf(alert) {
  return alert.building || store.devices.get(alert.device_id)?.building || "";
}

export function matches(alert, f) {
  if (f.community && alert.community_id !== f.community) return false;
  if (f.building && buildingOf(alert) !== (f.building === "~" ? "" : f.building)) return false;
  if (f.cls && alertClass(alert) !== f.cls) return false;
  if (f.severity && SEVERITIES.indexOf(alert.severity) > SEVERITIES.indexOf(f.severity)) return false;
  return (STATES[f.state] || STATES.attention).includes(alert.state);
}

export function boardView(container) {
  const filters = loadFilters();
  const selects = {};
  const onChange = (key) => (event) => {
    filters[key] = event.target.value;
    sessionStorage.setItem(FILTER_KEY, JSON.stringify(filters));
    if (key === "state" && filters.state === "resolved") {
      loadResolvedSince(new Date(Date.now() - DAY_MS)).catch(() => {});
    }
    notify("filters");
  };
  const filterBar = h("div", { class: "filters" },
    ["community", "building", "cls", "severity", "state"].map((key) => {
      const select = h("select", { id: `filter-${key}`, on: { change: onChange(key) } });
      selects[key] = select;
      return h("label", {}, h("span", { class: "filter-label", dataset: { key } }), select);
    }),
    h("span", { class: "spacer" }),
    h("span", { id: "board-count", class: "muted" }));
  const table = h("div", { id: "board-table" });
  const aside = h("aside", { class: "panel", id: "board-tiles" });
  const main = h("section", { class: "panel" },
    h("h2", { id: "board-title" }), filterBar, table);
  replace(container, h("div", { class: "board-layout" }, main, aside));

  function renderFilters() {
    const labels = { community: "filter.community", building: "filter.building", cls: "filter.class",
      severity: "filter.severity", state: "filter.state" };
    for (const el of filterBar.querySelectorAll(".filter-label")) el.textContent = t(labels[el.dataset.key]);
    const all = [["", t("filter.all")]];
    syncOptions(selects.community,
      [...all, ...[...store.communities.values()].map((c) => [c.id, c.name])], filters.community);
    const buildings = new Set();
    for (const a of store.alerts.values()) {
      if (!filters.community || a.community_id === filters.community) buildings.add(buildingOf(a));
    }
    syncOptions(selects.building,
      [...all, ...[...buildings].sort().map((b) => [b || "~", b || t("where.none")])], filters.building);
    syncOptions(selects.cls, [...all, ...[...CLASSES, "other"].map((c) => [c, t(`class.${c}`)])], filters.cls);
    syncOptions(selects.severity,
      [...all, ["critical", t("severity.critical")],
        ...SEVERITIES.slice(1, 4).map((sv) => [sv, t("filter.minSeverity", { sev: t(`severity.${sv}`) })])],
      filters.severity);
    syncOptions(selects.state, [
      ["attention", `${t("state.open")} + ${t("state.acknowledged")}`],
      ["open", t("state.open")], ["acknowledged", t("state.acknowledged")],
      ["suppressed", t("state.suppressed")], ["resolved", t("filter.resolvedToday")],
    ], filters.state);
    if (!selects.state.value) selects.state.value = "attention";
  }

  function renderTable() {
    if (!STATES[filters.state]) filters.state = "attention";
    const source = filters.state === "resolved"
      ? [...store.resolved.values()].filter((a) => Date.now() - new Date(a.resolved_at || a.raised_at) < DAY_MS)
      : [...store.alerts.values()];
    const shown = source.filter((a) => matches(a, filters)).sort(alertSortKey);
    replace(table, store.syncedAt ? alertTable(shown, { showCommunity: store.communities.size > 1 }) : loadingBlock());
    replace(container.querySelector("#board-count"), t("board.count", { n: shown.length }));
    replace(container.querySelector("#board-title"), t("board.title"));
  }

  function renderAside() {
    const c = community(store.current);
    const title = h("h2", {}, `${t("tiles.title")} · ${c ? c.name : ""}`);
    if (store.overview && store.overview.community_id === store.current) {
      replace(aside, title, renderTiles(store.current, store.overview.buildings, { compact: false }));
    } else if (store.communityError) {
      replace(aside, title, errorBlock(store.communityError));
    } else {
      replace(aside, title, loadingBlock());
    }
  }

  function render() {
    renderFilters();
    renderTable();
    renderAside();
  }

  render();
  if (filters.state === "resolved") loadResolvedSince(new Date(Date.now() - DAY_MS)).catch(() => {});
  const unsubscribe = subscribe((changes) => {
    if (changes.has("community") || changes.has("buildings")) renderAside();
    renderFilters();
    renderTable();
  });
  const offLang = onLangChange(render);
  const ticker = setInterval(() => {
    tickAges(table);
    for (const row of table.querySelectorAll("tr.arrived")) {
      const arrived = store.arrived.get(Number(row.dataset.alertId));
      if (!arrived || Date.now() - arrived > 2500) row.classList.remove("arrived");
    }
  }, 5000);
  return () => {
    unsubscribe();
    offLang();
    clearInterval(ticker);
  };
}
