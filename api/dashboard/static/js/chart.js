// Line charts as inline SVG: time on x (ticks in the community's time zone), one or
// more series, an optional min-max band, a threshold line, markers and event ticks.

import { s } from "./dom.js";
import { fmtNumber, fmtTime, t } from "./i18n.js";

const W = 760;
const M = { l: 52, r: 14, t: 14, b: 26 };
const MINUTE = 60_000;
const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080].map((m) => m * MINUTE);

const offsets = new Map();

/** Milliseconds ``timeZone`` is ahead of UTC at ``ms``. */
function tzOffset(timeZone, ms) {
  const key = `${timeZone}|${Math.floor(ms / 3_600_000)}`;
  if (offsets.has(key)) return offsets.get(key);
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  }).formatToParts(new Date(ms));
  const get = (type) => Number(parts.find((p) => p.type === type).value);
  const local = Date.UTC(get("year"), get("month") - 1, get("day"), get("hour"), get("minute"), get("second"));
  const offset = local - Math.floor(ms / 1000) * 1000;
  offsets.set(key, offset);
  return offset;
}

function niceTicks(lo, hi, count = 4) {
  const span = hi - lo || 1;
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((st) => span / st <= count + 1) || 10 * mag;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function timeTicks(start, end, timeZone) {
  const span = end - start;
  const step = STEPS.find((st) => span / st <= 7) || STEPS[STEPS.length - 1];
  const offset = tzOffset(timeZone, start);
  const ticks = [];
  for (let tick = Math.ceil((start + offset) / step) * step - offset; tick <= end; tick += step) ticks.push(tick);
  return { ticks, style: span > 2 * 86_400_000 ? "day" : span > 20 * 3_600_000 ? "dayhour" : "minute" };
}

/**
 * series: [{points: [{t, v}], label}], band: [{t, lo, hi}], threshold: number,
 * markers: [{t, label}], events: [{t, label}], start/end: ms, timeZone, unit,
 * gapMs: break the line where points are further apart than this.
 */
export function lineChart({
  series = [], band = [], threshold = null, markers = [], events = [], start, end,
  timeZone, unit = "", gapMs = Infinity, height = 190,
}) {
  const H = height;
  const values = [];
  for (const se of series) for (const p of se.points) values.push(p.v);
  for (const b of band) values.push(b.lo, b.hi);
  if (threshold !== null && threshold !== undefined) values.push(threshold);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img" });
  const plotW = W - M.l - M.r;
  const plotH = H - M.t - M.b;
  const x = (ms) => M.l + ((ms - start) / (end - start)) * plotW;
  if (!values.length) {
    svg.appendChild(s("text", { class: "nodata", x: W / 2, y: H / 2, "text-anchor": "middle" }, t("chart.nodata")));
    return svg;
  }
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (lo === hi) {
    lo -= 1;
    hi += 1;
  }
  const pad = (hi - lo) * 0.08;
  lo -= pad;
  hi += pad;
  const y = (v) => M.t + (1 - (v - lo) / (hi - lo)) * plotH;

  const grid = s("g", { class: "grid" });
  const axis = s("g", { class: "axis" });
  for (const v of niceTicks(lo, hi)) {
    if (v < lo || v > hi) continue;
    grid.appendChild(s("line", { x1: M.l, x2: W - M.r, y1: y(v), y2: y(v) }));
    axis.appendChild(s("text", { x: M.l - 6, y: y(v) + 4, "text-anchor": "end" }, fmtNumber(v)));
  }
  const { ticks, style } = timeTicks(start, end, timeZone);
  for (const tick of ticks) {
    grid.appendChild(s("line", { x1: x(tick), x2: x(tick), y1: M.t, y2: H - M.b }));
    axis.appendChild(s("text", { x: x(tick), y: H - 8, "text-anchor": "middle" }, fmtTime(tick, timeZone, style)));
  }
  if (unit) axis.appendChild(s("text", { x: 4, y: M.t + 4 }, unit));
  svg.append(grid, axis);

  if (band.length) {
    const top = band.map((b) => `${x(b.t).toFixed(1)},${y(b.hi).toFixed(1)}`);
    const bottom = band.slice().reverse().map((b) => `${x(b.t).toFixed(1)},${y(b.lo).toFixed(1)}`);
    svg.appendChild(s("polygon", { class: "band", points: [...top, ...bottom].join(" ") }));
  }
  if (threshold !== null && threshold !== undefined) {
    svg.appendChild(s("line", { class: "threshold", x1: M.l, x2: W - M.r, y1: y(threshold), y2: y(threshold) }));
  }
  series.forEach((se, index) => {
    let d = "";
    let previous = null;
    for (const p of se.points) {
      const cmd = previous === null || p.t - previous > gapMs ? "M" : "L";
      d += `${cmd}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`;
      previous = p.t;
    }
    svg.appendChild(s("path", { class: ["series", `s${index}`], d }));
    if (se.points.length < 60) {
      for (const p of se.points) svg.appendChild(s("circle", { class: "dot", cx: x(p.t), cy: y(p.v), r: 2.5 }));
    }
  });
  for (const ev of events) {
    if (ev.t < start || ev.t > end) continue;
    svg.appendChild(s("line", { class: "event-tick", x1: x(ev.t), x2: x(ev.t), y1: H - M.b - 10, y2: H - M.b },
      s("title", {}, ev.label)));
  }
  for (const mk of markers) {
    if (mk.t < start || mk.t > end) continue;
    svg.appendChild(s("line", { class: "marker", x1: x(mk.t), x2: x(mk.t), y1: M.t, y2: H - M.b }));
    svg.appendChild(s("text", { class: "marker-label", x: x(mk.t) + 4, y: M.t + 10 }, mk.label));
  }
  hover(svg, series[0]?.points || [], x, y, timeZone, unit, { plotTop: M.t, plotBottom: H - M.b });
  return svg;
}

function hover(svg, points, x, y, timeZone, unit, { plotTop, plotBottom }) {
  if (!points.length) return;
  const line = s("line", { class: "hover-line", y1: plotTop, y2: plotBottom, visibility: "hidden" });
  const label = s("text", { class: "hover-text", y: plotTop + 12, visibility: "hidden" });
  svg.append(line, label);
  svg.addEventListener("pointermove", (event) => {
    const box = svg.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * W;
    let best = points[0];
    for (const p of points) if (Math.abs(x(p.t) - px) < Math.abs(x(best.t) - px)) best = p;
    const bx = x(best.t);
    line.setAttribute("x1", bx);
    line.setAttribute("x2", bx);
    line.setAttribute("visibility", "visible");
    label.textContent = `${fmtTime(best.t, timeZone, "datetime")}  ${fmtNumber(best.v)} ${unit}`;
    label.setAttribute("x", bx > W / 2 ? bx - 8 : bx + 8);
    label.setAttribute("text-anchor", bx > W / 2 ? "end" : "start");
    label.setAttribute("visibility", "visible");
  });
  svg.addEventListener("pointerleave", () => {
    line.setAttribute("visibility", "hidden");
    label.setAttribute("visibility", "hidden");
  });
}
