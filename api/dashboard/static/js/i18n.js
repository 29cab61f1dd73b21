// Chinese (zh-CN, the default) and English. Times are always shown in the community's
// own time zone, whatever the browser's.

const ZH = {
  "app.title": "SmartCommunity 控制室",
  "nav.board": "告警",
  "nav.overview": "社区概览",
  "signin.lead": "用访问令牌登录（smartcommunity token create 名称 --user 用户）",
  "signin.token": "访问令牌",
  "signin.placeholder": "sc_…",
  "signin.remember": "在此屏幕上保持登录",
  "signin.submit": "登录",
  "signin.invalid": "令牌无效、已过期或已被吊销",
  "signin.switch": "此链接会以另一个身份登录，替换当前的登录。要切换吗？",
  "signin.failed": "无法连接服务器：{msg}",
  "signout": "退出",
  "lang.other": "English",
  "live.live": "实时",
  "live.connecting": "连接中…",
  "live.reconnecting": "重连中（第 {n} 次）",
  "live.stopped": "未连接",
  "live.title": "最后收到数据：{time}",
  "stale.banner": "实时连接中断，正在重连 — 以下为 {time} 的数据，可能已过时",
  "stale.never": "正在连接实时告警流 — 数据尚未实时",
  "critical.banner": "{n} 条紧急告警未确认",
  "sound.on": "声音提示：开",
  "sound.off": "声音提示：关",
  "figure.open": "未确认告警",
  "figure.critical": "紧急未确认",
  "figure.acknowledged": "处理中",
  "figure.today": "今日告警",
  "figure.month": "本月告警",
  "figure.ackToday": "今日确认中位时长",
  "figure.ackMonth": "本月确认中位时长",
  "figure.resolveToday": "今日解决中位时长",
  "figure.resolveMonth": "本月解决中位时长",
  "figure.offline": "离线设备",
  "figure.updated": "{community} · 更新于 {time}（{tz}）",
  "filter.community": "社区",
  "filter.building": "楼栋",
  "filter.class": "类别",
  "filter.severity": "级别",
  "filter.state": "状态",
  "filter.all": "全部",
  "filter.active": "未解决",
  "filter.resolvedToday": "今日已解决",
  "filter.minSeverity": "{sev} 及以上",
  "severity.critical": "紧急",
  "severity.major": "重要",
  "severity.minor": "次要",
  "severity.warning": "警告",
  "severity.info": "提示",
  "state.open": "未确认",
  "state.acknowledged": "已确认",
  "state.suppressed": "已抑制",
  "state.resolved": "已解决",
  "class.fire": "消防",
  "class.locker": "快递柜",
  "class.access": "门禁",
  "class.wearable": "养老穿戴",
  "class.other": "其他",
  "conn.online": "在线",
  "conn.offline": "离线",
  "conn.silent": "失联",
  "conn.never_seen": "未上线",
  "conn.retired": "已退役",
  "devstate.active": "运行",
  "devstate.maintenance": "维护中",
  "devstate.decommissioned": "已退役",
  "board.title": "实时告警",
  "board.empty": "没有符合条件的告警",
  "board.count": "共 {n} 条",
  "col.severity": "级别",
  "col.alert": "告警",
  "col.where": "位置",
  "col.state": "状态",
  "col.raised": "发生时间",
  "col.age": "已持续",
  "col.count": "次数",
  "col.device": "设备",
  "col.name": "名称",
  "col.class": "类别",
  "col.place": "位置",
  "col.deviceState": "状态",
  "col.conn": "连接",
  "col.lastSeen": "最后上报",
  "col.battery": "电量",
  "col.alerting": "告警",
  "col.time": "时间",
  "col.action": "动作",
  "col.actor": "操作者",
  "col.note": "说明",
  "col.event": "事件",
  "col.data": "数据",
  "action.ack": "确认",
  "action.resolve": "解决",
  "action.details": "详情",
  "action.cancel": "取消",
  "action.ackTitle": "确认告警",
  "action.resolveTitle": "解决告警",
  "action.noteOptional": "备注（可选）",
  "action.noteRequired": "处理说明（必填）",
  "action.needNote": "请填写处理说明",
  "action.failed": "操作失败：{msg}",
  "where.building": "{b} 栋",
  "where.unit": "{u} 室",
  "where.floor": "{f} 层",
  "where.none": "社区公共",
  "tiles.title": "楼栋",
  "tiles.devices": "设备",
  "tiles.online": "在线",
  "tiles.offline": "离线",
  "tiles.alerting": "告警中",
  "tiles.alerts": "告警",
  "tiles.neverSeen": "未上线",
  "tiles.maintenance": "维护",
  "tiles.unplaced": "未分配楼栋",
  "tiles.floors": "{n} 层",
  "tiles.empty": "这个社区还没有设备",
  "overview.devices": "设备列表",
  "overview.search": "搜索设备编号或名称",
  "overview.showMore": "显示更多（还有 {n} 台）",
  "overview.alerts": "本楼栋告警",
  "overview.back": "← 社区概览",
  "detail.back": "← 返回告警",
  "detail.history": "处理记录",
  "detail.device": "设备",
  "detail.readings": "告警前后的读数",
  "detail.events": "设备事件",
  "detail.details": "告警数据",
  "detail.raised": "触发时间",
  "detail.firstSeen": "开始于",
  "detail.lastSeen": "最后出现",
  "detail.ackBy": "确认",
  "detail.resolvedBy": "解决",
  "detail.rule": "规则",
  "detail.subject": "对象",
  "detail.occurrences": "次数",
  "detail.resident": "住户",
  "detail.community": "社区",
  "detail.place": "位置",
  "detail.members": "合并的告警",
  "detail.threshold": "阈值 {v}",
  "detail.firedAt": "触发",
  "device.latest": "最新读数",
  "device.range.6h": "6 小时（原始）",
  "device.range.7d": "7 天（小时均值）",
  "device.range.30d": "30 天（日均值）",
  "device.events": "最近 7 天事件",
  "device.alerts": "告警记录",
  "device.model": "型号",
  "device.interval": "上报间隔",
  "device.installed": "安装",
  "device.noEvents": "没有事件",
  "chart.nodata": "这段时间没有数据",
  "notfound": "找不到，或不在您负责的社区内",
  "loading": "加载中…",
  "error.load": "加载失败：{msg}",
  "none": "—",
  "age.now": "刚刚",
  "unit.s": "{n}秒",
  "unit.m": "{n}分",
  "unit.h": "{n}小时",
  "unit.d": "{n}天",
  "role.admin": "管理员",
  "role.operator": "值班员",
  "role.installer": "安装员",
  "role.viewer": "只读",
  "action.raised": "触发",
  "action.repeated": "再次发生",
  "action.severity_raised": "级别提升",
  "action.escalated": "超时升级",
  "action.acknowledged": "确认",
  "action.resolved": "解决",
  "action.auto_resolved": "自动解除",
  "action.suppressed": "维护期抑制",
  "action.unsuppressed": "解除抑制",
  "action.condition_cleared": "条件已消除",
  "metric.heart_rate": "心率",
  "metric.spo2": "血氧",
  "metric.skin_temperature": "体表温度",
  "metric.steps": "步数",
  "metric.worn": "佩戴",
  "metric.lat": "纬度",
  "metric.lon": "经度",
  "metric.battery": "电量",
  "metric.battery_v": "电池电压",
  "metric.rssi": "信号强度",
  "metric.temperature": "温度",
  "metric.smoke_obscuration": "烟雾浓度",
  "metric.gas_lel": "可燃气体",
  "metric.residual_current": "剩余电流",
  "metric.cable_temperature": "线缆温度",
  "metric.pipe_pressure": "管网压力",
  "metric.tank_level": "水箱液位",
  "metric.extinguisher_pressure": "灭火器压力",
  "metric.door_open": "门开启",
  "metric.occupied": "占用格口",
  "metric.compartments": "格口数",
  "metric.mains_power": "市电",
  "metric.overdue": "超时包裹",
  "metric.tamper": "防拆",
};

