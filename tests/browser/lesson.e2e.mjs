#!/usr/bin/env node
// tongbu end-to-end test in real headless Chromium.
//
//   node lesson.e2e.mjs '<READY json>' [out-dir]
//
// The READY json is what `tongbu serve` prints after "TONGBU_READY ": at least `http`,
// `teacher_url` and `classrooms: [{classroom_id, name, code, link}]`. Screenshots and page logs go
// to out-dir (default: a fresh directory under the system temp dir). Exit code 0 = every check
// passed; otherwise the first failed check is printed with the stats that made it fail.
//
// What it proves, with getStats() on the real pages:
//  1. the teacher page opens the demo lesson and lists the join codes;
//  2. two classroom pages join by typing their code;
//  3. each classroom decodes the teacher's video (framesDecoded rising) and receives the
//     teacher's audio (packetsReceived / bytesReceived rising);
//  4. the teacher decodes both classrooms' video;
//  5. a forced layer switch (setMaxLayer low → high) changes the frameWidth a classroom receives,
//     sampled every 100 ms, with no 500 ms window without a newly decoded frame;
//  6. after "call on" (button on the teacher page) classroom B decodes classroom A's video;
//  7. a raised hand shows its marker on the teacher page;
//  8. ending the lesson (button + confirm) shows the end message on both classroom pages.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const T0 = Date.now();
const TOTAL_TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS || 240000);
const CHROMIUM = process.env.TONGBU_CHROMIUM || '/usr/bin/chromium';

// ------------------------------------------------------------------ arguments
let raw = process.argv[2] || process.env.TONGBU_READY || '';
raw = raw.trim().replace(/^TONGBU_READY\s+/, '');
if (!raw) {
  console.error('usage: node lesson.e2e.mjs \'<READY json>\' [out-dir]');
  process.exit(2);
}
let ready;
try {
  ready = JSON.parse(raw);
} catch (e) {
  console.error('READY argument is not JSON:', e.message, '\n', raw.slice(0, 300));
  process.exit(2);
}
const outDir = process.argv[3] || fs.mkdtempSync(path.join(os.tmpdir(), 'tongbu-e2e-'));
fs.mkdirSync(outDir, { recursive: true });

const base = ready.http;
if (!base || !ready.teacher_url || !Array.isArray(ready.classrooms) || ready.classrooms.length < 2) {
  console.error('READY json lacks http / teacher_url / two classrooms:', JSON.stringify(ready));
  process.exit(2);
}
const teacherUrl = new URL(ready.teacher_url, base).href;
const classroomUrl = new URL('/classroom', base).href;
const roomA = ready.classrooms[0];
const roomB = ready.classrooms[1];

function log(...args) {
  const s = ((Date.now() - T0) / 1000).toFixed(1).padStart(6);
  console.log(`[e2e ${s}s]`, ...args);
}

class CheckFailed extends Error {}
function fail(msg, detail) {
  throw new CheckFailed(msg + (detail !== undefined ? '\n  details: ' + JSON.stringify(detail) : ''));
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll fn() until it returns a truthy value or the timeout passes. */
async function until(label, fn, timeoutMs = 20000, everyMs = 250) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last && last.ok !== false) return last;
    } catch (e) {
      last = { error: String(e && e.message || e) };
    }
    if (Date.now() > end) fail(`timed out after ${timeoutMs} ms: ${label}`, last);
    await sleep(everyMs);
  }
}

// ------------------------------------------------------------------ browser
const pageLogs = [];     // [{name, lines}]
let browser;

async function openPage(name) {
  const context = await browser.newContext({
    viewport: { width: 1366, height: 768 },
    permissions: ['camera', 'microphone'],
    locale: 'zh-CN',
  });
  const page = await context.newPage();
  const lines = [];
  pageLogs.push({ name, lines });
  const push = (s) => { lines.push(`${((Date.now() - T0) / 1000).toFixed(1)} ${s}`); if (lines.length > 400) lines.shift(); };
  page.on('console', (m) => push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => push(`PAGE ERROR: ${e.message}`));
  page.on('websocket', (ws) => {
    const brief = (d) => {
      try {
        const m = JSON.parse(typeof d === 'string' ? d : d.toString());
        const extra = m.type === 'error' ? ` ${m.code} ${JSON.stringify(m.message)} fatal=${m.fatal}` :
          m.type === 'offer' && m.tracks ? ` tracks=${JSON.stringify(m.tracks)}` :
          m.type === 'lesson_state' ? ` called_on=${m.lesson.called_on} ${JSON.stringify(m.lesson.classrooms.map((c) => [c.classroom_id, c.connected, c.hand_raised]))}` :
          m.type === 'join' ? (m.code ? ` code=${m.code}` : ' token') : '';
        return m.type + extra;
      } catch { return `(non-JSON ${String(d).length} bytes)`; }
    };
    push(`ws open ${ws.url()}`);
    ws.on('framesent', (f) => push(`ws → ${brief(f.payload)}`));
    ws.on('framereceived', (f) => push(`ws ← ${brief(f.payload)}`));
    ws.on('close', () => push('ws closed'));
  });
  return page;
}

