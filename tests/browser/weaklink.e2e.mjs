#!/usr/bin/env node
// tongbu weak-link run in real headless Chromium: one teacher page next to the server (namespace A)
// publishing a high-detail Y4M camera, one classroom page behind the link emulator (namespace B).
//
//   node weaklink.e2e.mjs '<config json>'
//
// Config (written by loadtest/tests/weak_link_browser.rs and loadtest/src/bin/weaklink_bench.rs):
//   ready        the server's TONGBU_READY json (http, teacher_url, classrooms[].link)
//   outDir       where page logs, samples and the result go
//   chromiumA/B  executables that start Chromium inside namespace A / B (wrapper scripts)
//   y4m          the teacher's camera file (--use-file-for-fake-video-capture)
//   t0           epoch ms of the link emulator's t=0 (its rate schedule counts from there)
//   schedule     downlink rate changes [{atS, bps}] relative to t0, first entry atS=0
//   measureFromS, endS   measurement window relative to t0
//   mode         "test": also check the assertions below and exit 1 on failure; "bench": only measure
//   capChecks    (test mode) { dropS, restoreS, settleS, upWithinS, maxAudioGapMs }
//   teacherMaxKbps  optional per-rid maxBitrate for the teacher's simulcast ({f: 1000})
//
// Samples getStats() in the classroom page every 50 ms (teacher audio/video inbound-rtp, transport
// bytes) and in the teacher page every 500 ms (per-rid outbound-rtp, availableOutgoingBitrate), and
// records the server's `quality` (classroom) and `link_quality` (teacher) messages. Prints one line
// `WEAKLINK_RESULT {json}` with the figures (see metrics()).
//
// Test mode proves, deterministically from those samples:
//  1. before the drop the classroom receives a layer above the lowest one (frameWidth > 320);
//  2. during the cap audio keeps arriving: after the first second of the collapse (the link's
//     queue overflows before any sender can react), no interval > maxAudioGapMs without audio;
//  3. from dropS + settleS to restoreS the video is on the lowest layer (frameWidth <= 320, or the
//     server reports it paused and no frame arrives);
//  4. within upWithinS after restoreS the video is back on the top layer (server reports the top
//     layer and the decoded frameWidth equals the top width seen before the drop).

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const T_START = Date.now();
const cfg = JSON.parse(process.argv[2] || process.env.WEAKLINK_CONFIG || 'null');
if (!cfg || !cfg.ready || !cfg.outDir || cfg.t0 === undefined) {
  console.error('usage: node weaklink.e2e.mjs \'<config json>\' (see the header)');
  process.exit(2);
}
fs.mkdirSync(cfg.outDir, { recursive: true });
const ready = cfg.ready;
const mode = cfg.mode || 'test';
const label = cfg.label || 'weaklink';
const rel = (ms) => (ms - cfg.t0) / 1000;           // epoch ms -> seconds on the link's clock
const at = (s) => cfg.t0 + s * 1000;               // link seconds -> epoch ms
const TOTAL_TIMEOUT_MS = (cfg.endS + 40) * 1000 - (Date.now() - cfg.t0);

function log(...args) {
  console.log(`[${label} t=${rel(Date.now()).toFixed(1).padStart(5)}s]`, ...args);
}
class CheckFailed extends Error {}
function fail(msg, detail) {
  throw new CheckFailed(msg + (detail !== undefined ? '\n  details: ' + JSON.stringify(detail) : ''));
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, fn, timeoutMs = 20000, everyMs = 200) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last && last.ok !== false) return last;
    } catch (e) {
      last = { error: String((e && e.message) || e) };
    }
    if (Date.now() > end) fail(`timed out after ${timeoutMs} ms: ${what}`, last);
    await sleep(everyMs);
  }
}

// ------------------------------------------------------------------ browsers
const ORIGIN = new URL(ready.http).origin;
function chromeArgs(extra) {
  return [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
    `--unsafely-treat-insecure-origin-as-secure=${ORIGIN}`,
    ...extra,
  ];
}

const browsers = [];
const pageLogs = [];
/** The teacher's own maxBitrate per rid (bits/s), as set at the start. */
let teacherOwnBps = {};
const messages = { teacher: [], classroom: [] };   // server messages of interest, with epoch ms

