// ICE-TCP fallback in real Chromium: a classroom whose browser may not use UDP (as behind a
// firewall that only lets TCP out) still receives the lesson, over the server's passive TCP
// candidate. The teacher uses a normal browser.
//
// Usage: node tcp.e2e.mjs '<TONGBU_READY json>' <outdir>
import { chromium } from 'playwright-core';

const ready = JSON.parse(process.argv[2]);
const CHROMIUM = process.env.TONGBU_CHROMIUM || '/usr/bin/chromium';
const T0 = Date.now();
const log = (...a) => console.log(`[tcp ${((Date.now() - T0) / 1000).toFixed(1)}s]`, ...a);
const fail = (msg, detail) => { console.error(`FAIL: ${msg}`, detail ? JSON.stringify(detail) : ''); process.exit(1); };

async function until(label, fn, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    last = await fn().catch((e) => ({ ok: false, error: String(e) }));
    if (last && last.ok !== false) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  fail(`timed out after ${timeoutMs} ms: ${label}`, last);
}

const BASE_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
];

async function launch(extra) {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, chromiumSandbox: false, timeout: 30000, args: [...BASE_ARGS, ...extra] });
}

async function page(browser) {
  const ctx = await browser.newContext({ permissions: ['camera', 'microphone'], locale: 'zh-CN' });
  return ctx.newPage();
}

// The selected candidate pair's protocol and the teacher video's decoded frames.
async function mediaInPage() {
  const t = window.tongbu;
  if (!t || !t.pc) return { ok: false, note: 'no peer connection' };
  const rep = await t.pc.getStats();
  let pair = null, frames = 0;
  const byId = {};
  rep.forEach((s) => { byId[s.id] = s; });
  rep.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId[s.selectedCandidatePairId];
    if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
  });
  const local = pair && byId[pair.localCandidateId];
  const remote = pair && byId[pair.remoteCandidateId];
  return { ok: true, state: t.pc.connectionState, protocol: local && local.protocol, remoteProtocol: remote && remote.protocol, frames };
}

const teacherBrowser = await launch([]);
// No UDP unless through a proxy, and there is no proxy: only TCP candidates remain.
const tcpBrowser = await launch(['--webrtc-ip-handling-policy=disable_non_proxied_udp', '--force-webrtc-ip-handling-policy']);
const timer = setTimeout(() => fail('overall timeout (90 s)'), 90000);
try {
  const teacher = await page(teacherBrowser);
  await teacher.goto(ready.teacher_url);
  await until('teacher joined', () => teacher.evaluate(() => ({ ok: !!(window.tongbu && window.tongbu.state.status === 'joined') })));

  const room = ready.classrooms[0];
  const c = await page(tcpBrowser);
  await c.goto(room.link);
  const first = await until('classroom connected and decoding over TCP', async () => {
    const m = await c.evaluate(mediaInPage);
    return m.state === 'connected' && m.frames > 0 ? m : { ...m, ok: false };
  }, 45000);
  if (first.protocol !== 'tcp') fail('the classroom did not use TCP', first);
  const later = await until('teacher video keeps decoding over TCP', async () => {
    const m = await c.evaluate(mediaInPage);
    return m.frames >= first.frames + 30 ? m : { ...m, ok: false };
  }, 20000);
  log(`OK classroom over ${later.protocol}: framesDecoded ${first.frames} → ${later.frames}`);
  // And the teacher sees the classroom that came in over TCP.
  await until('teacher decodes the TCP classroom', () => teacher.evaluate(async (id) => {
    const t = window.tongbu;
    const mids = (t.state.tracks || []).filter((i) => i.classroom_id === id && i.kind === 'video').map((i) => i.mid);
    let frames = 0;
    (await t.pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && mids.includes(s.mid)) frames += s.framesDecoded || 0; });
    return frames > 10 ? { frames } : { ok: false, frames };
  }, room.classroom_id), 20000);
  log('PASS');
} finally {
  clearTimeout(timer);
  await teacherBrowser.close().catch(() => {});
  await tcpBrowser.close().catch(() => {});
}