const EN = {
  "app.title": "SmartCommunity control room",
  "nav.board": "Alerts",
  "nav.overview": "Community",
  "signin.lead": "Sign in with an access token (smartcommunity token create NAME --user USER)",
  "signin.token": "Access token",
  "signin.placeholder": "sc_…",
  "signin.remember": "Keep me signed in on this screen",
  "signin.submit": "Sign in",
  "signin.invalid": "The token is unknown, expired or revoked",
  "signin.switch": "This link signs you in as someone else, replacing the current sign-in. Switch?",
  "signin.failed": "Cannot reach the server: {msg}",
  "signout": "Sign out",
  "lang.other": "中文",
  "live.live": "Live",
  "live.connecting": "Connecting…",
  "live.reconnecting": "Reconnecting (attempt {n})",
  "live.stopped": "Not connected",
  "live.title": "Last data received: {time}",
  "stale.banner": "Live connection lost, reconnecting — showing data as of {time}; it may be out of date",
  "stale.never": "Connecting to the live alert stream — data is not live yet",
  "critical.banner": "Critical alerts not acknowledged: {n}",
  "sound.on": "Sound cue: on",
  "sound.off": "Sound cue: off",
  "figure.open": "Open alerts",
  "figure.critical": "Critical open",
  "figure.acknowledged": "In progress",
  "figure.today": "Alerts today",
  "figure.month": "Alerts this month",
  "figure.ackToday": "Median to acknowledge, today",
  "figure.ackMonth": "Median to acknowledge, month",
  "figure.resolveToday": "Median to resolve, today",
  "figure.resolveMonth": "Median to resolve, month",
  "figure.offline": "Devices offline",
  "figure.updated": "{community} · updated {time} ({tz})",
  "filter.community": "Community",
  "filter.building": "Building",
  "filter.class": "Class",
  "filter.severity": "Severity",
  "filter.state": "State",
  "filter.all": "All",
  "filter.active": "Not resolved",
  "filter.resolvedToday": "Resolved today",
  "filter.minSeverity": "{sev} and above",
  "severity.critical": "Critical",
  "severity.major": "Major",
  "severity.minor": "Minor",
  "severity.warning": "Warning",
  "severity.info": "Info",
  "state.open": "Open",
  "state.acknowledged": "Acknowledged",
  "state.suppressed": "Suppressed",
  "state.resolved": "Resolved",
  "class.fire": "Fire",
  "class.locker": "Lockers",
  "class.access": "Access",
  "class.wearable": "Wearables",
  "class.other": "Other",
  "conn.online": "Online",
  "conn.offline": "Offline",
  "conn.silent": "Silent",
  "conn.never_seen": "Never seen",
  "conn.retired": "Retired",
  "devstate.active": "Active",
  "devstate.maintenance": "Maintenance",
  "devstate.decommissioned": "Decommissioned",
  "board.title": "Live alerts",
  "board.empty": "No alerts match",
  "board.count": "{n} alerts",
  "col.severity": "Severity",
  "col.alert": "Alert",
  "col.where": "Where",
  "col.state": "State",
  "col.raised": "Raised",
  "col.age": "Age",
  "col.count": "Count",
  "col.device": "Device",
  "col.name": "Name",
  "col.class": "Class",
  "col.place": "Place",
  "col.deviceState": "State",
  "col.conn": "Link",
  "col.lastSeen": "Last seen",
  "col.battery": "Battery",
  "col.alerting": "Alerts",
  "col.time": "Time",
  "col.action": "Action",
  "col.actor": "By",
  "col.note": "Note",
  "col.event": "Event",
  "col.data": "Data",
  "action.ack": "Acknowledge",
  "action.resolve": "Resolve",
  "action.details": "Details",
  "action.cancel": "Cancel",
  "action.ackTitle": "Acknowledge alert",
  "action.resolveTitle": "Resolve alert",
  "action.noteOptional": "Note (optional)",
  "action.noteRequired": "What was done (required)",
  "action.needNote": "Please say what was done",
  "action.failed": "Failed: {msg}",
  "where.building": "Building {b}",
  "where.unit": "unit {u}",
  "where.floor": "floor {f}",
  "where.none": "Community-wide",
  "tiles.title": "Buildings",
  "tiles.devices": "devices",
  "tiles.online": "online",
  "tiles.offline": "offline",
  "tiles.alerting": "alerting",
  "tiles.alerts": "alerts",
  "tiles.neverSeen": "never seen",
  "tiles.maintenance": "maint.",
  "tiles.unplaced": "No building",
  "tiles.floors": "{n} floors",
  "tiles.empty": "This community has no devices yet",
  "overview.devices": "Devices",
  "overview.search": "Search device id or name",
  "overview.showMore": "Show more ({n} more)",
  "overview.alerts": "Alerts in this building",
  "overview.back": "← Community",
  "detail.back": "← Alerts",
  "detail.history": "History",
  "detail.device": "Device",
  "detail.readings": "Readings around the alert",
  "detail.events": "Device events",
  "detail.details": "Alert data",
  "detail.raised": "Raised",
  "detail.firstSeen": "Began",
  "detail.lastSeen": "Last seen",
  "detail.ackBy": "Acknowledged",
  "detail.resolvedBy": "Resolved",
  "detail.rule": "Rule",
  "detail.subject": "Subject",
  "detail.occurrences": "Occurrences",
  "detail.resident": "Resident",
  "detail.community": "Community",
  "detail.place": "Place",
  "detail.members": "Grouped alerts",
  "detail.threshold": "threshold {v}",
  "detail.firedAt": "fired",
  "device.latest": "Latest values",
  "device.range.6h": "6 hours (raw)",
  "device.range.7d": "7 days (hourly mean)",
  "device.range.30d": "30 days (daily mean)",
  "device.events": "Events, last 7 days",
  "device.alerts": "Alerts",
  "device.model": "Model",
  "device.interval": "Interval",
  "device.installed": "Installed",
  "device.noEvents": "No events",
  "chart.nodata": "No data in this period",
  "notfound": "Not found, or not in your communities",
  "loading": "Loading…",
  "error.load": "Could not load: {msg}",
  "none": "—",
  "age.now": "just now",
  "unit.s": "{n} s",
  "unit.m": "{n} min",
  "unit.h": "{n} h",
  "unit.d": "{n} d",
  "role.admin": "administrator",
  "role.operator": "operator",
  "role.installer": "installer",
  "role.viewer": "viewer",
  "action.raised": "raised",
  "action.repeated": "repeated",
  "action.severity_raised": "severity raised",
  "action.escalated": "escalated",
  "action.acknowledged": "acknowledged",
  "action.resolved": "resolved",
  "action.auto_resolved": "auto-resolved",
  "action.suppressed": "suppressed",
  "action.unsuppressed": "unsuppressed",
  "action.condition_cleared": "condition cleared",
  "metric.heart_rate": "Heart rate",
  "metric.spo2": "SpO₂",
  "metric.skin_temperature": "Skin temperature",
  "metric.steps": "Steps",
  "metric.worn": "Worn",
  "metric.lat": "Latitude",
  "metric.lon": "Longitude",
  "metric.battery": "Battery",
  "metric.battery_v": "Battery voltage",
  "metric.rssi": "Signal",
  "metric.temperature": "Temperature",
  "metric.smoke_obscuration": "Smoke",
  "metric.gas_lel": "Gas",
  "metric.residual_current": "Residual current",
  "metric.cable_temperature": "Cable temperature",
  "metric.pipe_pressure": "Pipe pressure",
  "metric.tank_level": "Tank level",
  "metric.extinguisher_pressure": "Extinguisher pressure",
  "metric.door_open": "Door open",
  "metric.occupied": "Occupied",
  "metric.compartments": "Compartments",
  "metric.mains_power": "Mains power",
  "metric.overdue": "Overdue parcels",
  "metric.tamper": "Tamper",
};