async function openPage(name, executablePath, extraArgs) {
  const browser = await chromium.launch({
    executablePath, headless: true, chromiumSandbox: false, timeout: 30000, args: chromeArgs(extraArgs),
  });
  browsers.push(browser);
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 }, permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  const lines = [];
  pageLogs.push({ name, lines });
  const push = (s) => { lines.push(`${rel(Date.now()).toFixed(2)} ${s}`); if (lines.length > 3000) lines.shift(); };
  page.on('console', (m) => push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => push(`PAGE ERROR: ${e.message}`));
  page.on('websocket', (ws) => {
    push(`ws open ${ws.url()}`);
    ws.on('framereceived', (f) => {
      let m;
      try { m = JSON.parse(typeof f.payload === 'string' ? f.payload : f.payload.toString()); } catch { return; }
      const t = Date.now();
      if (m.type === 'quality' || m.type === 'link_quality' || m.type === 'publish_layers') {
        messages[name].push({ t, ...m });
      }
      if (m.type !== 'link_quality' && m.type !== 'pong') push(`ws ← ${m.type} ${m.type === 'error' ? m.code : ''}${m.type === 'quality' || m.type === 'publish_layers' ? JSON.stringify(m) : ''}`);
    });
    ws.on('close', () => push('ws closed'));
  });
  return { browser, page };
}

// ------------------------------------------------------------------ in-page samplers
// Classroom: every 50 ms, the teacher's audio and video inbound-rtp and the transport counters.
function classroomSampler(everyMs) {
  const s = { rows: [], running: true };
  window.__wl = s;
  (async () => {
    while (s.running) {
      const t0 = performance.now();
      const t = window.tongbu;
      if (t && t.pc) {
        const infos = {};
        for (const i of t.state.tracks || []) infos[i.mid] = i;
        let rep;
        try { rep = await t.pc.getStats(); } catch { rep = null; }
        if (rep) {
          const r = { t: Date.now(), aP: 0, aL: 0, aC: 0, aS: 0, aJ: 0, vF: 0, vR: 0, vW: 0, vB: 0, vN: 0, vL: 0, vP: 0, vFz: 0, vFzD: 0, vRtx: 0, vJ: 0, vJT: 0, vJE: 0, vJM: 0, vD: 0, vK: 0, aJd: 0, aJT: 0, aJE: 0, tB: 0, tP: 0 };
          let best = -1;
          rep.forEach((x) => {
            if (x.type === 'inbound-rtp') {
              const info = infos[x.mid];
              if (!info || !info.from_teacher) return;
              if (x.kind === 'audio') {
                r.aP += x.packetsReceived || 0; r.aL += x.packetsLost || 0;
                r.aC += x.concealedSamples || 0; r.aS += x.totalSamplesReceived || 0;
                r.aJ += x.jitterBufferDelay && x.jitterBufferEmittedCount ? x.jitterBufferDelay / x.jitterBufferEmittedCount : 0;
                r.aJd += x.jitterBufferDelay || 0; r.aJT += x.jitterBufferTargetDelay || 0; r.aJE += x.jitterBufferEmittedCount || 0;
              } else if (x.kind === 'video') {
                r.vF += x.framesDecoded || 0; r.vR += x.framesReceived || 0; r.vB += x.bytesReceived || 0;
                r.vN += x.nackCount || 0; r.vL += x.packetsLost || 0; r.vP += x.packetsReceived || 0;
                r.vFz += x.freezeCount || 0; r.vFzD += x.totalFreezesDuration || 0;
                r.vRtx += x.retransmittedPacketsReceived || 0;
                // Jitter buffer and drops: what a stall with whole frames arriving is made of.
                r.vJ += x.jitterBufferDelay || 0; r.vJT += x.jitterBufferTargetDelay || 0; r.vJE += x.jitterBufferEmittedCount || 0;
                r.vJM += x.jitterBufferMinimumDelay || 0;
                r.vD += x.framesDropped || 0; r.vK += x.keyFramesDecoded || 0;
                if ((x.packetsReceived || 0) > best) { best = x.packetsReceived || 0; r.vW = x.frameWidth || 0; }
              }
            } else if (x.type === 'transport') {
              r.tB += x.bytesReceived || 0; r.tP += x.packetsReceived || 0;
            }
          });
          s.rows.push(r);
        }
      }
      await new Promise((res) => setTimeout(res, Math.max(0, everyMs - (performance.now() - t0))));
    }
  })();
}

