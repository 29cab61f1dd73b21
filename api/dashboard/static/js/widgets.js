// Pieces several views share: badges, places, figures, tiles, the acknowledge/resolve dialog.

import { describe } from "./api.js";
import { h, $, replace } from "./dom.js";
import { fmtDuration, fmtNumber, fmtTime, t } from "./i18n.js";
import {
  acknowledge,
  alertClass,
  buildingName,
  canAct,
  community,
  deviceOf,
  resolve,
  store,
  timeZoneOf,
} from "./store.js";

export const sevBadge = (severity) => h("span", { class: ["sev", severity] }, t(`severity.${severity}`));
export const stateBadge = (state) => h("span", { class: ["state", state] }, t(`state.${state}`));
export const connBadge = (c) => h("span", { class: ["conn", c] }, t(`conn.${c}`));

/** A building's registered name, or "B3 栋" / "Building B3" for a bare id. */
export function buildingLabel(communityId, building) {
  const name = buildingName(communityId, building);
  return name && name !== building ? name : t("where.building", { b: building });
}

export function placeText(communityId, building, unit, floor) {
  const parts = [];
  if (building) parts.push(buildingLabel(communityId, building));
  if (floor !== null && floor !== undefined) parts.push(t("where.floor", { f: floor }));
  if (unit) parts.push(t("where.unit", { u: unit }));
  return parts.length ? parts.join(" · ") : t("where.none");
}

export function alertPlace(alert) {
  const device = deviceOf(alert.device_id);
  return placeText(
    alert.community_id,
    alert.building || device?.building,
    device?.unit,
    device?.floor,
  );
}

export function communityName(id) {
  const c = community(id);
  return c ? c.name : id;
}

/** Seconds since an ISO time (never negative: a device clock may run ahead). */
export function ageSeconds(iso) {
  return Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
}

// --- service figures ------------------------------------------------------------------

function figure(label, value, cls, id) {
  return h("div", { class: ["figure", cls], dataset: { figure: id } },
    h("div", { class: "value" }, value), h("div", { class: "label" }, label));
}

export function renderFigures(el) {
  const f = store.figures;
  const c = community(store.current);
  if (!f || !c) {
    replace(el);
    return;
  }
  const offline = h("span", {}, String(f.devices_offline), " ", h("small", {}, `/ ${f.devices}`));
  replace(
    el,
    figure(t("figure.open"), String(f.open_alerts), f.open_alerts ? "warn" : "", "open"),
    figure(t("figure.critical"), String(f.open_critical), f.open_critical ? "bad" : "", "critical"),
    figure(t("figure.acknowledged"), String(f.acknowledged_alerts), "", "acknowledged"),
    figure(t("figure.today"), String(f.alerts_today), "", "today"),
    figure(t("figure.ackToday"), fmtDuration(f.ack_median_s_today), "", "ack-today"),
    figure(t("figure.ackMonth"), fmtDuration(f.ack_median_s_month), "", "ack-month"),
    figure(t("figure.resolveToday"), fmtDuration(f.resolve_median_s_today), "", "resolve-today"),
    figure(t("figure.resolveMonth"), fmtDuration(f.resolve_median_s_month), "", "resolve-month"),
    figure(t("figure.offline"), offline, f.devices_offline ? "warn" : "", "offline"),
    h("div", { class: "stamp muted" },
      t("figure.updated", { community: c.name, time: fmtTime(f.at, c.time_zone, "time"), tz: c.time_zone })),
  );
}

// --- building tiles ---------------------------------------------------------------------

export function buildingHref(communityId, buildingId) {
  return `#/building/${encodeURIComponent(communityId)}/${encodeURIComponent(buildingId ?? "~")}`;
}

function countCell(value, cls) {
  return h("td", { class: ["num", value ? cls : ""] }, String(value));
}

export function renderTile(communityId, tile, { compact = false } = {}) {
  const name = tile.id === null ? t("tiles.unplaced")
    : tile.registered && tile.name && tile.name !== tile.id ? tile.name : t("where.building", { b: tile.id });
  const classes = ["tile"];
  if (tile.worst_severity) classes.push(`sev-${tile.worst_severity}`);
  if (tile.offline) classes.push("has-offline");
  const rows = Object.entries(tile.by_class).map(([cls, c]) =>
    h("tr", {},
      h("th", {}, t(`class.${cls}`)),
      h("td", { class: "num" }, `${c.online}/${c.devices}`),
      countCell(c.offline, "bad"),
      countCell(c.alerting, "warn")));
  return h("a", {
    class: classes,
    href: buildingHref(communityId, tile.id),
    dataset: { building: tile.id ?? "~", worst: tile.worst_severity || "" },
  },
    h("h3", {}, h("span", {}, name),
      tile.alerts ? sevBadge(tile.worst_severity) : null),
    h("div", { class: "big" },
      h("span", {}, `${tile.online}/${tile.devices}`, h("small", {}, t("tiles.online"))),
      h("span", { class: tile.offline ? "bad" : "" }, String(tile.offline), h("small", {}, t("tiles.offline"))),
      h("span", { class: tile.alerting || tile.alerts ? "warn" : "" }, String(tile.alerts),
        h("small", {}, t("tiles.alerts")))),
    compact || !rows.length ? null : h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}), h("th", {}, t("tiles.online")),
        h("th", {}, t("tiles.offline")), h("th", {}, t("tiles.alerting")))),
      h("tbody", {}, rows)),
  );
}

export function renderTiles(communityId, tiles, options) {
  if (!tiles.length) return h("p", { class: "empty" }, t("tiles.empty"));
  return h("div", { class: "tiles" }, tiles.map((tile) => renderTile(communityId, tile, options)));
}