// Runs inside a page: every inbound-rtp entry, labelled with the server's TrackInfo for its mid.
async function inboundInPage() {
  const t = window.tongbu;
  if (!t || !t.pc) return { pc: null, rows: [] };
  const infos = {};
  for (const i of t.state.tracks || []) infos[i.mid] = i;
  const rep = await t.pc.getStats();
  const rows = [];
  rep.forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    rows.push({
      mid: s.mid, kind: s.kind, ssrc: s.ssrc,
      framesDecoded: s.framesDecoded || 0, frameWidth: s.frameWidth || 0, frameHeight: s.frameHeight || 0,
      bytesReceived: s.bytesReceived || 0, packetsReceived: s.packetsReceived || 0,
      packetsLost: s.packetsLost || 0, nackCount: s.nackCount || 0,
      info: infos[s.mid] || null,
    });
  });
  return { pc: t.pc.connectionState, rows };
}

/** Sum the inbound stats of the mids matching `pred(info)`; returns null when none. */
function pick(stats, kind, pred) {
  const rows = stats.rows.filter((r) => r.kind === kind && r.info && pred(r.info));
  if (!rows.length) return null;
  const sum = (k) => rows.reduce((a, r) => a + r[k], 0);
  const widest = rows.reduce((a, r) => (r.packetsReceived > a.packetsReceived ? r : a), rows[0]);
  return {
    mids: [...new Set(rows.map((r) => r.mid))],
    framesDecoded: sum('framesDecoded'), bytesReceived: sum('bytesReceived'),
    packetsReceived: sum('packetsReceived'), packetsLost: sum('packetsLost'), nackCount: sum('nackCount'),
    frameWidth: widest.frameWidth, frameHeight: widest.frameHeight,
  };
}

const fromTeacher = (i) => i.from_teacher;
const fromRoom = (id) => (i) => !i.from_teacher && i.classroom_id === id;

/** Prove that a counter of the selected track rises by at least `need` within the timeout. */
async function provesRising(page, who, what, kind, pred, field, need, timeoutMs = 20000) {
  let first = null;
  const r = await until(`${who}: ${what} ${field} rising by ${need}`, async () => {
    const st = await page.evaluate(inboundInPage);
    const p = pick(st, kind, pred);
    if (!p) return { ok: false, pc: st.pc, note: 'no such inbound track yet', rows: st.rows.map((x) => [x.mid, x.kind, x.info]) };
    if (first === null) first = p;
    return { ok: p[field] - first[field] >= need, first: first[field], now: p[field], pc: st.pc, stat: p };
  }, timeoutMs);
  log(`OK ${who}: ${what} ${field} ${r.first} → ${r.now}` + (kind === 'video' ? ` (${r.stat.frameWidth}×${r.stat.frameHeight})` : ''));
  return r;
}

// ------------------------------------------------------------------ the scenario
const results = {};