// Teacher: every 500 ms, per-rid outbound video and the send-side estimate.
function teacherSampler(everyMs) {
  const s = { rows: [], running: true };
  window.__wl = s;
  (async () => {
    while (s.running) {
      const t0 = performance.now();
      const t = window.tongbu;
      if (t && t.pc) {
        let rep;
        try { rep = await t.pc.getStats(); } catch { rep = null; }
        if (rep) {
          const r = { t: Date.now(), aob: 0, rids: {} };
          rep.forEach((x) => {
            if (x.type === 'candidate-pair' && x.nominated && x.availableOutgoingBitrate) r.aob = x.availableOutgoingBitrate;
            if (x.type === 'outbound-rtp' && x.kind === 'video') {
              r.rids[x.rid || '-'] = {
                b: x.bytesSent || 0, w: x.frameWidth || 0, f: x.framesEncoded || 0, tb: x.targetBitrate || 0,
                q: x.qualityLimitationReason || '', act: x.active !== false,
              };
            }
          });
          s.rows.push(r);
        }
      }
      await new Promise((res) => setTimeout(res, Math.max(0, everyMs - (performance.now() - t0))));
    }
  })();
}

// ------------------------------------------------------------------ figures
function rateAt(s) {
  let bps = cfg.schedule[0].bps;
  for (const e of cfg.schedule) if (e.atS <= s) bps = e.bps;
  return bps;
}
/** Capacity in bits of the downlink between link seconds a and b. */
function capacityBits(a, b) {
  let bits = 0;
  const edges = [a, ...cfg.schedule.map((e) => e.atS).filter((x) => x > a && x < b), b];
  for (let i = 0; i + 1 < edges.length; i++) bits += rateAt(edges[i]) * (edges[i + 1] - edges[i]);
  return bits;
}

/** Figures of the classroom samples over link seconds [a, b]. */
function windowFigures(rows, a, b, pausedAt) {
  const w = rows.filter((r) => rel(r.t) >= a && rel(r.t) <= b);
  if (w.length < 2) return null;
  const first = w[0], last = w[w.length - 1];
  const span = (last.t - first.t) / 1000;
  // audio
  const dP = last.aP - first.aP, dL = Math.max(0, last.aL - first.aL);
  let lastA = first.t, lastAP = first.aP, audioGap = 0, audioGapAt = null;
  // video
  let lastV = first.t, lastVF = first.vF, freezeMs = 0, longestFreeze = 0, pausedMs = 0;
  for (const r of w) {
    if (r.aP > lastAP || r === last) {
      if (r.t - lastA > audioGap) { audioGap = r.t - lastA; audioGapAt = rel(lastA); }
      lastA = r.t; lastAP = r.aP;
    }
    if (r.vF > lastVF || r === last) {
      const gap = r.t - lastV;
      if (gap > 200) {
        freezeMs += gap;
        if (pausedAt && pausedAt(rel(lastV) + 0.1)) pausedMs += gap;
      }
      longestFreeze = Math.max(longestFreeze, gap);
      lastV = r.t; lastVF = r.vF;
    }
  }
  // Audio as heard, after RED repair: packets lost on the link but rebuilt from the redundancy
  // of a later packet are played, so the packet counts above understate what a classroom hears.
  // Chromium counts the samples it had to conceal (no data in time, whatever the cause). A
  // silence is a run of 50 ms samples: those that concealed at least half their span carry it
  // on, one that concealed less ends it (its part counted at the end of this run and at the start
  // of the next, as it may hold either). Two short concealments in one sample count as one, so
  // it errs long.
  let silence = 0, longestSilence = 0, longestSilenceAt = null;
  for (let i = 1; i < w.length; i++) {
    const dS = w[i].aS - w[i - 1].aS, dC = w[i].aC - w[i - 1].aC;
    const share = dS > 0 ? Math.min(1, Math.max(0, dC) / dS) : 0;
    const concealedMs = (w[i].t - w[i - 1].t) * share;
    silence += concealedMs;
    if (silence > longestSilence) { longestSilence = silence; longestSilenceAt = rel(w[i].t) - silence / 1000; }
    if (share < 0.5) silence = concealedMs;
  }
  const bits = (last.tB - first.tB + 28 * (last.tP - first.tP)) * 8;   // + IP/UDP headers, as the link counts
  // How long audio waited in Chromium's jitter buffer, on average: what the link's jitter and
  // any burst of late audio add to the classroom's delay.
  const audioBufferMs = last.aJE > first.aJE ? Math.round(1000 * (last.aJd - first.aJd) / (last.aJE - first.aJE)) : null;
  return {
    spanS: +span.toFixed(2),
    audioDeliveredPct: dP + dL > 0 ? +(100 * dP / (dP + dL)).toFixed(2) : null,
    audioPackets: dP, audioLost: dL,
    audioConcealedPct: last.aS > first.aS ? +(100 * (last.aC - first.aC) / (last.aS - first.aS)).toFixed(2) : null,
    longestAudioGapMs: audioGap, longestAudioGapAtS: audioGapAt !== null ? +audioGapAt.toFixed(2) : null,
    audioHeardPct: last.aS > first.aS ? +(100 - 100 * (last.aC - first.aC) / (last.aS - first.aS)).toFixed(2) : null,
    longestSilenceMs: Math.round(longestSilence), longestSilenceAtS: longestSilenceAt !== null ? +longestSilenceAt.toFixed(2) : null,
    videoFreezePct: +(100 * freezeMs / (span * 1000)).toFixed(2),
    videoPausedFreezePct: +(100 * pausedMs / (span * 1000)).toFixed(2),
    longestVideoGapMs: longestFreeze,
    framesDecoded: last.vF - first.vF,
    fps: +((last.vF - first.vF) / span).toFixed(1),
    videoNacks: last.vN - first.vN, videoLost: last.vL - first.vL,
    videoRetransmitted: last.vRtx - first.vRtx,
    chromeFreezes: last.vFz - first.vFz, chromeFreezeS: +(last.vFzD - first.vFzD).toFixed(2),
    receivedKbps: Math.round(bits / span / 1000),
    audioBufferMs,
    utilizationPct: +(100 * bits / capacityBits(rel(first.t), rel(last.t))).toFixed(1),
  };
}

