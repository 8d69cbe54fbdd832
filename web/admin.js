// tongbu admin page. Plain JS, no build step, nothing fetched from elsewhere. Every piece of data
// reaches the page through textContent or canvas fillText, never innerHTML.
"use strict";

const TEXT = {
  zh: {
    title: "同步课堂使用统计", token: "管理令牌", apply: "确定", from: "开始日期", to: "结束日期",
    county: "区县", school: "学校", level: "汇总级别", lv_classroom: "教室", lv_school: "学校",
    lv_county: "区县", lv_city: "全市", query: "查询", csv: "下载 CSV",
    chart_daily: "每日使用分钟数", chart_rate: "各校使用率", chart_quality: "接收质量分布",
    usage_table: "使用明细", least_used: "使用最少的教室", all: "全部", loading: "加载中…",
    need_token: "请输入管理令牌", err: "出错：", lang: "English",
    c_id: "编号", c_name: "名称", c_school: "学校", c_county: "区县", c_minutes: "使用分钟", c_sessions: "连接次数",
    c_invited: "应参加课次", c_attended: "实参加课次", c_rate: "使用率", c_quality: "平均质量",
    c_reconnects: "重连", c_called_on: "上台", c_hands: "举手", c_freezes: "卡顿",
    q_top: "高清", q_middle: "标清", q_low: "流畅", q_audio: "仅音频", q_paused: "暂停",
    s_minutes: "总使用分钟", s_rate: "使用率", s_quality: "平均质量", s_classrooms: "教室数",
  },
  en: {
    title: "Synchronized classroom usage", token: "Admin token", apply: "Apply", from: "From",
    to: "To", county: "County", school: "School", level: "Level", lv_classroom: "Classroom",
    lv_school: "School", lv_county: "County", lv_city: "City", query: "Query",
    csv: "Download CSV", chart_daily: "Minutes per day", chart_rate: "Usage rate per school",
    chart_quality: "Received quality", usage_table: "Usage", least_used: "Least-used classrooms",
    all: "All", loading: "Loading…", need_token: "Enter an admin token", err: "Error: ",
    lang: "中文",
    c_id: "Id", c_name: "Name", c_school: "School", c_county: "County", c_minutes: "Minutes", c_sessions: "Sessions",
    c_invited: "Invited", c_attended: "Attended", c_rate: "Usage rate", c_quality: "Quality",
    c_reconnects: "Reconnects", c_called_on: "Called on", c_hands: "Hands", c_freezes: "Freezes",
    q_top: "Top", q_middle: "Middle", q_low: "Low", q_audio: "Audio only", q_paused: "Paused",
    s_minutes: "Total minutes", s_rate: "Usage rate", s_quality: "Avg. quality",
    s_classrooms: "Classrooms",
  },
};

const COLUMNS = [
  ["id", "c_id"], ["name", "c_name"], ["school_name", "c_school"], ["minutes", "c_minutes"],
  ["sessions", "c_sessions"], ["lessons_invited", "c_invited"],
  ["lessons_attended", "c_attended"], ["usage_rate", "c_rate"], ["quality_score", "c_quality"],
  ["reconnects", "c_reconnects"], ["called_on", "c_called_on"], ["hands_raised", "c_hands"],
  ["freezes", "c_freezes"],
];

// The third column names what a row belongs to: a classroom's school, a school's county; county
// and city rows belong to nothing shown.
function columnsFor(level) {
  const [id, name, , ...rest] = COLUMNS;
  if (level === "school") return [id, name, ["county_name", "c_county"], ...rest];
  if (level === "county" || level === "city") return [id, name, ...rest];
  return COLUMNS;
}

const state = {
  lang: localStorage.getItem("tongbu-lang") || "zh",
  token: sessionStorage.getItem("tongbu-admin-token") || "",
  rows: [], level: "classroom", least: [], days: [], city: null, schools: [], directory: null,
  sort: { key: "minutes", desc: true },
};

const $ = (id) => document.getElementById(id);
const t = (k) => TEXT[state.lang][k] || k;

function applyLanguage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("lang").textContent = t("lang");
  document.title = t("title");
  fillSelects();
  render();
}

