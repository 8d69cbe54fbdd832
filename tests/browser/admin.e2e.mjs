#!/usr/bin/env node
// tongbu admin page in real headless Chromium, against a server with usage already recorded.
//
//   node admin.e2e.mjs '{"base":"http://127.0.0.1:PORT","token":"<city admin token>","out_dir":"DIR"}'
//
// Run by tests/admin_page.rs (which seeds the database and starts the server). Exit code 0 =
// every check passed; otherwise the first failed check is printed. Checks:
//  1. /admin?token=… loads, takes the token off the address bar, and shows no error;
//  2. every row and cell of the usage table equals the API's /api/usage (classroom level), names
//     shown as text (a school name with markup stays literal), and the default order is by minutes;
//  3. the summary equals the city row; the least-used table equals /api/usage/least-used;
//  4. the charts are drawn from those numbers: one bar per day with minutes (pixels of the bar
//     colour above the axis), one per school with a usage rate above zero, and the quality strip's
//     segments as wide as each level's share of the city's seconds;
//  5. the CSV link downloads exactly what /api/usage?format=csv answers, with the table's rows;
//  6. switching to school level and English shows the API's school rows; sorting by a column
//     header orders the rows.
// Screenshots (full page): admin-zh.png, admin-en-school.png in out_dir.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const CHROMIUM = process.env.TONGBU_CHROMIUM || '/usr/bin/chromium';
const TOTAL_TIMEOUT_MS = 90000;
const T0 = Date.now();

const args = JSON.parse(process.argv[2] || '{}');
const { base, token } = args;
const outDir = args.out_dir || fs.mkdtempSync('/tmp/tongbu-admin-');
if (!base || !token) {
  console.error("usage: node admin.e2e.mjs '{\"base\":…,\"token\":…,\"out_dir\":…}'");
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });

const log = (...a) => console.log(`[admin ${((Date.now() - T0) / 1000).toFixed(1)}s]`, ...a);
class CheckFailed extends Error {}
function check(cond, what, detail) {
  if (!cond) throw new CheckFailed(`${what}${detail === undefined ? '' : ': ' + JSON.stringify(detail)}`);
}

async function api(p) {
  const r = await fetch(base + p, { headers: { Authorization: 'Bearer ' + token } });
  check(r.ok, `GET ${p} answers 200`, r.status);
  return r;
}
const apiJson = async (p) => (await api(p)).json();

// The page's number format (web/admin.js `fmt`): what a cell must show for an API value.
function fmt(key, v) {
  if (v === null || v === undefined) return '–';
  if (key === 'usage_rate') return (v * 100).toFixed(1) + '%';
  if (key === 'quality_score' || key === 'minutes') return v.toFixed(1);
  return String(v);
}
const NUMBERS = ['minutes', 'sessions', 'lessons_invited', 'lessons_attended', 'usage_rate',
  'quality_score', 'reconnects', 'called_on', 'hands_raised', 'freezes'];
// The columns per level: what a row belongs to (a classroom's school, a school's county), then
// the numbers.
const COLUMNS = {
  classroom: ['id', 'name', 'school_name', ...NUMBERS],
  school: ['id', 'name', 'county_name', ...NUMBERS],
};

// RFC 4180 rows.
function parseCsv(text) {
  const rows = [];
  let row = [], field = '', quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(field); field = ''; }
    else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field); rows.push(row); row = []; field = '';
    } else field += c;
  }
  if (field !== '' || row.length) { row.push(field); rows.push(row); }
  return rows;
}

/** The table's rows as [{id, cells: {key: text}}], in page order. */
async function tableRows(page, id) {
  return page.$$eval(`#${id} tbody tr`, (trs) => trs.map((tr) => ({
    id: tr.dataset.id,
    cells: Object.fromEntries([...tr.cells].map((td) => [td.dataset.key, td.textContent])),
    markup: tr.querySelector('b, script, img') !== null,
  })));
}

function compareTable(rows, apiRows, what, level) {
  check(rows.length === apiRows.length, `${what}: as many rows as the API`, [rows.length, apiRows.length]);
  const byId = new Map(apiRows.map((r) => [r.id, r]));
  for (const r of rows) {
    const want = byId.get(r.id);
    check(want, `${what}: row ${r.id} is in the API's answer`);
    check(!r.markup, `${what}: row ${r.id} has no markup from data`);
    check(Object.keys(r.cells).join() === COLUMNS[level].join(), `${what}: columns`, r.cells);
    for (const key of COLUMNS[level]) {
      check(r.cells[key] === fmt(key, want[key]), `${what}: ${r.id}.${key} equals the API's`,
        { page: r.cells[key], api: want[key] });
    }
  }
}