async function main() {
  log(`chromium ${CHROMIUM}; server ${base}; out ${outDir}`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    chromiumSandbox: false,
    timeout: 30000,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection',
    ],
  });
  log('browser', browser.version());

  // 1. Teacher page opens the demo lesson.
  const teacher = await openPage('teacher');
  await teacher.goto(teacherUrl, { timeout: 15000 });
  await until('teacher page: welcome received', () => teacher.evaluate(() => window.tongbu && window.tongbu.state.status === 'joined'), 15000);
  let hasLesson = await teacher.evaluate(() => !!window.tongbu.state.lesson);
  if (!hasLesson) {
    // No demo lesson: start one through the form with every invitable classroom.
    log('no live lesson: starting one through the form');
    await teacher.fill('#title', '三年级数学 · 分数的初步认识');
    await teacher.click('#start');
  }
  await until('teacher page: lesson view shown', () => teacher.isVisible('#lesson-view'), 15000);
  await until('teacher page: media connected', () => teacher.evaluate(() => window.tongbu.state.media === 'connected'), 20000);
  const invites = await teacher.evaluate(() => window.tongbu.state.invites);
  const codeOf = (room) => {
    const inv = invites.find((i) => i.classroom_id === room.classroom_id);
    return (hasLesson && room.code) || (inv && inv.code);
  };
  for (const room of [roomA, roomB]) {
    const code = codeOf(room);
    if (!code) fail(`no join code for ${room.classroom_id}`, { ready: room, invites });
    const shown = await teacher.locator(`#invites li[data-classroom-id="${room.classroom_id}"] .code`).textContent({ timeout: 5000 });
    if (shown.trim() !== code) fail(`teacher page shows code ${shown} for ${room.classroom_id}, expected ${code}`);
  }
  log(`OK teacher page: lesson "${await teacher.textContent('#lesson-title')}", codes listed`);

  // 2. Two classrooms join by typing their codes.
  const pages = {};
  for (const [label, room] of [['A', roomA], ['B', roomB]]) {
    const p = await openPage(`classroom ${label}`);
    pages[label] = p;
    await p.goto(classroomUrl, { timeout: 15000 });
    await p.waitForSelector('#code', { state: 'visible', timeout: 10000 });
    if (label === 'A') {
      // Language switch round trip on the entry form.
      await p.click('#lang');
      const en = (await p.textContent('#join')).trim();
      await p.click('#lang');
      const zh = (await p.textContent('#join')).trim();
      if (en !== 'Join' || zh !== '进入课堂') fail('language switch did not change the join button', { en, zh });
      // A wrong code gives a clear message and keeps the form.
      const codes = new Set(ready.classrooms.map((c) => c.code));
      let wrong = 100000;
      while (codes.has(String(wrong))) wrong++;
      await p.type('#code', String(wrong));
      await p.click('#join');
      await until('classroom A: wrong code message', async () => {
        const t = (await p.textContent('#code-error')).trim();
        return t.length > 0 && await p.isVisible('#code') ? { text: t } : { ok: false, text: t };
      }, 10000).then((r) => log(`OK classroom A: wrong code says "${r.text}"`));
      await p.fill('#code', '');
    }
    await p.type('#code', codeOf(room), { delay: 30 });
    if (label === 'A') await p.screenshot({ path: path.join(outDir, 'classroom-entry.png') });
    await p.click('#join');
    await until(`classroom ${label}: joined the lesson`, () => p.evaluate(() => {
      const s = window.tongbu.state;
      return s.status === 'joined' && s.lesson ? { ok: true, id: s.classroom_id } : { ok: false, status: s.status, err: s.lastError };
    }), 15000);
    const id = await p.evaluate(() => window.tongbu.state.classroom_id);
    if (id !== room.classroom_id) fail(`classroom ${label} joined as ${id}, expected ${room.classroom_id}`);
    await until(`classroom ${label}: media connected`, () => p.evaluate(() => window.tongbu.state.media === 'connected'), 20000);
    log(`OK classroom ${label} (${room.classroom_id}) joined by code`);
  }
  const A = pages.A, B = pages.B;

  // 3. Each classroom decodes the teacher's video and receives the teacher's audio.
  for (const [label, p] of [['A', A], ['B', B]]) {
    const v = await provesRising(p, `classroom ${label}`, 'teacher video', 'video', fromTeacher, 'framesDecoded', 30);
    const a = await provesRising(p, `classroom ${label}`, 'teacher audio', 'audio', fromTeacher, 'packetsReceived', 50);
    await provesRising(p, `classroom ${label}`, 'teacher audio', 'audio', fromTeacher, 'bytesReceived', 2000);
    results[`classroom${label}`] = { teacherVideo: v.stat, teacherAudio: a.stat };
    // The page shows it where it belongs.
    const w = await p.evaluate(() => document.getElementById('teacher-video').videoWidth);
    if (!w) fail(`classroom ${label}: the teacher video element shows nothing`);
  }

  // 4. The teacher decodes both classrooms.
  for (const room of [roomA, roomB]) {
    const r = await provesRising(teacher, 'teacher', `${room.classroom_id} video`, 'video', fromRoom(room.classroom_id), 'framesDecoded', 30);
    results[`teacher_${room.classroom_id}`] = r.stat;
    await until(`teacher page: tile of ${room.classroom_id} shows video`, () => teacher.evaluate(
      (id) => document.querySelector(`#grid [data-classroom-id="${id}"] video`).videoWidth > 0, room.classroom_id), 10000);
  }

  // 5. Forced layer switch on classroom B, sampled every 100 ms inside the page.
  await B.evaluate(() => {
    const s = { samples: [], running: true };
    window.__e2eSampler = s;
    (async () => {
      while (s.running) {
        const t0 = performance.now();
        const t = window.tongbu;
        if (t.pc) {
          const mids = new Set((t.state.tracks || []).filter((i) => i.from_teacher && i.kind === 'video').map((i) => i.mid));
          const rep = await t.pc.getStats();
          let frames = 0, width = 0, best = -1;
          rep.forEach((r) => {
            if (r.type === 'inbound-rtp' && r.kind === 'video' && mids.has(r.mid)) {
              frames += r.framesDecoded || 0;
              if ((r.packetsReceived || 0) > best) { best = r.packetsReceived || 0; width = r.frameWidth || 0; }
            }
          });
          s.samples.push({ t: Date.now(), frames, width });
        }
        await new Promise((r) => setTimeout(r, Math.max(0, 100 - (performance.now() - t0))));
      }
    })();
  });
  const widthNow = () => B.evaluate(() => { const s = window.__e2eSampler.samples; return s.length ? s[s.length - 1].width : 0; });
  await sleep(1000);
  const auto = await widthNow();
  // Up to the top layer first (the server's automatic choice may already be the lowest one),
  // then down to the lowest, then up again: both directions, decoder sampled throughout.
  await B.evaluate(() => window.tongbu.setMaxLayer('high'));
  log(`classroom B: setMaxLayer('high') (receiving ${auto} px wide on 'auto')`);
  const up1 = await until(`classroom B: frameWidth reaches the top layer (> 320) after setMaxLayer('high')`, async () => {
    const w = await widthNow();
    return w > 320 && w >= auto ? { w } : { ok: false, w };
  }, 20000, 100);
  await sleep(1500);
  const before = await widthNow();
  await B.evaluate(() => window.tongbu.setMaxLayer('low'));
  log(`classroom B: setMaxLayer('low') (receiving ${before} px wide)`);
  const low = await until(`classroom B: frameWidth drops below ${before} after setMaxLayer('low')`, async () => {
    const w = await widthNow();
    return w > 0 && w < before ? { w } : { ok: false, w };
  }, 15000, 100);
  await sleep(2000);
  await B.evaluate(() => window.tongbu.setMaxLayer('high'));
  log(`classroom B: setMaxLayer('high') (receiving ${low.w} px wide)`);
  const high = await until(`classroom B: frameWidth rises above ${low.w} after setMaxLayer('high')`, async () => {
    const w = await widthNow();
    return w > low.w ? { w } : { ok: false, w };
  }, 20000, 100);
  await sleep(2000);
  const samples = await B.evaluate(() => { window.__e2eSampler.running = false; return window.__e2eSampler.samples; });
  // Longest time without a newly decoded frame over the whole switch window.
  // (Time between consecutive samples that saw a new frame; 100 ms sampling, so >= ~100 ms.)
  let lastNew = samples[0].t, lastFrames = samples[0].frames, maxGap = 0, gapAt = 0;
  for (const s of samples) {
    if (s.frames > lastFrames || s === samples[samples.length - 1]) {
      if (s.t - lastNew > maxGap) { maxGap = s.t - lastNew; gapAt = s.t - samples[0].t; }
      lastFrames = s.frames;
      lastNew = s.t;
    }
  }
  const widths = [...new Set(samples.map((s) => s.width))];
  const span = samples[samples.length - 1].t - samples[0].t;
  const frames = samples[samples.length - 1].frames - samples[0].frames;
  const intervals = samples.slice(1).map((s, i) => s.t - samples[i].t).sort((a, b) => a - b);
  results.layerSwitch = {
    widthAuto: auto, widthFirstHigh: up1.w, widthBefore: before, widthLow: low.w, widthHigh: high.w, widthsSeen: widths, samples: samples.length,
    spanMs: span, framesDecoded: frames, longestGapMs: maxGap, gapAtMs: gapAt,
    sampleIntervalMedianMs: intervals[Math.floor(intervals.length / 2)],
    sampleIntervalMaxMs: intervals[intervals.length - 1],
  };
  log('layer switch:', JSON.stringify(results.layerSwitch));
  if (maxGap > 500) fail(`classroom B: decoder stalled ${maxGap} ms (> 500 ms) around the layer switch`, results.layerSwitch);
  if (high.w <= low.w || low.w >= before) fail('layer switch did not change the frame width', results.layerSwitch);
  log(`OK layer switch: ${auto} (auto) → ${up1.w} → ${low.w} → ${high.w} px, longest decode gap ${maxGap} ms over ${span} ms`);

  // 6. Call on classroom A from the teacher page; classroom B decodes A's video.
  await teacher.click(`#grid [data-classroom-id="${roomA.classroom_id}"] button.call-on`);
  await until('classroom B: lesson_state says A is called on', () => B.evaluate(
    (id) => window.tongbu.state.lesson && window.tongbu.state.lesson.called_on === id, roomA.classroom_id), 10000);
  const stageV = await provesRising(B, 'classroom B', `called-on ${roomA.classroom_id} video`, 'video', fromRoom(roomA.classroom_id), 'framesDecoded', 30);
  const stageA = await provesRising(B, 'classroom B', `called-on ${roomA.classroom_id} audio`, 'audio', fromRoom(roomA.classroom_id), 'packetsReceived', 30);
  results.calledOn = { video: stageV.stat, audio: stageA.stat };
  await until('classroom B: stage video element shows A', () => B.evaluate(() => document.getElementById('stage-video').videoWidth > 0 && !document.getElementById('stage-box').hidden), 10000);
  await until('classroom A: "on stage" badge', () => A.isVisible('#on-stage'), 5000);
  log('OK call on: classroom B shows classroom A on stage');

  // 7. Raise a hand in classroom B; the teacher page shows the marker.
  await B.click('#hand');
  const handSel = `#grid [data-classroom-id="${roomB.classroom_id}"] .hand`;
  await teacher.waitForSelector(handSel, { state: 'visible', timeout: 10000 }).catch(() => fail('teacher page: no hand-raised marker on classroom B'));
  log(`OK hand raised: teacher sees "${(await teacher.textContent(handSel)).trim()}" on ${roomB.classroom_id}`);

  await sleep(500);
  await teacher.screenshot({ path: path.join(outDir, 'teacher.png') });
  await B.screenshot({ path: path.join(outDir, 'classroom-b.png') });
  await A.screenshot({ path: path.join(outDir, 'classroom-a.png') });

  // Send A back; the stage disappears from B.
  await teacher.click(`#grid [data-classroom-id="${roomA.classroom_id}"] button.send-back`);
  await until('classroom B: stage closes after send back', () => B.evaluate(() => document.getElementById('stage-box').hidden), 10000);
  log('OK send back: the stage closed on classroom B');

  // 8. End the lesson from the teacher page (accept the confirm dialog).
  teacher.once('dialog', (d) => { log(`teacher confirm: "${d.message()}"`); d.accept(); });
  await teacher.click('#end');
  for (const [label, p] of [['A', A], ['B', B]]) {
    const text = await until(`classroom ${label}: lesson-ended message`, async () => {
      const vis = await p.isVisible('#notice');
      const t = vis ? (await p.textContent('#notice')).trim() : '';
      return vis && t.includes('本节课已结束') ? { t } : { ok: false, vis, t };
    }, 10000);
    log(`OK classroom ${label} shows "${text.t}"`);
  }
  await B.screenshot({ path: path.join(outDir, 'classroom-ended.png') });
  await until('teacher page: back to the start form', () => teacher.isVisible('#start-form'), 10000)
    .then(() => log('OK teacher page offers a new lesson'))
    .catch((e) => log('note: teacher page did not return to the start form:', e.message.split('\n')[0]));
  await teacher.screenshot({ path: path.join(outDir, 'teacher-ended.png') });
}