function metrics(cls, tea) {
  const rows = cls;
  const q = messages.classroom.filter((m) => m.type === 'quality');
  // The server's view of the teacher camera track at the classroom, as a step function.
  const videoMid = (() => {
    for (const m of q) for (const tr of m.tracks || []) return tr.mid;
    return null;
  })();
  const qualityAt = (s) => {
    let cur = null;
    for (const m of q) { if (rel(m.t) <= s) cur = (m.tracks || []).find((x) => x.mid === videoMid) || cur; }
    return cur;
  };
  const pausedAt = (s) => { const c = qualityAt(s); return !!(c && c.paused); };
  const topWidth = Math.max(0, ...rows.filter((r) => rel(r.t) >= cfg.measureFromS).map((r) => r.vW));
  const whole = windowFigures(rows, cfg.measureFromS, cfg.endS, pausedAt);
  // The first ten seconds of audio, before the measured window: the delay a classroom joins with.
  const firstAudio = rows.find((r) => r.aJE > 0);
  const startAudioBufferMs = firstAudio
    ? (windowFigures(rows, rel(firstAudio.t), rel(firstAudio.t) + 10, pausedAt) || {}).audioBufferMs ?? null
    : null;
  const phases = [];
  const edges = [...cfg.schedule.map((e) => Math.max(e.atS, cfg.measureFromS)), cfg.endS];
  for (let i = 0; i + 1 < edges.length; i++) {
    if (edges[i + 1] <= edges[i]) continue;
    phases.push({ fromS: edges[i], toS: edges[i + 1], bps: rateAt(edges[i]), ...windowFigures(rows, edges[i], edges[i + 1], pausedAt) });
  }
  // Step down after each drop, back up after each rise.
  const events = [];
  for (let i = 1; i < cfg.schedule.length; i++) {
    const e = cfg.schedule[i], prev = cfg.schedule[i - 1];
    const after = rows.filter((r) => rel(r.t) >= e.atS);
    const before = rows.filter((r) => rel(r.t) < e.atS);
    const wBefore = before.length ? before[before.length - 1].vW : 0;
    if (e.bps < prev.bps) {
      const firstLower = after.find((r) => r.vW < wBefore || pausedAt(rel(r.t)));
      const fits = after.find((r) => r.vW <= 320 || pausedAt(rel(r.t)));
      const qDown = q.find((m) => rel(m.t) >= e.atS && (m.tracks || []).some((x) => x.mid === videoMid && (x.paused || x.layer === 0)));
      events.push({
        kind: 'down', atS: e.atS, widthBefore: wBefore,
        firstStepS: firstLower ? +(rel(firstLower.t) - e.atS).toFixed(2) : null,
        lowestS: fits ? +(rel(fits.t) - e.atS).toFixed(2) : null,
        serverLowestS: qDown ? +(rel(qDown.t) - e.atS).toFixed(2) : null,
      });
    } else {
      const topAgain = after.find((r) => r.vW >= topWidth);
      const qTop = q.find((m) => rel(m.t) >= e.atS && (m.tracks || []).some((x) => x.mid === videoMid && x.layer === 2 && !x.paused));
      events.push({
        kind: 'up', atS: e.atS, widthBefore: wBefore, topWidth,
        topS: topAgain ? +(rel(topAgain.t) - e.atS).toFixed(2) : null,
        serverTopS: qTop ? +(rel(qTop.t) - e.atS).toFixed(2) : null,
      });
    }
  }
  // A one-line-per-second timeline: received width/fps/kbps, the server's estimate and choice,
  // the teacher's send-side estimate and per-layer send rates.
  const lq = messages.teacher.filter((m) => m.type === 'link_quality');
  const timeline = [];
  for (let s = Math.ceil(rel(rows[0].t)); s <= cfg.endS; s++) {
    const r1 = rows.filter((r) => rel(r.t) <= s).pop();
    const r0 = rows.filter((r) => rel(r.t) <= s - 1).pop();
    if (!r1 || !r0 || r1 === r0) continue;
    const dt = (r1.t - r0.t) / 1000;
    const l = lq.filter((m) => rel(m.t) <= s).pop();
    const link = l && l.classrooms && l.classrooms[0];
    const t1 = tea.filter((r) => rel(r.t) <= s).pop();
    const t0 = tea.filter((r) => rel(r.t) <= s - 1).pop();
    const sendKbps = {};
    if (t1 && t0 && t1 !== t0) {
      for (const rid of Object.keys(t1.rids)) {
        const a = t0.rids[rid];
        if (a) sendKbps[rid] = Math.round((t1.rids[rid].b - a.b) * 8 / ((t1.t - t0.t) / 1000) / 1000);
      }
    }
    const qc = qualityAt(s);
    timeline.push({
      s, link: Math.round(rateAt(s) / 1000), w: r1.vW, fps: Math.round((r1.vF - r0.vF) / dt),
      kbps: Math.round((r1.tB - r0.tB + 28 * (r1.tP - r0.tP)) * 8 / dt / 1000),
      aPkts: r1.aP - r0.aP, nack: r1.vN - r0.vN,
      // Video jitter buffer over the second: held per frame / its target, ms.
      jb: r1.vJE > r0.vJE ? `${Math.round(1000 * (r1.vJ - r0.vJ) / (r1.vJE - r0.vJE))}/${Math.round(1000 * (r1.vJT - r0.vJT) / (r1.vJE - r0.vJE))}` : null,
      est: link ? link.estimate_kbps : null, loss: link ? +link.loss_pct.toFixed(1) : null, rtt: link ? link.rtt_ms : null,
      layer: qc ? (qc.paused ? 'P' : qc.layer) : null,
      pubEst: t1 ? Math.round(t1.aob / 1000) : null, pub: sendKbps,
      pubW: t1 ? Object.fromEntries(Object.entries(t1.rids).map(([k, v]) => [k, v.w])) : null,
      pubLim: t1 ? [...new Set(Object.values(t1.rids).map((v) => v.q))].join('/') : null,
    });
  }
  return { label, topWidth, whole, startAudioBufferMs, phases, events, timeline };
}