/** Pixels of `rgb` (±6 per channel) in row `y` of a canvas, as runs [start, length]. */
async function colourRuns(page, canvasId, y, rgb) {
  return page.$eval(`#${canvasId}`, (c, [y, rgb]) => {
    const d = c.getContext('2d').getImageData(0, y, c.width, 1).data;
    const runs = [];
    let start = -1;
    for (let x = 0; x <= c.width; x++) {
      const hit = x < c.width && d[x * 4 + 3] > 200 &&
        [0, 1, 2].every((k) => Math.abs(d[x * 4 + k] - rgb[k]) <= 6);
      if (hit && start < 0) start = x;
      if (!hit && start >= 0) { runs.push([start, x - start]); start = -1; }
    }
    return runs;
  }, [y, rgb]);
}

async function waitLoaded(page, want, what) {
  await page.waitForFunction((n) =>
    document.querySelectorAll('#usage tbody tr').length === n &&
    document.getElementById('status').textContent === '', want, { timeout: 15000 })
    .catch(async () => {
      const status = await page.textContent('#status');
      throw new CheckFailed(`${what}: table never showed ${want} rows (status: ${status})`);
    });
}

let browser;
async function main() {
  // What the API says, fetched independently of the page.
  const usage = await apiJson('/api/usage?level=classroom&per_page=1000');
  const schools = await apiJson('/api/usage?level=school&per_page=1000');
  const city = (await apiJson('/api/usage?level=city')).rows[0];
  const least = await apiJson('/api/usage/least-used?limit=20');
  const daily = await apiJson('/api/usage/daily');
  // Bytes, not text(): fetch's text() would drop the BOM.
  const csvApiBytes = Buffer.from(await (await api('/api/usage?level=classroom&format=csv')).arrayBuffer());
  log(`API: ${usage.rows.length} classrooms, ${schools.rows.length} schools, city ${city.minutes} min`);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({
    acceptDownloads: true, viewport: { width: 1280, height: 900 }, locale: 'zh-CN',
  });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') pageErrors.push(`${m.text()} (${m.location().url})`);
  });

  // 1. Load with the token in the query.
  await page.goto(`${base}/admin?token=${encodeURIComponent(token)}`);
  await waitLoaded(page, usage.rows.length, 'first load');
  check(!page.url().includes('token='), 'the token is taken off the address bar', page.url());
  check(await page.getAttribute('html', 'lang') === 'zh-CN', 'Chinese by default');
  log('page loaded');

  // 2. The usage table equals the API, ordered by minutes (descending).
  const rows = await tableRows(page, 'usage');
  compareTable(rows, usage.rows, 'usage table', 'classroom');
  const minutes = rows.map((r) => Number(r.cells.minutes));
  check(minutes.every((m, i) => i === 0 || minutes[i - 1] >= m), 'ordered by minutes', minutes);
  const markupName = usage.rows.find((r) => /[<>]/.test(r.school_name || ''));
  if (markupName) {
    const shown = rows.find((r) => r.id === markupName.id).cells.school_name;
    check(shown === markupName.school_name, 'a name with markup is shown literally', shown);
  }
  log(`usage table: ${rows.length} rows equal the API's`);

  // 3. Summary and least-used.
  const summary = Object.fromEntries(await page.$$eval('#summary div', (ds) =>
    ds.map((d) => [d.dataset.key, d.querySelector('b').textContent])));
  check(summary.s_minutes === fmt('minutes', city.minutes), 'summary minutes = city', [summary, city.minutes]);
  check(summary.s_rate === fmt('usage_rate', city.usage_rate), 'summary usage rate = city', summary);
  check(summary.s_quality === fmt('quality_score', city.quality_score), 'summary quality = city', summary);
  check(summary.s_classrooms === String(city.classrooms), 'summary classrooms = city', summary);
  const leastRows = await tableRows(page, 'least');
  compareTable(leastRows, least.rows, 'least-used table', 'classroom');
  check(leastRows.map((r) => r.id).join() === least.rows.map((r) => r.id).join(),
    'least-used order is the API\'s', leastRows.map((r) => r.id));

  // 4. Charts.
  // Daily minutes: bars of #3a7bd5 just above the axis (canvas 220 high, 30 px bottom margin).
  const busyDays = daily.days.filter((d) => d.minutes > 0).length;
  const dailyRuns = await colourRuns(page, 'chart-daily', 220 - 30 - 2, [0x3a, 0x7b, 0xd5]);
  check(busyDays > 0 && dailyRuns.length === busyDays, 'one daily bar per day with minutes',
    { busyDays, dailyRuns });
  // The tallest bar reaches the top margin (y = 10) when it is the maximum.
  const topRuns = await colourRuns(page, 'chart-daily', 12, [0x3a, 0x7b, 0xd5]);
  check(topRuns.length >= 1, 'the busiest day\'s bar spans the chart', topRuns);
  // Usage rate per school: #2a7 bars for schools with a rate above 0.
  const ratedSchools = schools.rows.filter((s) => (s.usage_rate || 0) > 0).length;
  const rateRuns = await colourRuns(page, 'chart-rate', 220 - 30 - 2, [0x22, 0xaa, 0x77]);
  check(rateRuns.length === ratedSchools, 'one rate bar per school with a usage rate',
    { ratedSchools, rateRuns });
  // Quality strip at y 20..70, 540 px wide: each level's segment is its share of the seconds.
  const parts = [['top_seconds', [0x22, 0xaa, 0x77]], ['middle_seconds', [0x77, 0xbb, 0x44]],
    ['low_seconds', [0xdd, 0xbb, 0x33]], ['audio_only_seconds', [0xee, 0x77, 0x33]],
    ['paused_seconds', [0x99, 0x99, 0x99]]];
  const total = parts.reduce((s, [k]) => s + city[k], 0);
  check(total > 0, 'the city has seconds per quality level', city);
  const canvasWidth = await page.$eval('#chart-quality', (c) => c.width);
  for (const [key, rgb] of parts) {
    const runs = await colourRuns(page, 'chart-quality', 45, rgb);
    const width = runs.reduce((s, [, n]) => s + n, 0);
    const want = ((canvasWidth - 20) * city[key]) / total;
    check(Math.abs(width - want) <= 2, `quality strip: ${key} segment width`, { width, want });
  }
  log(`charts: ${dailyRuns.length} daily bars, ${rateRuns.length} school bars, quality strip matches`);
  await page.screenshot({ path: path.join(outDir, 'admin-zh.png'), fullPage: true });

  // 5. CSV download = the API's CSV, and its rows are the table's.
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: 10000 }),
    page.click('#csv')]);
  const csvBytes = fs.readFileSync(await download.path());
  check(csvBytes.equals(csvApiBytes), 'the downloaded CSV is byte for byte what the API answers',
    { page: csvBytes.toString().slice(0, 200), api: csvApiBytes.toString().slice(0, 200) });
  const csvPage = csvBytes.toString('utf8');
  check(csvPage.charCodeAt(0) === 0xfeff, 'the CSV starts with a BOM');
  const csv = parseCsv(csvPage.slice(1)).filter((r) => r.length > 1);
  const header = csv[0];
  const csvRows = csv.slice(1).map((r) => Object.fromEntries(header.map((h, i) => [h, r[i]])));
  check(csvRows.map((r) => r.id).sort().join() === rows.map((r) => r.id).sort().join(),
    'the CSV has the table\'s rows', csvRows.map((r) => r.id));
  for (const r of csvRows) {
    const want = usage.rows.find((u) => u.id === r.id);
    for (const key of ['name', 'school_name', 'sessions', 'lessons_invited', 'lessons_attended',
      'reconnects', 'called_on', 'hands_raised', 'freezes']) {
      check(r[key] === String(want[key] ?? ''), `CSV ${r.id}.${key}`, { csv: r[key], api: want[key] });
    }
    check(Math.abs(Number(r.minutes) - want.minutes) < 1e-9, `CSV ${r.id}.minutes`, [r.minutes, want.minutes]);
  }
  log(`CSV: ${csvRows.length} rows, identical to the API's CSV`);

  // 6. School level, English, sorting.
  await page.click('#lang');
  check(await page.getAttribute('html', 'lang') === 'en', 'switched to English');
  await page.selectOption('#level', 'school');
  await waitLoaded(page, schools.rows.length, 'school level');
  const schoolRows = await tableRows(page, 'usage');
  compareTable(schoolRows, schools.rows, 'school table', 'school');
  const minutesHeader = page.locator('#usage thead th[data-key="minutes"]');
  check(await minutesHeader.textContent() === 'Minutes', 'English column names');
  await minutesHeader.click(); // minutes is the current sort key: now ascending
  const asc = (await tableRows(page, 'usage')).map((r) => Number(r.cells.minutes));
  check(asc.every((m, i) => i === 0 || asc[i - 1] <= m), 'ascending after a header click', asc);
  await page.screenshot({ path: path.join(outDir, 'admin-en-school.png'), fullPage: true });

  check(pageErrors.length === 0, 'no errors in the page', pageErrors);
  log('every check passed');
}

const timer = setTimeout(() => {
  console.error(`FAILED: no result within ${TOTAL_TIMEOUT_MS} ms`);
  process.exit(1);
}, TOTAL_TIMEOUT_MS);
try {
  await main();
  await browser.close();
  clearTimeout(timer);
  process.exit(0);
} catch (e) {
  console.error('FAILED:', e instanceof CheckFailed ? e.message : e.stack || e);
  try {
    const pages = browser ? browser.contexts().flatMap((c) => c.pages()) : [];
    if (pages[0]) await pages[0].screenshot({ path: path.join(outDir, 'failure.png'), fullPage: true });
  } catch (_) { /* best effort */ }
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