// ------------------------------------------------------------------ run, bounded
function dumpLogs() {
  for (const { name, lines } of pageLogs) {
    const file = path.join(outDir, `${name.replace(/\s+/g, '-')}.log`);
    try { fs.writeFileSync(file, lines.join('\n') + '\n'); } catch { /* ignore */ }
  }
}

let code = 0;
const watchdog = setTimeout(async () => {
  console.error(`FAIL: the whole test exceeded ${TOTAL_TIMEOUT_MS} ms`);
  dumpLogs();
  try { await browser?.close(); } catch { /* ignore */ }
  process.exit(1);
}, TOTAL_TIMEOUT_MS);

try {
  await main();
  log('PASS', JSON.stringify(results));
} catch (e) {
  code = 1;
  console.error(`FAIL: ${e instanceof CheckFailed ? e.message : (e && e.stack) || e}`);
  for (const { name, lines } of pageLogs) {
    console.error(`---- last lines of ${name} ----`);
    console.error(lines.slice(-25).join('\n'));
  }
  if (browser) {
    for (const ctx of browser.contexts()) {
      for (const p of ctx.pages()) {
        const i = browser.contexts().indexOf(ctx);
        try { await p.screenshot({ path: path.join(outDir, `failure-${i}.png`), timeout: 5000 }); } catch { /* ignore */ }
      }
    }
  }
} finally {
  dumpLogs();
  console.log(`screenshots and page logs: ${outDir}`);
  try { await browser?.close(); } catch { /* ignore */ }
  clearTimeout(watchdog);
}
process.exit(code);
