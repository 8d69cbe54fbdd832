//! In-process test clients: a real str0m peer (client side, full ICE) plus a real WebSocket to a
//! real tongbu server on loopback. Publishers send synthetic VP8 frames whose keyframes carry the
//! layer's width in the VP8 header, so subscribers can tell which simulcast layer they receive.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use tongbu::signal::message::{
    ClientEnvelope, ClientMessage, ServerEnvelope, ServerMessage, SourceKind, TrackInfo,
    TrackSource,
};

/// A simulcast layer a test publisher sends: rid and the width its keyframes announce.
#[derive(Clone, Copy, Debug)]
pub struct Layer {
    pub rid: &'static str,
    pub width: u16,
}

pub const TEACHER_LAYERS: [Layer; 3] = [
    Layer {
        rid: "q",
        width: 320,
    },
    Layer {
        rid: "h",
        width: 640,
    },
    Layer {
        rid: "f",
        width: 1280,
    },
];
pub const CLASSROOM_LAYERS: [Layer; 2] = [
    Layer {
        rid: "q",
        width: 320,
    },
    Layer {
        rid: "h",
        width: 640,
    },
];

/// One frame a subscriber received.
#[derive(Clone, Debug)]
pub struct Received {
    pub mid: Mid,
    pub at: Instant,
    pub rtp_time: u64,
    pub keyframe: bool,
    /// Width announced by the keyframe header, if this is a keyframe.
    pub width: Option<u16>,
    pub len: usize,
    /// The payload type the frame arrived with (RED and plain Opus have their own).
    pub pt: u8,
}

/// `join` for the demo lesson's teacher (host classroom `c-central-1`).
pub fn join_as_teacher(srv: &tongbu::server::RunningServer) -> ClientMessage {
    ClientMessage::Join {
        token: Some(srv.teacher_token("c-central-1")),
        code: None,
    }
}

/// `join` with the code of the demo lesson's `i`-th invited classroom.
pub fn join_by_code(srv: &tongbu::server::RunningServer, i: usize) -> ClientMessage {
    let demo = srv.demo.as_ref().expect("demo lesson");
    ClientMessage::Join {
        token: None,
        code: Some(demo.classrooms[i].code.clone()),
    }
}

impl Received {
    fn of(d: &str0m::media::MediaData) -> Received {
        Received {
            mid: d.mid,
            at: Instant::now(),
            rtp_time: d.time.numer(),
            keyframe: d.is_keyframe(),
            width: width_of(&d.data),
            len: d.data.len(),
            pt: *d.pt,
        }
    }
}

#[derive(Default)]
pub struct ClientState {
    pub messages: Vec<ServerMessage>,
    pub received: Vec<Received>,
    /// Every receiving mid and what the server said it carries.
    pub tracks: HashMap<String, TrackInfo>,
    pub closed: bool,
    pub keyframe_requests: u32,
    /// Fraction of incoming datagrams this client drops, to emulate a lossy downlink.
    pub incoming_loss: f64,
    /// Datagrams dropped so far.
    pub dropped: u64,
    /// RTP packets received with the RED payload type (counted with `ClientOptions::red`).
    pub red_packets: u64,
    /// RTP packets received per payload type (with `ClientOptions::red` or `raw_packets`).
    pub rx_payload_types: std::collections::BTreeMap<u8, u64>,
    /// Datagrams received from the server (before `incoming_loss`).
    pub datagrams_in: u64,
    /// Per receiving mid, for light clients (`ClientOptions::light`).
    pub tallies: HashMap<Mid, Tally>,
    /// Send-to-receive latencies in microseconds of stamped frames (`ClientOptions::stamp`),
    /// `(is_video, micros)`; the reader drains it.
    pub latencies_us: Vec<(bool, u32)>,
    /// Frames written by a publisher (video frames count once for all layers).
    pub video_frames_sent: u64,
    pub audio_frames_sent: u64,
}

/// What a light client keeps per received mid instead of every frame.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    pub video: bool,
    pub frames: u64,
    pub bytes: u64,
    /// Sequence numbers stamped by the publisher (`ClientOptions::stamp`): first and highest
    /// seen, so that `last_seq - first_seq + 1 - frames` is the number of frames lost.
    pub first_seq: Option<u32>,
    pub last_seq: u32,
}