// --- alert rows ------------------------------------------------------------------------

export function alertSortKey(a, b) {
  const order = ["critical", "major", "minor", "warning", "info"];
  const bySeverity = order.indexOf(a.severity) - order.indexOf(b.severity);
  if (bySeverity) return bySeverity;
  return new Date(b.raised_at) - new Date(a.raised_at);
}

export function actionButtons(alert) {
  if (!canAct()) return null;
  const buttons = [];
  if (alert.state === "open" || alert.state === "suppressed") {
    buttons.push(h("button", {
      type: "button", class: ["ack", "small", alert.severity === "critical" ? "primary" : ""],
      on: { click: (e) => { e.stopPropagation(); openAction(alert, "ack"); } },
    }, t("action.ack")));
  }
  if (alert.state !== "resolved") {
    buttons.push(h("button", {
      type: "button", class: "resolve small",
      on: { click: (e) => { e.stopPropagation(); openAction(alert, "resolve"); } },
    }, t("action.resolve")));
  }
  return buttons;
}

export function alertRow(alert, { showCommunity = true } = {}) {
  const tz = timeZoneOf(alert.community_id);
  const cls = alertClass(alert);
  const arrived = store.arrived.get(alert.id);
  const fresh = arrived && Date.now() - arrived < 2500;
  const subject = alert.device_id || alert.subject;
  return h("tr", {
    class: ["alert-row", fresh ? "arrived" : ""],
    dataset: { alertId: String(alert.id), state: alert.state, severity: alert.severity, community: alert.community_id },
    on: { click: () => { location.hash = `#/alert/${alert.id}`; } },
  },
    h("td", {}, sevBadge(alert.severity)),
    h("td", {},
      h("div", { class: "title" }, alert.title),
      h("div", { class: "sub" }, `${t(`class.${cls}`)} · ${subject}`)),
    h("td", {},
      h("div", {}, alertPlace(alert)),
      showCommunity ? h("div", { class: "sub" }, communityName(alert.community_id)) : null),
    h("td", {}, stateBadge(alert.state)),
    h("td", { class: "num hide-narrow" }, fmtTime(alert.raised_at, tz, "datetime")),
    h("td", { class: "num age", dataset: { since: alert.raised_at } }, fmtDuration(ageSeconds(alert.raised_at))),
    h("td", { class: "num hide-narrow" }, alert.occurrences > 1 ? `×${alert.occurrences}` : ""),
    h("td", { class: "actions" }, actionButtons(alert)),
  );
}

export function alertTable(alerts, options) {
  if (!alerts.length) return h("p", { class: "empty" }, t("board.empty"));
  return h("table", { class: "alerts" },
    h("thead", {}, h("tr", {},
      h("th", {}, t("col.severity")), h("th", {}, t("col.alert")), h("th", {}, t("col.where")),
      h("th", {}, t("col.state")), h("th", { class: "hide-narrow" }, t("col.raised")),
      h("th", {}, t("col.age")), h("th", { class: "hide-narrow" }, t("col.count")), h("th", {}))),
    h("tbody", {}, alerts.map((a) => alertRow(a, options))));
}

/** Ages in place, without rebuilding the rows. */
export function tickAges(root) {
  for (const cell of root.querySelectorAll("td.age[data-since]")) {
    cell.textContent = fmtDuration(ageSeconds(cell.dataset.since));
  }
}

// --- acknowledge / resolve -------------------------------------------------------------

let pending = null;

export function openAction(alert, action) {
  const dialog = $("#action-dialog");
  pending = { alert, action };
  $("#action-title").textContent = t(action === "ack" ? "action.ackTitle" : "action.resolveTitle");
  $("#action-subject").textContent = `${t(`severity.${alert.severity}`)} · ${alert.title} · ${alert.device_id || alert.subject}`;
  $("#action-note-label").textContent = t(action === "ack" ? "action.noteOptional" : "action.noteRequired");
  $("#action-confirm").textContent = t(action === "ack" ? "action.ack" : "action.resolve");
  $("#action-note").value = "";
  $("#action-note").required = action === "resolve";
  $("#action-error").hidden = true;
  dialog.showModal();
  $("#action-note").focus();
}

export function wireActionDialog() {
  const dialog = $("#action-dialog");
  $("#action-cancel").addEventListener("click", () => dialog.close());
  $("#action-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!pending) return;
    const note = $("#action-note").value.trim();
    const error = $("#action-error");
    if (pending.action === "resolve" && !note) {
      error.textContent = t("action.needNote");
      error.hidden = false;
      return;
    }
    const confirm = $("#action-confirm");
    confirm.disabled = true;
    try {
      if (pending.action === "ack") await acknowledge(pending.alert.id, note);
      else await resolve(pending.alert.id, note);
      pending = null;
      dialog.close();
    } catch (e) {
      error.textContent = t("action.failed", { msg: describe(e) });
      error.hidden = false;
    } finally {
      confirm.disabled = false;
    }
  });
}

/** Options of a select, rebuilt only when they change (an open list stays open). */
export function syncOptions(select, options, value) {
  const signature = JSON.stringify(options);
  if (select.dataset.signature !== signature) {
    replace(select, options.map(([v, label]) => h("option", { value: v }, label)));
    select.dataset.signature = signature;
  }
  select.value = options.some(([v]) => v === value) ? value : "";
}

export function loadingBlock() {
  return h("p", { class: "empty" }, t("loading"));
}

export function errorBlock(error) {
  if (error && error.status === 404) return h("p", { class: "empty", dataset: { notFound: "1" } }, t("notfound"));
  return h("p", { class: "empty error" }, t("error.load", { msg: describe(error) }));
}

export { fmtNumber };