async function api(path) {
  const resp = await fetch(path, { headers: { Authorization: "Bearer " + state.token } });
  if (!resp.ok) {
    let msg = resp.status + "";
    try { msg = (await resp.json()).message; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return resp.json();
}

function params(extra) {
  const p = new URLSearchParams();
  if ($("from").value) p.set("from", $("from").value);
  if ($("to").value) p.set("to", $("to").value);
  if ($("county").value) p.set("county", $("county").value);
  if ($("school").value) p.set("school", $("school").value);
  for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
  return p;
}

function option(value, label) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = label;
  return o;
}

function fillSelects() {
  const dir = state.directory;
  const county = $("county"), school = $("school");
  const keepCounty = county.value, keepSchool = school.value;
  county.replaceChildren(option("", t("all")));
  school.replaceChildren(option("", t("all")));
  if (!dir) return;
  for (const c of dir.county || []) county.appendChild(option(c.id, c.name));
  county.value = keepCounty;
  for (const s of dir.school || []) {
    if (!county.value || s.county === county.value) school.appendChild(option(s.id, s.name));
  }
  school.value = [...school.options].some((o) => o.value === keepSchool) ? keepSchool : "";
}

async function refresh() {
  if (!state.token) { $("status").textContent = t("need_token"); return; }
  $("status").textContent = t("loading");
  try {
    if (!state.directory) { state.directory = await api("/api/directory"); fillSelects(); }
    const level = $("level").value;
    const [usage, least, daily, city, schools] = await Promise.all([
      api("/api/usage?" + params({ level, per_page: 1000 })),
      api("/api/usage/least-used?" + params({ limit: 20 })),
      api("/api/usage/daily?" + params()),
      api("/api/usage?" + params({ level: "city" })),
      api("/api/usage?" + params({ level: "school", per_page: 1000, sort: "usage_rate" })),
    ]);
    state.rows = usage.rows;
    state.level = level;
    state.least = least.rows;
    state.days = daily.days;
    state.city = city.rows[0] || null;
    state.schools = schools.rows;
    if (!$("from").value) $("from").value = usage.period.from;
    if (!$("to").value) $("to").value = usage.period.to;
    const csv = params({ level, format: "csv", token: state.token });
    $("csv").href = "/api/usage?" + csv.toString();
    $("status").textContent = "";
    render();
  } catch (e) {
    $("status").textContent = t("err") + e.message;
  }
}

function fmt(key, v) {
  if (v === null || v === undefined) return "–";
  if (key === "usage_rate") return (v * 100).toFixed(1) + "%";
  if (key === "quality_score") return v.toFixed(1);
  if (key === "minutes") return v.toFixed(1);
  return String(v);
}

function fillTable(table, rows, sortable, level) {
  const columns = columnsFor(level);
  const head = document.createElement("tr");
  for (const [key, label] of columns) {
    const th = document.createElement("th");
    th.textContent = t(label);
    th.dataset.key = key;
    if (sortable && state.sort.key === key) th.className = state.sort.desc ? "sorted-desc" : "sorted-asc";
    if (sortable) {
      th.addEventListener("click", () => {
        state.sort = { key, desc: state.sort.key === key ? !state.sort.desc : true };
        render();
      });
    }
    head.appendChild(th);
  }
  table.tHead.replaceChildren(head);
  const body = document.createDocumentFragment();
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.dataset.id = r.id;
    for (const [key] of columns) {
      const td = document.createElement("td");
      td.dataset.key = key;
      td.textContent = fmt(key, r[key]);
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  table.tBodies[0].replaceChildren(body);
}

function sortedRows() {
  const { key, desc } = state.sort;
  const val = (r) => (r[key] === null || r[key] === undefined ? -Infinity : r[key]);
  return [...state.rows].sort((a, b) => {
    const x = val(a), y = val(b);
    const c = typeof x === "string" ? x.localeCompare(y) : x - y;
    return (desc ? -c : c) || a.id.localeCompare(b.id);
  });
}

function renderSummary() {
  const box = $("summary");
  box.replaceChildren();
  const c = state.city;
  if (!c) return;
  for (const [label, value] of [
    ["s_minutes", fmt("minutes", c.minutes)], ["s_rate", fmt("usage_rate", c.usage_rate)],
    ["s_quality", fmt("quality_score", c.quality_score)], ["s_classrooms", String(c.classrooms)],
  ]) {
    const d = document.createElement("div");
    d.dataset.key = label;
    const b = document.createElement("b");
    b.textContent = value;
    d.append(b, t(label));
    box.appendChild(d);
  }
}

function prepare(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "12px sans-serif";
  ctx.fillStyle = "#333";
  return ctx;
}

function drawBars(canvas, labels, values, maxValue, color, format) {
  const ctx = prepare(canvas);
  const w = canvas.width, h = canvas.height, left = 40, bottom = 30, top = 10;
  const n = Math.max(values.length, 1);
  const bw = (w - left - 10) / n;
  const max = maxValue || Math.max(1, ...values);
  ctx.strokeStyle = "#999";
  ctx.beginPath(); ctx.moveTo(left, top); ctx.lineTo(left, h - bottom); ctx.lineTo(w - 5, h - bottom); ctx.stroke();
  ctx.fillText(format(max), 2, top + 8);
  ctx.fillText(format(0), 2, h - bottom);
  values.forEach((v, i) => {
    const bh = ((h - bottom - top) * v) / max;
    ctx.fillStyle = color;
    ctx.fillRect(left + i * bw + 1, h - bottom - bh, Math.max(bw - 2, 1), bh);
  });
  ctx.fillStyle = "#333";
  const step = Math.ceil(labels.length / 8);
  labels.forEach((l, i) => {
    if (i % step === 0) ctx.fillText(String(l).slice(0, 10), left + i * bw, h - bottom + 14);
  });
  canvas.dataset.drawn = String(values.length);
}

function drawQuality(canvas) {
  const ctx = prepare(canvas);
  const c = state.city;
  const parts = [
    ["q_top", "top_seconds", "#2a7"], ["q_middle", "middle_seconds", "#7b4"],
    ["q_low", "low_seconds", "#db3"], ["q_audio", "audio_only_seconds", "#e73"],
    ["q_paused", "paused_seconds", "#999"],
  ];
  const total = c ? parts.reduce((s, p) => s + c[p[1]], 0) : 0;
  let x = 10;
  const width = canvas.width - 20;
  parts.forEach(([label, key, color], i) => {
    const share = total ? c[key] / total : 0;
    ctx.fillStyle = color;
    ctx.fillRect(x, 20, width * share, 50);
    x += width * share;
    ctx.fillRect(10, 95 + i * 22, 14, 14);
    ctx.fillStyle = "#333";
    ctx.fillText(t(label) + "  " + (share * 100).toFixed(1) + "%", 30, 107 + i * 22);
  });
  canvas.dataset.drawn = String(total);
}

function render() {
  fillTable($("usage"), sortedRows(), true, state.level);
  fillTable($("least"), state.least, false, "classroom");
  renderSummary();
  drawBars($("chart-daily"), state.days.map((d) => d.date.slice(5)), state.days.map((d) => d.minutes),
    0, "#3a7bd5", (v) => String(Math.round(v)));
  drawBars($("chart-rate"), state.schools.map((s) => s.name), state.schools.map((s) => s.usage_rate || 0),
    1, "#2a7", (v) => Math.round(v * 100) + "%");
  drawQuality($("chart-quality"));
}

document.addEventListener("DOMContentLoaded", () => {
  // A token may come in the fragment (#token=..., never reaches server logs) or, like the CSV
  // links, in the query (/admin?token=...); either way it is taken off the address bar.
  const m = location.hash.match(/token=([^&]+)/);
  const q = new URLSearchParams(location.search).get("token");
  if (m || q) {
    state.token = m ? decodeURIComponent(m[1]) : q;
    sessionStorage.setItem("tongbu-admin-token", state.token);
    history.replaceState(null, "", location.pathname);
  }
  $("token").value = state.token;
  $("save-token").addEventListener("click", () => {
    state.token = $("token").value.trim();
    sessionStorage.setItem("tongbu-admin-token", state.token);
    state.directory = null;
    refresh();
  });
  $("lang").addEventListener("click", () => {
    state.lang = state.lang === "zh" ? "en" : "zh";
    localStorage.setItem("tongbu-lang", state.lang);
    applyLanguage();
  });
  $("county").addEventListener("change", () => { fillSelects(); refresh(); });
  $("school").addEventListener("change", refresh);
  $("level").addEventListener("change", refresh);
  $("refresh").addEventListener("click", refresh);
  applyLanguage();
  refresh();
});