/// Knobs for benchmarks; `ClientOptions::default()` is what the tests use.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Bytes per delta frame of each simulcast layer (0 = lowest); empty: `frame_len`.
    pub layer_bytes: Vec<usize>,
    /// Keyframes are this many times the layer's delta frame size.
    pub keyframe_scale: usize,
    /// Interval between video frames.
    pub frame_interval: Duration,
    /// A keyframe every this many video frames.
    pub keyframe_every: u64,
    /// Bytes per audio frame (at least 16 when stamped).
    pub audio_bytes: usize,
    /// Interval between audio frames; `None`: one with each video frame.
    pub audio_interval: Option<Duration>,
    /// Publisher: write a sequence number and the wall-clock send time into every frame.
    /// Subscriber: read them back (latency samples, per-mid loss tallies).
    pub stamp: bool,
    /// Subscriber: keep per-mid tallies instead of a `Received` per frame.
    pub light: bool,
    /// Negotiate RED (RFC 2198) for audio, as browsers do (also counts payload types).
    pub red: bool,
    /// Count received RTP payload types (`ClientState::rx_payload_types`).
    pub raw_packets: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            layer_bytes: Vec::new(),
            keyframe_scale: 1,
            frame_interval: Duration::from_millis(33),
            keyframe_every: 90,
            audio_bytes: 3,
            audio_interval: None,
            stamp: false,
            light: false,
            red: false,
            raw_packets: false,
        }
    }
}

/// Wall-clock microseconds: publisher and subscriber may be in different processes.
fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Where a stamped frame carries its sequence number and send time: video after the VP8
/// header fields, audio after the Opus TOC bytes.
const VIDEO_STAMP_AT: usize = 12;
const AUDIO_STAMP_AT: usize = 4;

fn write_stamp(frame: &mut [u8], at: usize, seq: u32) {
    frame[at..at + 4].copy_from_slice(&seq.to_le_bytes());
    frame[at + 4..at + 12].copy_from_slice(&wall_us().to_le_bytes());
}

fn read_stamp(frame: &[u8], at: usize) -> Option<(u32, u64)> {
    let b = frame.get(at..at + 12)?;
    Some((
        u32::from_le_bytes(b[..4].try_into().ok()?),
        u64::from_le_bytes(b[4..].try_into().ok()?),
    ))
}

/// Commands from a test to its client task.
pub enum Ctl {
    Send(ClientMessage),
    /// Send a PLI for a received video.
    RequestKeyframe(Mid),
}

/// Bytes per frame of simulcast layer `i` (0 = lowest): the lowest is small (72 kbit/s at
/// 30 fps, so it fits any estimate), the top spans three RTP packets, so that losing one packet
/// loses the frame unless it is retransmitted.
pub fn frame_len(layer: usize) -> usize {
    [300, 1500, 3000].get(layer).copied().unwrap_or(3000)
}

pub struct TestClient {
    pub state: Arc<Mutex<ClientState>>,
    tx: mpsc::UnboundedSender<Ctl>,
}