const DICTS = { "zh-CN": ZH, en: EN };
export const LANGS = Object.keys(DICTS);
const STORE_KEY = "sc.lang";
// Catalogue units (UCUM-ish) as people read them.
const UNITS = { Cel: "°C", "beat/min": "bpm", count: "", lat: "°", lon: "°" };

let lang = LANGS.includes(localStorage.getItem(STORE_KEY)) ? localStorage.getItem(STORE_KEY) : "zh-CN";
const listeners = new Set();

export function getLang() {
  return lang;
}

export function setLang(next) {
  if (!LANGS.includes(next) || next === lang) return;
  lang = next;
  localStorage.setItem(STORE_KEY, next);
  formatters.clear();
  applyStatic();
  for (const fn of [...listeners]) fn(lang);
}

export function toggleLang() {
  setLang(lang === "zh-CN" ? "en" : "zh-CN");
}

export function onLangChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** t("board.count", {n: 3}); an unknown key falls back to English, then to itself. */
export function t(key, params) {
  let text = DICTS[lang][key] ?? EN[key] ?? key;
  if (params) {
    for (const [k, v] of Object.entries(params)) text = text.replaceAll(`{${k}}`, String(v));
  }
  return text;
}

/** A translation if there is one, otherwise the fallback (e.g. an unknown metric's own name). */
export function tOr(key, fallback) {
  return DICTS[lang][key] ?? EN[key] ?? fallback;
}

