// Incidents (#/incidents): each open incident's stage and the countdown to its next
// target (arrival within 3 min for a fire), who was sent and where they are; dispatch,
// reassign and record an arrival in place. Beside it, who is on duty in each team, with
// a warning for a team that has nobody (docs/incidents.md).

import { api, describe, enc } from "./api.js";
import { h, replace } from "./dom.js";
import { fmtTime, onLangChange, t } from "./i18n.js";
import { store, timeZoneOf } from "./store.js";

// The list and the duty board are fetched this often; the countdowns tick every second.
const REFRESH_MS = 5_000;
const TICK_MS = 1_000;
// The last steps of an incident's timeline on its card; the API has them all.
const TIMELINE_STEPS = 6;

function secondsBetween(from, to) {
  return to ? `${Math.round((new Date(to) - new Date(from)) / 1000)} s` : "–";
}

function closedTable(incidents) {
  const done = incidents.filter((i) => i.resolved_at);
  if (!done.length) return null;
  return h("table", { id: "closed-incidents", class: "closed" },
    h("thead", null, h("tr", null, ["type", "opened", "dispatched", "arrived", "resolved"].map(
      (k) => h("th", null, t(`closed.${k}`))))),
    h("tbody", null, done.map((i) => {
      const tz = timeZoneOf(i.community_id);
      return h("tr", { dataset: { incidentId: i.id } },
        h("td", null, `${t(`incident.type.${i.incident_type}`)} ${i.building || ""}`),
        h("td", null, fmtTime(i.opened_at, tz, "time")),
        h("td", null, secondsBetween(i.opened_at, i.dispatched_at)),
        h("td", { class: "arrived" }, secondsBetween(i.opened_at, i.arrived_at)),
        h("td", null, secondsBetween(i.opened_at, i.resolved_at)));
    })));
}

export function countdownText(dueAt, now = Date.now()) {
  const left = Math.round((new Date(dueAt).getTime() - now) / 1000);
  const abs = Math.abs(left);
  const text = `${Math.floor(abs / 60)}:${String(abs % 60).padStart(2, "0")}`;
  return left < 0 ? `-${text}` : text;
}

function tickCountdowns(root) {
  for (const el of root.querySelectorAll(".countdown[data-due]")) {
    const overdue = new Date(el.dataset.due).getTime() < Date.now();
    el.textContent = countdownText(el.dataset.due);
    el.classList.toggle("overdue", overdue);
  }
}

function dispatchRow(d, tz) {
  return h("li", { class: `dispatch state-${d.state}`, dataset: { responder: d.responder_id } },
    h("span", { class: "who" }, d.responder_name), " ",
    h("span", { class: "state" }, t(`dispatch.${d.state}`)), " ",
    h("span", { class: "muted" }, fmtTime(d.dispatched_at, tz, "time")));
}

function options(duty) {
  const teams = duty ? duty.teams.map((tm) => h("option", { value: `team:${tm.id}` },
    `${t("incident.team")} ${tm.name}`)) : [];
  const people = duty ? duty.responders.map((r) => h("option", { value: `resp:${r.id}` },
    `${r.name} (${t(`responder.${r.role}`)})`)) : [];
  return [...teams, ...people];
}

function nameOf(incident, responderId) {
  return incident.dispatches.find((d) => d.responder_id === responderId)?.responder_name || responderId;
}