fn vp8_frame(keyframe: bool, width: u16, len: usize, n: u64) -> Vec<u8> {
    let mut f = vec![0u8; len.max(VIDEO_STAMP_AT + 12)];
    // Frame tag: bit 0 = 0 marks a keyframe; show_frame bit set.
    f[0] = if keyframe { 0x10 } else { 0x11 };
    if keyframe {
        f[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
        f[6..8].copy_from_slice(&width.to_le_bytes());
        f[8..10].copy_from_slice(&(width * 9 / 16).to_le_bytes());
    }
    // Distinct content per frame so nothing can be deduplicated by accident.
    f[12..16].copy_from_slice(&(n as u32).to_le_bytes());
    f
}

fn width_of(frame: &[u8]) -> Option<u16> {
    (frame.len() >= 10 && frame[0] & 1 == 0 && frame[3..6] == [0x9d, 0x01, 0x2a])
        .then(|| u16::from_le_bytes([frame[6], frame[7]]))
}

impl TestClient {
    /// Connects to `/ws`, sends `join`, and (when `layers` is non-empty) publishes audio and
    /// simulcast video once joined.
    pub async fn connect(http: SocketAddr, join: ClientMessage, layers: &[Layer]) -> TestClient {
        Self::connect_with(http, join, layers, ClientOptions::default()).await
    }

    /// `connect` with benchmark knobs.
    pub async fn connect_with(
        http: SocketAddr,
        join: ClientMessage,
        layers: &[Layer],
        opts: ClientOptions,
    ) -> TestClient {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
            .await
            .expect("websocket connects");
        let state = Arc::new(Mutex::new(ClientState::default()));
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(Ctl::Send(join)).unwrap();
        tokio::spawn(run_client(ws, rx, state.clone(), layers.to_vec(), opts));
        TestClient { state, tx }
    }

    pub fn send(&self, msg: ClientMessage) {
        let _ = self.tx.send(Ctl::Send(msg));
    }

    pub fn request_keyframe(&self, mid: Mid) {
        let _ = self.tx.send(Ctl::RequestKeyframe(mid));
    }

    pub fn set_incoming_loss(&self, fraction: f64) {
        self.state.lock().unwrap().incoming_loss = fraction;
    }

    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&ClientState) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f(&self.state.lock().unwrap()) {
                return v;
            }
            if Instant::now() > deadline {
                let s = self.state.lock().unwrap();
                panic!(
                    "timed out waiting for {what}; messages: {:?}; tracks: {:?}; frames received: {}",
                    s.messages.iter().map(short).collect::<Vec<_>>(),
                    s.tracks.values().collect::<Vec<_>>(),
                    s.received.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a server message matching `f`.
    pub async fn wait_message<T>(&self, what: &str, f: impl Fn(&ServerMessage) -> Option<T>) -> T {
        self.wait_for(what, Duration::from_secs(10), |s| {
            s.messages.iter().find_map(&f)
        })
        .await
    }

    /// Mids of received video tracks published by `classroom_id`.
    pub fn video_mid_from(&self, classroom_id: &str) -> Option<Mid> {
        let s = self.state.lock().unwrap();
        s.tracks
            .values()
            .find(|t| {
                t.classroom_id == classroom_id
                    && t.kind == tongbu::signal::message::MediaKind::Video
            })
            .map(|t| Mid::from(t.mid.as_str()))
    }

    /// Frames received so far on the teacher's track of `kind` (0 before it is announced).
    pub fn frames_from_teacher(&self, kind: tongbu::signal::message::MediaKind) -> usize {
        let s = self.state.lock().unwrap();
        let Some(track) = s.tracks.values().find(|t| t.from_teacher && t.kind == kind) else {
            return 0;
        };
        s.received
            .iter()
            .filter(|r| r.mid.to_string() == track.mid)
            .count()
    }

    pub fn frames_on(&self, mid: Mid) -> Vec<Received> {
        self.state
            .lock()
            .unwrap()
            .received
            .iter()
            .filter(|r| r.mid == mid)
            .cloned()
            .collect()
    }

    /// Waits until frames arrive on a video track from `classroom_id`, returning its mid.
    pub async fn wait_video_from(&self, classroom_id: &str) -> Mid {
        self.wait_for(
            &format!("video frames from {classroom_id}"),
            Duration::from_secs(15),
            |s| {
                let mid = s
                    .tracks
                    .values()
                    .find(|t| {
                        t.classroom_id == classroom_id
                            && t.kind == tongbu::signal::message::MediaKind::Video
                    })
                    .map(|t| Mid::from(t.mid.as_str()))?;
                (s.received.iter().filter(|r| r.mid == mid).count() >= 5).then_some(mid)
            },
        )
        .await
    }
}

fn short(m: &ServerMessage) -> String {
    match m {
        ServerMessage::Offer { tracks, .. } => format!("offer({} tracks)", tracks.len()),
        ServerMessage::Answer { .. } => "answer".into(),
        other => {
            let s = serde_json::to_string(other).unwrap_or_default();
            s.chars().take(160).collect()
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send_ws(ws: &mut Ws, msg: ClientMessage) {
    let text = serde_json::to_string(&ClientEnvelope::from(msg)).unwrap();
    let _ = ws.send(Message::Text(text.into())).await;
}

async fn run_client(
    mut ws: Ws,
    mut outgoing: mpsc::UnboundedReceiver<Ctl>,
    state: Arc<Mutex<ClientState>>,
    layers: Vec<Layer>,
    opts: ClientOptions,
) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, opts.red)
        .enable_vp8(true)
        .enable_raw_packets(opts.red || opts.raw_packets)
        .build(Instant::now());
    // RED is folded onto the Opus parameters as their own payload type.
    let red_pt = rtc.codec_config().params().iter().find_map(|p| p.red());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());

    let mut audio_mid = None;
    let mut video_mid = None;
    let mut pending = None;
    let mut published = false;
    let mut want_key: HashMap<Option<Rid>, bool> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    let mut lcg: u64 = 0x5eed;
    let mut frame_n: u64 = 0;
    let start = Instant::now();
    let mut next_frame = Instant::now();
    let mut next_audio = Instant::now();
    let mut audio_n: u32 = 0;
    let mut timeout;

    loop {
        // Drain the Rtc.
        loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(e)) => match e {
                    Event::MediaData(d) if opts.light || opts.stamp => {
                        let video = d.params.spec().codec == str0m::format::Codec::Vp8;
                        let stamp = opts
                            .stamp
                            .then(|| {
                                read_stamp(
                                    &d.data,
                                    if video {
                                        VIDEO_STAMP_AT
                                    } else {
                                        AUDIO_STAMP_AT
                                    },
                                )
                            })
                            .flatten();
                        let mut s = state.lock().unwrap();
                        if let Some((_, sent)) = stamp {
                            let lat = wall_us().saturating_sub(sent).min(u32::MAX as u64) as u32;
                            s.latencies_us.push((video, lat));
                        }
                        if opts.light {
                            let t = s.tallies.entry(d.mid).or_default();
                            t.video = video;
                            t.frames += 1;
                            t.bytes += d.data.len() as u64;
                            if let Some((seq, _)) = stamp {
                                t.first_seq.get_or_insert(seq);
                                t.last_seq = t.last_seq.max(seq);
                            }
                        } else {
                            s.received.push(Received::of(&d));
                        }
                    }
                    Event::MediaData(d) => {
                        state.lock().unwrap().received.push(Received::of(&d));
                    }
                    Event::RawPacket(raw) => {
                        if let str0m::rtp::RawPacket::RtpRx(header, _) = *raw {
                            let mut s = state.lock().unwrap();
                            *s.rx_payload_types.entry(*header.payload_type).or_default() += 1;
                            if Some(header.payload_type) == red_pt {
                                s.red_packets += 1;
                            }
                        }
                    }
                    Event::KeyframeRequest(r) => {
                        state.lock().unwrap().keyframe_requests += 1;
                        want_key.insert(r.rid, true);
                    }
                    _ => {}
                },
                Err(_) => {
                    state.lock().unwrap().closed = true;
                    return;
                }
            }
        }
        let publishing = !layers.is_empty() && video_mid.is_some() && rtc.is_connected();
        let wake = if publishing {
            let w = timeout.min(next_frame);
            if opts.audio_interval.is_some() {
                w.min(next_audio)
            } else {
                w
            }
        } else {
            timeout
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, source)) = r {
                    // A seeded LCG: deterministic loss pattern, no extra dependency.
                    lcg = lcg.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let draw = (lcg >> 33) as f64 / (1u64 << 31) as f64;
                    let drop_it = {
                        let mut s = state.lock().unwrap();
                        s.datagrams_in += 1;
                        let d = draw < s.incoming_loss;
                        s.dropped += d as u64;
                        d
                    };
                    if drop_it {
                        continue;
                    }
                    if let Ok(contents) = buf[..n].try_into() {
                        let _ = rtc.handle_input(Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: local, contents }));
                    }
                }
            }
            m = ws.next() => {
                let Some(Ok(Message::Text(text))) = m else {
                    if matches!(m, Some(Ok(Message::Ping(_) | Message::Pong(_)))) { continue; }
                    state.lock().unwrap().closed = true;
                    return;
                };
                let env: ServerEnvelope = serde_json::from_str(&text).expect("server sends valid messages");
                match &env.msg {
                    ServerMessage::Welcome { lesson: Some(_), .. } | ServerMessage::LessonStarted { .. } if !published => {
                        published = true;
                        let mut api = rtc.sdp_api();
                        let a = api.add_media(MediaKind::Audio, Direction::SendOnly, Some("me".into()), None, None);
                        let mut sources = vec![TrackSource { mid: a.to_string(), source: SourceKind::Microphone }];
                        audio_mid = Some(a);
                        if !layers.is_empty() {
                            let mut sim = Simulcast::new();
                            for l in &layers { sim.add_send_layer(SimulcastLayer::new(l.rid)); }
                            let v = api.add_media(MediaKind::Video, Direction::SendOnly, Some("me".into()), None, Some(sim));
                            sources.push(TrackSource { mid: v.to_string(), source: SourceKind::Camera });
                            video_mid = Some(v);
                        }
                        let (offer, p) = api.apply().expect("changes to offer");
                        pending = Some(p);
                        send_ws(&mut ws, ClientMessage::Offer { sdp: offer.to_sdp_string(), sources }).await;
                    }
                    ServerMessage::Answer { sdp } => {
                        if let Some(p) = pending.take() {
                            rtc.sdp_api().accept_answer(p, SdpAnswer::from_sdp_string(sdp).unwrap()).expect("answer accepted");
                        }
                    }
                    // A server offer that crosses our own is ignored: the server redoes it.
                    ServerMessage::Offer { sdp, tracks } if pending.is_none() => {
                        {
                            let answer = rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(sdp).unwrap()).expect("offer accepted");
                            {
                                let mut s = state.lock().unwrap();
                                s.tracks = tracks.iter().map(|t| (t.mid.clone(), t.clone())).collect();
                            }
                            send_ws(&mut ws, ClientMessage::Answer { sdp: answer.to_sdp_string() }).await;
                        }
                    }
                    _ => {}
                }
                state.lock().unwrap().messages.push(env.msg);
            }
            out = outgoing.recv() => {
                match out {
                    Some(Ctl::Send(msg)) => send_ws(&mut ws, msg).await,
                    Some(Ctl::RequestKeyframe(mid)) => {
                        if let Some(mut w) = rtc.writer(mid) {
                            let _ = w.request_keyframe(None, str0m::media::KeyframeRequestKind::Pli);
                        }
                    }
                    None => return,
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        let now = Instant::now();
        let _ = rtc.handle_input(Input::Timeout(now));
        if publishing && now >= next_frame {
            next_frame += opts.frame_interval;
            frame_n += 1;
            let time =
                MediaTime::from_90khz(now.duration_since(start).as_micros() as u64 * 90 / 1000);
            if let Some(mid) = video_mid {
                for (i, l) in layers.iter().enumerate() {
                    let rid = Rid::from(l.rid);
                    let key = frame_n % opts.keyframe_every == 1
                        || want_key.remove(&Some(rid)).unwrap_or(false);
                    let Some(w) = rtc.writer(mid) else { break };
                    let pt = w
                        .payload_params()
                        .find(|p| p.spec().codec == str0m::format::Codec::Vp8)
                        .map(|p| p.pt());
                    let Some(pt) = pt else { break };
                    let mut len = opts.layer_bytes.get(i).copied().unwrap_or(frame_len(i));
                    if key {
                        len *= opts.keyframe_scale.max(1);
                    }
                    let mut frame = vp8_frame(key, l.width, len, frame_n);
                    if opts.stamp {
                        write_stamp(&mut frame, VIDEO_STAMP_AT, frame_n as u32);
                    }
                    let _ = w.rid(rid).write(pt, now, time, frame);
                }
                state.lock().unwrap().video_frames_sent += 1;
            }
            if opts.audio_interval.is_none() {
                audio_n += 1;
                write_audio(&mut rtc, audio_mid, &opts, now, start, audio_n, &state);
            }
        }
        if let (true, Some(every)) = (publishing, opts.audio_interval) {
            if now >= next_audio {
                // No catch-up burst after publishing starts or after a stall.
                next_audio = (next_audio + every).max(now);
                audio_n += 1;
                write_audio(&mut rtc, audio_mid, &opts, now, start, audio_n, &state);
            }
        }
    }
}

fn write_audio(
    rtc: &mut Rtc,
    audio_mid: Option<Mid>,
    opts: &ClientOptions,
    now: Instant,
    start: Instant,
    n: u32,
    state: &Mutex<ClientState>,
) {
    let Some(w) = audio_mid.and_then(|mid| rtc.writer(mid)) else {
        return;
    };
    let pt = w
        .payload_params()
        .find(|p| p.spec().codec == str0m::format::Codec::Opus)
        .map(|p| p.pt());
    let Some(pt) = pt else { return };
    let t = MediaTime::new(
        now.duration_since(start).as_millis() as u64 * 48,
        str0m::media::Frequency::FORTY_EIGHT_KHZ,
    );
    let mut frame = vec![0xf8u8, 0xff, 0xfe];
    if opts.stamp {
        frame.resize(opts.audio_bytes.max(AUDIO_STAMP_AT + 12), 0);
        write_stamp(&mut frame, AUDIO_STAMP_AT, n);
    } else {
        frame.resize(opts.audio_bytes.max(3), 0);
    }
    if w.write(pt, now, t, frame).is_ok() {
        state.lock().unwrap().audio_frames_sent += 1;
    }
}