// ------------------------------------------------------------------ run
let result = null;
async function main() {
  const teacherUrl = new URL(ready.teacher_url, ready.http).href;
  const room = ready.classrooms[0];
  const classroomUrl = new URL(room.link, ready.http).href;
  log(`server ${ready.http}; teacher in A, classroom ${room.classroom_id} in B; mode ${mode}`);

  const { page: teacher } = await openPage('teacher', cfg.chromiumA, cfg.y4m ? [`--use-file-for-fake-video-capture=${cfg.y4m}`] : []);
  await teacher.goto(teacherUrl, { timeout: 15000 });
  await until('teacher page joined', () => teacher.evaluate(() => window.tongbu && window.tongbu.state.status === 'joined'), 15000);
  if (!(await teacher.evaluate(() => !!window.tongbu.state.lesson))) {
    await teacher.fill('#title', 'weak link');
    await teacher.click('#start');
  }
  await until('teacher media connected', () => teacher.evaluate(() => window.tongbu.state.media === 'connected'), 20000);
  if (cfg.teacherMaxKbps) {
    // What the teacher page would do to fit its top layer into a 2 Mbit/s village link.
    const set = await teacher.evaluate(async (caps) => {
      const s = window.tongbu.pc.getSenders().find((x) => x.track && x.track.kind === 'video');
      // The page's own dynacast may set parameters at the same moment (a publish_layers message
      // right after joining), which voids our getParameters(): read and set again.
      for (let attempt = 0; ; attempt++) {
        const p = s.getParameters();
        for (const e of p.encodings) if (caps[e.rid]) e.maxBitrate = caps[e.rid] * 1000;
        try {
          await s.setParameters(p);
          break;
        } catch (e) {
          if (attempt >= 5 || e.name !== 'InvalidStateError') throw e;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      return s.getParameters().encodings.map((e) => [e.rid, e.maxBitrate || null]);
    }, cfg.teacherMaxKbps);
    log('teacher encodings capped:', JSON.stringify(set));
    teacherOwnBps = Object.fromEntries(set);
  }
  log('teacher publishing');

  const { page: cls } = await openPage('classroom', cfg.chromiumB, []);
  await cls.goto(classroomUrl, { timeout: 20000 });
  await until('classroom joined', () => cls.evaluate(() => window.tongbu && window.tongbu.state.status === 'joined'), 20000);
  await until('classroom media connected', () => cls.evaluate(() => window.tongbu.state.media === 'connected'), 20000);
  await cls.evaluate(classroomSampler, 50);
  await teacher.evaluate(teacherSampler, 500);
  log('classroom connected; sampling');
  const firstChange = cfg.schedule.length > 1 ? cfg.schedule[1].atS : cfg.endS;
  if (cfg.schedule.length === 1 && rel(Date.now()) > cfg.measureFromS - 2) {
    // A constant link: setup over a long or lossy path may take longer; measure as long, later.
    const late = rel(Date.now()) + 2 - cfg.measureFromS;
    cfg.measureFromS += late;
    cfg.endS += late;
    log(`setup was slow: measuring from t=${cfg.measureFromS.toFixed(1)} s to ${cfg.endS.toFixed(1)} s`);
  }
  if (rel(Date.now()) > Math.min(firstChange, cfg.measureFromS) - 1) {
    fail(`setup took until t=${rel(Date.now()).toFixed(1)} s, past the measurement start / first rate change`);
  }

  // Progress lines while the schedule runs.
  while (Date.now() < at(cfg.endS)) {
    await sleep(Math.min(5000, at(cfg.endS) - Date.now()));
    const last = await cls.evaluate(() => { const r = window.__wl.rows; return r[r.length - 1]; });
    if (last) log(`link ${rateAt(rel(Date.now())) / 1000} kbit/s: width ${last.vW}, frames ${last.vF}, audio pkts ${last.aP} lost ${last.aL}, nacks ${last.vN}`);
  }
  const clsRows = await cls.evaluate(() => { window.__wl.running = false; return window.__wl.rows; });
  const teaRows = await teacher.evaluate(() => { window.__wl.running = false; return window.__wl.rows; });
  fs.writeFileSync(path.join(cfg.outDir, `${label}-samples.json`), JSON.stringify({ cfg: { ...cfg, ready: undefined }, classroom: clsRows, teacher: teaRows, messages }));
  if (clsRows.length < 10) fail('the classroom sampler collected almost nothing', { n: clsRows.length });
  result = metrics(clsRows, teaRows);
  fs.writeFileSync(path.join(cfg.outDir, `${label}-result.json`), JSON.stringify(result, null, 1));

  if (mode === 'test' && cfg.capChecks) check(clsRows, result);
  if (mode === 'test' && cfg.fecChecks) await checkFec(cls, result);
  if (mode === 'bench') {
    const h = await readFecHistograms(cls, 3000);
    result.fecHistograms = { recoveredPctOfFec: h.recoveredPctOfFec, fecPctOfPackets: h.fecPctOfPackets };
  }
}

// Closes the classroom's connection (so Chromium records its receive-stream histograms) and reads
// the two FEC histograms; a missing one (no FEC received) reads null after `waitMs`.
async function readFecHistograms(page, waitMs) {
  await page.evaluate(() => window.tongbu.pc.close());
  await sleep(1500);
  const hist = await page.context().newPage();
  const read = async (name) => {
    await hist.goto(`chrome://histograms/${name}`);
    await sleep(300);
    const text = await hist.evaluate(() => document.body.innerText);
    const m = text.match(/mean\s*=\s*([0-9.]+)/);
    return { text: text.slice(0, 400), mean: m ? Number(m[1]) : null };
  };
  let recovered = await read('WebRTC.Video.RecoveredMediaPacketsInPercentOfFec');
  const end = Date.now() + waitMs;
  while (recovered.mean === null && Date.now() < end) {
    await sleep(1000);
    recovered = await read('WebRTC.Video.RecoveredMediaPacketsInPercentOfFec');
  }
  const share = await read('WebRTC.Video.ReceivedFecPacketsInPercent');
  return { recoveredPctOfFec: recovered.mean, fecPctOfPackets: share.mean, text: recovered.text };
}

// Video FEC (test mode): the classroom received ULPFEC and Chromium rebuilt lost packets from it.
// getStats() says neither for video (this Chromium leaves fecPacketsReceived at 0 for ULPFEC in
// RED); Chromium records both in histograms when the receive stream ends (after at least 10 s):
// WebRTC.Video.ReceivedFecPacketsInPercent and RecoveredMediaPacketsInPercentOfFec. So the
// connection is closed and chrome://histograms read.
async function checkFec(page, res) {
  const c = cfg.fecChecks;
  const whole = res.whole || {};
  if (!(whole.framesDecoded > 0)) fail('no video decoded', whole);
  log(`video: ${whole.videoLost} lost, ${whole.videoRetransmitted} retransmitted, ${whole.framesDecoded} frames decoded`);
  const h = await readFecHistograms(page, 10000);
  res.fecHistograms = h;
  if (!(h.fecPctOfPackets >= c.minFecPct)) fail(`FEC was ${h.fecPctOfPackets} % of the video packets (want >= ${c.minFecPct})`, h);
  if (!(h.recoveredPctOfFec > 0)) fail('Chromium recovered no media packet from the FEC', h);
  log(`OK Chromium rebuilt media from FEC: recovered ${h.recoveredPctOfFec} % of FEC packets' worth; FEC was ${h.fecPctOfPackets} % of video packets`);
}

function check(rows, res) {
  const c = cfg.capChecks;
  const q = messages.classroom.filter((m) => m.type === 'quality');
  const pausedAt = (s) => {
    let cur = null;
    for (const m of q) if (rel(m.t) <= s) cur = m;
    return !!(cur && (cur.tracks || []).some((x) => x.paused));
  };
  // 1. Above the lowest layer before the drop.
  const pre = rows.filter((r) => rel(r.t) < c.dropS);
  // What it settled on: the widest picture of the last 3 s (a layer can be taken for a moment
  // at the start, before its frame rate shows it is choppy).
  const preTop = Math.max(0, ...pre.filter((r) => rel(r.t) >= c.dropS - 3).map((r) => r.vW));
  if (!(preTop > 320)) fail(`before the cap the classroom never got above the lowest layer (widest ${preTop})`);
  log(`OK before the cap: received up to ${preTop} px wide`);
  // 2. Audio during the cap. The first second after the collapse is the transient: the link's
  // queue overflows before any sender can react (the server steps down within ~2 s); it is
  // reported, and the gap bound holds from then on.
  const TRANSIENT_S = 1.0;
  const cap = windowFigures(rows, c.dropS, c.restoreS, pausedAt);
  const steady = windowFigures(rows, c.dropS + TRANSIENT_S, c.restoreS, pausedAt);
  if (!cap || cap.audioPackets < 20 * (c.restoreS - c.dropS)) fail('too few audio packets during the cap', cap);
  if (steady.longestAudioGapMs > c.maxAudioGapMs) fail(`audio gap of ${steady.longestAudioGapMs} ms (> ${c.maxAudioGapMs}) during the cap, at t=${steady.longestAudioGapAtS} s`, steady);
  log(`OK audio during the cap: ${cap.audioPackets} packets, delivered ${cap.audioDeliveredPct} %, longest gap ${steady.longestAudioGapMs} ms after the first ${TRANSIENT_S} s (${cap.longestAudioGapMs} ms including the collapse itself)`);
  // 3. Lowest layer (or paused) from dropS + settleS until restoreS.
  const held = rows.filter((r) => rel(r.t) >= c.dropS + c.settleS && rel(r.t) <= c.restoreS);
  const bad = held.filter((r) => !(r.vW <= 320 || pausedAt(rel(r.t))));
  if (bad.length) fail(`video not on the lowest layer ${c.settleS} s into the cap`, bad.slice(0, 5).map((r) => ({ t: rel(r.t).toFixed(2), w: r.vW })));
  const pausedCount = held.filter((r) => pausedAt(rel(r.t))).length;
  const down = res.events.find((e) => e.kind === 'down');
  log(`OK during the cap: lowest layer${pausedCount ? ' or paused' : ''} from ${down.lowestS} s after the drop (widths ${[...new Set(held.map((r) => r.vW))].join(',')})`);
  // 4. Back to the top layer after the cap: the layer the server chose on the same link before
  // it (a higher one can be left out for running at a third of the frame rate: Tuning::choppy_ratio).
  const after = rows.filter((r) => rel(r.t) >= c.restoreS);
  const lastBefore = q.filter((m) => rel(m.t) < c.dropS).pop();
  const preLayer = Math.max(-1, ...((lastBefore && lastBefore.tracks) || [])
    .filter((x) => !x.paused && x.layer != null).map((x) => x.layer));
  if (!(preLayer >= 1)) fail(`before the cap the server never chose above the lowest layer (highest ${preLayer})`);
  const q2 = q.filter((m) => rel(m.t) >= c.restoreS);
  const topServer = q2.find((m) => (m.tracks || []).some((x) => x.layer >= preLayer && !x.paused));
  const topRecv = after.find((r) => r.vW >= preTop);
  if (!topRecv || rel(topRecv.t) - c.restoreS > c.upWithinS) {
    fail(`video not back on the top layer (${preTop} px) within ${c.upWithinS} s after the cap`, { widths: [...new Set(after.map((r) => r.vW))], serverTop: topServer ? rel(topServer.t) - c.restoreS : null });
  }
  if (!topServer) fail(`the server never reported layer ${preLayer} (its choice before the cap) after the cap`);
  log(`OK after the cap: back to ${topRecv.vW} px ${(rel(topRecv.t) - c.restoreS).toFixed(2)} s after the link recovered (server: layer ${preLayer} after ${(rel(topServer.t) - c.restoreS).toFixed(2)} s)`);
  // 5. Layer shaping: the server raised a teacher layer over its own maxBitrate on the 2 Mbit/s
  // link (publish_layers.max_kbps), and the teacher's encoder followed.
  const shaped = messages.teacher.filter((m) => m.type === 'publish_layers' && Object.keys(m.max_kbps || {}).length);
  if (!shaped.length) fail('the server never raised a teacher layer (publish_layers.max_kbps)');
  const raised = [...new Set(shaped.flatMap((m) => Object.keys(m.max_kbps)))];
  const peaks = raised.map((rid) => ({ rid, peakKbps: Math.max(0, ...res.timeline.map((s) => (s.pub || {})[rid] || 0)), ownKbps: (teacherOwnBps[rid] || 0) / 1000 }));
  const followed = peaks.filter((p) => p.ownKbps > 0 && p.peakKbps > 1.3 * p.ownKbps);
  if (!followed.length) fail('no raised teacher layer sent over 1.3 × its own maxBitrate', peaks);
  log(`OK layer shaping: ${followed.map((p) => `${p.rid} up to ${p.peakKbps} kbit/s (own ${p.ownKbps})`).join(', ')}`);
  // 6. Dynacast by what is taken: during the cap the classroom took the lowest layer only, so the
  // teacher was told to encode it alone, and stopped sending the others; after the cap a higher
  // layer was switched back on.
  const told = messages.teacher.filter((m) => m.type === 'publish_layers').map((m) => ({ s: +rel(m.t).toFixed(2), active: m.active }));
  const alone = told.find((m) => m.s > c.dropS && m.s < c.restoreS && m.active.length === 1);
  if (!alone) fail('during the cap the teacher was never told to encode its lowest layer alone', told);
  const stoppedAt = res.timeline.filter((x) => x.s >= alone.s + 2 && x.s < c.restoreS);
  const stillSent = stoppedAt.filter((x) => Object.entries(x.pub || {}).some(([rid, kbps]) => !alone.active.includes(rid) && kbps > 0));
  if (!stoppedAt.length || stillSent.length) fail('the teacher kept sending a layer it was told to stop', { alone, stillSent: stillSent.slice(0, 3) });
  const back = told.find((m) => m.s > c.restoreS && m.active.length > 1);
  if (!back) fail('after the cap no higher teacher layer was switched back on', told);
  log(`OK dynacast: lowest layer alone from ${(alone.s - c.dropS).toFixed(2)} s into the cap (${stoppedAt.length} s with nothing else sent), ${back.active.join('+')} from ${(back.s - c.restoreS).toFixed(2)} s after it`);
}

function dumpLogs() {
  for (const { name, lines } of pageLogs) {
    try { fs.writeFileSync(path.join(cfg.outDir, `${label}-${name}.log`), lines.join('\n') + '\n'); } catch { /* ignore */ }
  }
}
async function closeAll() {
  for (const b of browsers) { try { await b.close(); } catch { /* ignore */ } }
}

let code = 0;
const watchdog = setTimeout(async () => {
  console.error(`FAIL: ${label} exceeded its time bound`);
  dumpLogs();
  await closeAll();
  process.exit(1);
}, Math.max(TOTAL_TIMEOUT_MS, 30000));

try {
  await main();
  if (mode === 'test') log('PASS');
} catch (e) {
  code = 1;
  console.error(`FAIL: ${e instanceof CheckFailed ? e.message : (e && e.stack) || e}`);
  for (const { name, lines } of pageLogs) {
    console.error(`---- last lines of ${name} ----`);
    console.error(lines.slice(-15).join('\n'));
  }
} finally {
  if (result) {
    console.log('WEAKLINK_RESULT ' + JSON.stringify(result));
  }
  dumpLogs();
  await closeAll();
  clearTimeout(watchdog);
}
process.exit(code);