function incidentCard(incident, duty, act) {
  const tz = timeZoneOf(incident.community_id);
  const deadline = incident.next_deadline;
  const open = incident.dispatches.filter((d) => d.state === "sent" || d.state === "accepted");
  const target = h("select", { class: "dispatch-target", "aria-label": t("incident.dispatch") },
    options(duty));
  const from = h("select", { class: "reassign-from", "aria-label": t("incident.reassignFrom") },
    open.map((d) => h("option", { value: d.responder_id }, d.responder_name)));
  const to = h("select", { class: "reassign-to", "aria-label": t("incident.reassignTo") },
    duty ? duty.responders.map((r) => h("option", { value: r.id }, r.name)) : []);
  const arrived = h("select", { class: "arrival-who", "aria-label": t("incident.arrival") },
    open.map((d) => h("option", { value: d.responder_id }, d.responder_name)));
  const path = `/incidents/${incident.id}`;
  const body = () => {
    const [kind, id] = target.value.split(":");
    return kind === "team" ? { team_id: id } : { responder_ids: [id] };
  };
  return h("article", { class: `incident type-${incident.incident_type}`, dataset: { incidentId: incident.id } },
    h("header", null,
      h("strong", null, t(`incident.type.${incident.incident_type}`)), " ",
      h("span", null, incident.title), " ",
      incident.building ? h("span", { class: "muted" }, incident.building) : null),
    h("p", { class: "stage-line" },
      h("span", { class: `stage stage-${incident.stage}` }, t(`incident.stage.${incident.stage}`)),
      deadline ? h("span", { class: "deadline" }, " ",
        t(`incident.target.${deadline.target}`), " ",
        h("span", { class: "countdown", dataset: { due: deadline.due_at } },
          countdownText(deadline.due_at))) : null,
      incident.escalations ? h("span", { class: "escalations" }, " ",
        t("incident.escalations", { n: incident.escalations })) : null),
    h("ul", { class: "dispatches" }, incident.dispatches.map((d) => dispatchRow(d, tz))),
    h("ol", { class: "timeline" }, incident.timeline.slice(-TIMELINE_STEPS).map((st) => h("li", null,
      h("span", { class: "muted" }, fmtTime(st.at, tz, "time")), " ",
      t(`step.${st.step}`), st.responder_id ? ` · ${nameOf(incident, st.responder_id)}` : "",
      st.step === "escalated" && !st.responder_id ? ` · ${t("step.controlRoom")}` : ""))),
    h("div", { class: "actions" },
      target,
      h("button", { type: "button", class: "primary dispatch-button", on: { click: () => act(path + "/dispatch", body()) } },
        t("incident.dispatch")),
      open.length ? [from, to, h("button", { type: "button", class: "reassign-button",
        on: { click: () => act(path + "/reassign", { from_responder_id: from.value, to_responder_id: to.value }) } },
      t("incident.reassign"))] : null,
      open.length ? [arrived, h("button", { type: "button", class: "arrival-button",
        on: { click: () => act(path + "/arrival", { responder_id: arrived.value }) } },
      t("incident.arrival"))] : null,
      h("button", { type: "button", class: "link resolve-button", on: { click: () => act(path + "/resolve", { note: "" }) } },
        t("incident.resolve"))));
}

function dutyPanel(duty) {
  if (!duty) return h("p", { class: "muted" }, t("duty.none"));
  const tz = timeZoneOf(duty.community_id);
  return h("ul", { class: "duty" }, duty.teams.map((tm) => h("li", {
    class: tm.on_duty.length ? "team" : "team nobody", dataset: { team: tm.id },
  },
  h("strong", null, tm.name), " ",
  tm.on_duty.length
    ? h("span", { class: "on-duty" }, tm.on_duty.map((id) => duty.responders.find((r) => r.id === id)?.name || id).join(", "))
    : h("span", { class: "warning" }, t("duty.nobody")),
  tm.on_duty.length && tm.uncovered_at
    ? h("span", { class: "muted gap" }, " ", t("duty.gap", { time: fmtTime(tm.uncovered_at, tz, "time") })) : null)));
}

export function incidentsView(container) {
  const list = h("section", { id: "incident-list", class: "incident-list", "aria-live": "polite" });
  const side = h("aside", { id: "duty-board", class: "duty-board" });
  const closed = h("section", { id: "closed-list" });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  replace(container, h("div", { class: "incidents-layout" },
    h("div", null, h("h2", { "data-i18n": "incident.title" }, t("incident.title")), error, list,
      h("h2", { "data-i18n": "closed.title" }, t("closed.title")), closed),
    h("div", null, h("h2", { "data-i18n": "duty.title" }, t("duty.title")), side)));
  let duty = null;
  let stopped = false;

  async function act(path, body) {
    try {
      await api(path, { method: "POST", body });
      error.hidden = true;
    } catch (exc) {
      error.hidden = false;
      error.textContent = describe(exc);
    }
    await load();
  }

  async function load() {
    const current = store.current;
    if (!current || stopped) return;
    try {
      const [incidents, recent, board] = await Promise.all([
        api("/incidents", { params: { community_id: current, open: true } }),
        api("/incidents", { params: { community_id: current, limit: 10 } }),
        api(`/communities/${enc(current)}/duty`).catch(() => null),
      ]);
      if (stopped) return;
      duty = board;
      replace(list, incidents.data.length ? incidents.data.map((i) => incidentCard(i, duty, act))
        : h("p", { class: "muted" }, t("incident.none")));
      replace(side, dutyPanel(duty));
      replace(closed, closedTable(recent.data) || h("p", { class: "muted" }, t("closed.none")));
      tickCountdowns(list);
    } catch (exc) {
      error.hidden = false;
      error.textContent = describe(exc);
    }
  }

  load();
  const refresh = setInterval(load, REFRESH_MS);
  const tick = setInterval(() => tickCountdowns(list), TICK_MS);
  const off = onLangChange(load);
  return () => {
    stopped = true;
    clearInterval(refresh);
    clearInterval(tick);
    off();
  };
}