export function unitLabel(unit) {
  return UNITS[unit] ?? unit ?? "";
}

/** Fill [data-i18n], [data-i18n-placeholder] and [data-i18n-title] of the static page. */
export function applyStatic(root = document) {
  document.documentElement.lang = lang;
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  document.title = t("app.title");
}

const formatters = new Map();

function formatter(timeZone, style) {
  const key = `${lang}|${timeZone}|${style}`;
  let f = formatters.get(key);
  if (!f) {
    const base = { timeZone, hourCycle: "h23" };
    const options = {
      time: { ...base, hour: "2-digit", minute: "2-digit", second: "2-digit" },
      minute: { ...base, hour: "2-digit", minute: "2-digit" },
      datetime: { ...base, month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" },
      dayhour: { ...base, month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" },
      day: { ...base, month: "2-digit", day: "2-digit" },
    }[style];
    f = new Intl.DateTimeFormat(lang, options);
    formatters.set(key, f);
  }
  return f;
}

/** A time in ``timeZone``: style time | minute | datetime | dayhour | day. */
export function fmtTime(value, timeZone, style = "datetime") {
  if (value === null || value === undefined || value === "") return t("none");
  const date = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(date.getTime())) return t("none");
  return formatter(timeZone || "Asia/Shanghai", style).format(date);
}

/** A duration in seconds, the two largest units: "2 小时 5 分" / "2 h 5 min". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return t("none");
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return t("unit.s", { n: s });
  const m = Math.floor(s / 60);
  if (m < 60) return t("unit.m", { n: m });
  const hours = Math.floor(m / 60);
  const gap = lang === "en" ? " " : "";
  if (hours < 48) return `${t("unit.h", { n: hours })}${gap}${t("unit.m", { n: m % 60 })}`;
  return `${t("unit.d", { n: Math.floor(hours / 24) })}${gap}${t("unit.h", { n: hours % 24 })}`;
}

export function fmtNumber(value, digits = 1) {
  if (value === null || value === undefined) return t("none");
  const abs = Math.abs(value);
  const places = Number.isInteger(value) ? 0 : abs >= 100 ? 0 : abs >= 10 ? 1 : digits + 1;
  return new Intl.NumberFormat(lang, { maximumFractionDigits: places }).format(value);
}
