//! Interoperability with an independent WebRTC stack: a classroom built on the `webrtc` crate
//! (webrtc-rs 0.21, on its sans-IO core `rtc`) joins a live lesson by code, speaking the signaling
//! protocol as raw JSON from `proto/README.md`, publishes a microphone and a camera, and receives
//! the teacher's audio and video. The teacher is the in-process str0m client from `common`.
//!
//! What it proves: tongbu negotiates with an offerer other than str0m (the classroom's offer, the
//! server's renegotiation offers answered by webrtc-rs), ICE-lite + DTLS + SRTP come up with
//! webrtc-rs as the controlling agent, RTP flows both ways, and `set_max_layer` switches the
//! simulcast layer a webrtc-rs subscriber receives (seen in the VP8 keyframe header).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rtc::media::Sample;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::packetizer::Depacketizer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::{MediaStreamTrack, Track};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, Registry,
};

use common::{TestClient, TEACHER_LAYERS};
use tongbu::server::{self, ServerConfig};
use tongbu::signal::message::ClientMessage;

const OPUS_PT: u8 = 111;
const VP8_PT: u8 = 96;
/// Width our keyframes announce; the teacher's layers are 320/640/1280.
const CLASSROOM_WIDTH: u16 = 200;

/// What the webrtc-rs classroom has seen.
#[derive(Default, Debug)]
struct Seen {
    welcome: Option<Value>,
    /// Every server message type, in order, for failure messages.
    messages: Vec<String>,
    /// Receiving mids the server announced in its offers, with their `tracks` entries.
    tracks: Vec<Value>,
    errors: Vec<Value>,
    answers_sent: u32,
    offers_ignored: u32,
    on_track: Vec<RtpCodecKind>,
    audio_packets: u32,
    video_packets: u32,
    /// Widths of received VP8 keyframes, in order, with the video packet count at the time.
    keyframes: Vec<(u32, u16)>,
    /// SSRC and RTP timestamp of every received video packet.
    video_rtp: Vec<(u32, u32)>,
    /// A negotiation step webrtc-rs refused, or a signaling failure: fails the test at once.
    fatal: Option<String>,
    state: Option<RTCPeerConnectionState>,
    /// Remote tracks whose event stream ended. Reported, not asserted: webrtc-rs 0.21 does not
    /// end a remote track when a remote offer stops its m-line (port 0, inactive).
    tracks_ended: u32,
}

type Shared = Arc<Mutex<Seen>>;

/// Locks `seen`, also after a failed assertion panicked while holding it.
fn lock(seen: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Handler {
    seen: Shared,
    gathered: mpsc::UnboundedSender<()>,
    connected: mpsc::UnboundedSender<()>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        lock(&self.seen).state = Some(state);
        if state == RTCPeerConnectionState::Connected {
            let _ = self.connected.send(());
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let kind = track.kind().await;
        lock(&self.seen).on_track.push(kind);
        tokio::spawn(read_track(track, kind, self.seen.clone()));
    }
}

/// Counts RTP packets per kind; for video, depacketizes each partition head and records the
/// width of keyframes.
async fn read_track(track: Arc<dyn TrackRemote>, kind: RtpCodecKind, seen: Shared) {
    while let Some(ev) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(pkt) = ev else {
            continue;
        };
        let mut s = lock(&seen);
        match kind {
            RtpCodecKind::Audio => s.audio_packets += 1,
            RtpCodecKind::Video => {
                s.video_packets += 1;
                s.video_rtp.push((pkt.header.ssrc, pkt.header.timestamp));
                let mut vp8 = Vp8Packet::default();
                if let Ok(frame) = vp8.depacketize(&pkt.payload) {
                    if vp8.s == 1 && vp8.pid == 0 {
                        if let Some(w) = keyframe_width(&frame) {
                            let n = s.video_packets;
                            s.keyframes.push((n, w));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    lock(&seen).tracks_ended += 1;
}

/// Width from a VP8 keyframe header: frame tag bit 0 clear, start code 9d 01 2a, then width.
fn keyframe_width(frame: &[u8]) -> Option<u16> {
    (frame.len() >= 10 && frame[0] & 1 == 0 && frame[3..6] == [0x9d, 0x01, 0x2a])
        .then(|| u16::from_le_bytes([frame[6], frame[7]]))
}

fn vp8_frame(keyframe: bool, n: u32) -> Vec<u8> {
    let mut f = vec![0u8; 120];
    f[0] = if keyframe { 0x10 } else { 0x11 };
    if keyframe {
        f[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
        f[6..8].copy_from_slice(&CLASSROOM_WIDTH.to_le_bytes());
        f[8..10].copy_from_slice(&(CLASSROOM_WIDTH * 3 / 4).to_le_bytes());
    }
    f[12..16].copy_from_slice(&n.to_le_bytes());
    f
}

fn codec(kind: RtpCodecKind) -> RTCRtpCodecParameters {
    let (mime_type, clock_rate, channels, fmtp, pt) = match kind {
        RtpCodecKind::Audio => (
            MIME_TYPE_OPUS,
            48_000,
            2,
            "minptime=10;useinbandfec=1",
            OPUS_PT,
        ),
        _ => (MIME_TYPE_VP8, 90_000, 0, "", VP8_PT),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime_type.to_owned(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    }
}

fn local_track(kind: RtpCodecKind, ssrc: u32) -> Arc<TrackLocalStaticSample> {
    let track = MediaStreamTrack::new(
        "webrtc-rs-classroom".to_owned(),
        format!("webrtc-rs-{kind}"),
        format!("webrtc-rs-{kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec(kind).rtp_codec,
            ..Default::default()
        }],
    );
    Arc::new(TrackLocalStaticSample::new(Instant::now(), track).expect("local track"))
}

/// Writes ~20 ms silent Opus frames and ~30 fps tiny VP8 frames (a keyframe every second) until
/// the tracks are unbound.
async fn publish(audio: Arc<TrackLocalStaticSample>, video: Arc<TrackLocalStaticSample>) {
    let (a_ssrc, v_ssrc) = (audio.ssrcs().await[0], video.ssrcs().await[0]);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let start = Instant::now();
    let (mut audio_n, mut video_n) = (0u32, 0u32);
    loop {
        tick.tick().await;
        let elapsed = start.elapsed();
        if elapsed >= Duration::from_millis(20) * audio_n {
            audio_n += 1;
            let sample = Sample {
                data: vec![0xf8u8, 0xff, 0xfe].into(),
                duration: Duration::from_millis(20),
                ..Sample::new(Instant::now())
            };
            if audio
                .sample_writer(a_ssrc, OPUS_PT)
                .write_sample(&sample)
                .await
                .is_err()
            {
                return;
            }
        }
        if elapsed >= Duration::from_millis(33) * video_n {
            video_n += 1;
            let sample = Sample {
                data: vp8_frame(video_n % 30 == 1, video_n).into(),
                duration: Duration::from_millis(33),
                ..Sample::new(Instant::now())
            };
            if video
                .sample_writer(v_ssrc, VP8_PT)
                .write_sample(&sample)
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// `TONGBU_INTEROP_DEBUG=1` prints the signaling, SDP included.
fn debug(dir: &str, msg: &Value) {
    if std::env::var_os("TONGBU_INTEROP_DEBUG").is_some() {
        eprintln!(
            "{dir} {}\n{}",
            msg["type"],
            msg["sdp"].as_str().unwrap_or("")
        );
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut Ws, msg: Value) {
    debug(">>>", &msg);
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .expect("websocket send");
}

/// Next JSON message from the server, recorded in `seen`; `None` once the socket closes.
async fn recv(ws: &mut Ws, seen: &Shared) -> Option<Value> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(text)) => {
                let v: Value = serde_json::from_str(&text).expect("server sends JSON");
                debug("<<<", &v);
                let mut s = lock(seen);
                s.messages
                    .push(v["type"].as_str().unwrap_or("?").to_owned());
                if v["type"] == "error" {
                    s.errors.push(v.clone());
                }
                return Some(v);
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            _ => return None,
        }
    }
}

/// Local description after ICE gathering is complete (the protocol has no trickle).
async fn local_sdp(
    pc: &impl PeerConnection,
    gathered: &mut mpsc::UnboundedReceiver<()>,
) -> Result<String, String> {
    // Gathering completes once per ICE generation; later descriptions carry the same candidates.
    let _ = tokio::time::timeout(Duration::from_secs(5), gathered.recv()).await;
    let sdp = pc
        .local_description()
        .await
        .ok_or("no local description")?
        .sdp;
    if !(sdp.contains("a=candidate:") && sdp.contains(" 127.0.0.1 ")) {
        return Err(format!(
            "the webrtc-rs description lacks a loopback host candidate:\n{sdp}"
        ));
    }
    Ok(sdp)
}

/// The webrtc-rs classroom: joins with `code`, publishes, answers the server's offers. Returns
/// what it sees and a sender for extra signaling messages (e.g. `set_max_layer`).
async fn webrtc_classroom(
    http: std::net::SocketAddr,
    code: &str,
) -> (Shared, mpsc::UnboundedSender<Value>) {
    let seen: Shared = Arc::default();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .expect("websocket connects");
    send(&mut ws, json!({"v": 1, "type": "join", "code": code})).await;
    let welcome = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let m = recv(&mut ws, &seen)
                .await
                .expect("socket open until welcome");
            if m["type"] == "welcome" {
                return m;
            }
            assert_ne!(m["type"], "error", "join refused: {m}");
        }
    })
    .await
    .expect("welcome within 5 s");
    assert_eq!(welcome["role"], "classroom", "{welcome}");
    assert!(
        welcome["lesson"].is_object(),
        "welcome has the live lesson: {welcome}"
    );
    lock(&seen).welcome = Some(welcome);

    let mut media = MediaEngine::default();
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        media.register_codec(codec(kind), kind).expect("codec");
    }
    let registry =
        register_default_interceptors(Registry::new(), &mut media).expect("interceptors");
    let (gathered_tx, mut gathered) = mpsc::unbounded_channel();
    let (connected_tx, connected) = mpsc::unbounded_channel();
    let pc = PeerConnectionBuilder::new()
        // No ICE servers: the server's host candidate is in its SDP.
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            seen: seen.clone(),
            gathered: gathered_tx,
            connected: connected_tx,
        }))
        // A concrete address is bound as given, loopback included: one host candidate.
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await
        .expect("peer connection");

    let audio = local_track(RtpCodecKind::Audio, 0x1111_0001);
    let video = local_track(RtpCodecKind::Video, 0x1111_0002);
    let mut sources = vec![];
    for (track, source) in [(&audio, "microphone"), (&video, "camera")] {
        let t = pc
            .add_transceiver_from_track(
                track.clone() as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )
            .await
            .expect("sendonly transceiver");
        sources.push((t, source));
    }
    let offer = pc.create_offer(None).await.expect("offer");
    pc.set_local_description(offer).await.expect("local offer");
    let mut sources_json = vec![];
    for (t, source) in sources {
        let mid = t
            .mid()
            .await
            .expect("transceiver")
            .expect("mid after offer");
        sources_json.push(json!({"mid": mid, "source": source}));
    }
    let sdp = local_sdp(&pc, &mut gathered).await.unwrap();
    send(
        &mut ws,
        json!({"v": 1, "type": "offer", "sdp": sdp, "sources": sources_json}),
    )
    .await;

    let (out_tx, out_rx) = mpsc::unbounded_channel::<Value>();
    let task_seen = seen.clone();
    tokio::spawn(async move {
        let result = signaling(
            &pc,
            ws,
            gathered,
            connected,
            out_rx,
            &task_seen,
            [audio, video],
        )
        .await;
        if let Err(e) = result {
            lock(&task_seen).fatal = Some(e);
        }
        let _ = pc.close().await;
    });
    (seen, out_tx)
}

/// After the first offer: handles the server's messages, starts publishing once connected, and
/// forwards `out` messages, until `out` closes.
async fn signaling(
    pc: &impl PeerConnection,
    mut ws: Ws,
    mut gathered: mpsc::UnboundedReceiver<()>,
    mut connected: mpsc::UnboundedReceiver<()>,
    mut out: mpsc::UnboundedReceiver<Value>,
    seen: &Shared,
    [audio, video]: [Arc<TrackLocalStaticSample>; 2],
) -> Result<(), String> {
    let mut publishing = false;
    // Our offer is in flight until the server's answer comes.
    let mut have_local_offer = true;
    loop {
        tokio::select! {
            m = recv(&mut ws, seen) => {
                let m = m.ok_or("the server closed the WebSocket")?;
                on_server_message(pc, &mut ws, &mut gathered, seen, &mut have_local_offer, m).await?;
            }
            Some(()) = connected.recv(), if !publishing => {
                publishing = true;
                tokio::spawn(publish(audio.clone(), video.clone()));
            }
            msg = out.recv() => match msg {
                Some(msg) => send(&mut ws, msg).await,
                None => return Ok(()),
            },
        }
    }
}

/// Applies the server's answer; answers a server offer unless it crosses our own (the glare
/// rule: the server drops it and offers again).
async fn on_server_message(
    pc: &impl PeerConnection,
    ws: &mut Ws,
    gathered: &mut mpsc::UnboundedReceiver<()>,
    seen: &Shared,
    have_local_offer: &mut bool,
    m: Value,
) -> Result<(), String> {
    let sdp = m["sdp"].as_str().unwrap_or_default().to_owned();
    match m["type"].as_str() {
        Some("answer") => {
            let answer = RTCSessionDescription::answer(sdp.clone())
                .map_err(|e| format!("server answer does not parse: {e}\n{sdp}"))?;
            pc.set_remote_description(answer)
                .await
                .map_err(|e| format!("webrtc-rs rejects the server's answer: {e}\n{sdp}"))?;
            *have_local_offer = false;
        }
        Some("offer") if *have_local_offer => lock(seen).offers_ignored += 1,
        Some("offer") => {
            let offer = RTCSessionDescription::offer(sdp.clone())
                .map_err(|e| format!("server offer does not parse: {e}\n{sdp}"))?;
            pc.set_remote_description(offer)
                .await
                .map_err(|e| format!("webrtc-rs rejects the server's offer: {e}\n{sdp}"))?;
            let answer = pc
                .create_answer(None)
                .await
                .map_err(|e| format!("webrtc-rs cannot answer the server's offer: {e}\n{sdp}"))?;
            pc.set_local_description(answer)
                .await
                .map_err(|e| format!("webrtc-rs cannot apply its answer: {e}"))?;
            let answer = local_sdp(pc, gathered).await?;
            {
                let mut s = lock(seen);
                s.tracks = m["tracks"].as_array().cloned().unwrap_or_default();
                s.answers_sent += 1;
            }
            send(ws, json!({"v": 1, "type": "answer", "sdp": answer})).await;
        }
        Some("error") if m["fatal"] == true => return Err(format!("fatal server error: {m}")),
        _ => {}
    }
    Ok(())
}

/// Waits until `f` holds; panics (with everything seen so far) on timeout or a fatal failure.
async fn wait_until(seen: &Shared, what: &str, timeout: Duration, f: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        // The guard is dropped before panicking so the track readers see no poisoned lock.
        let failure = {
            let s = lock(seen);
            if let Some(fatal) = &s.fatal {
                Some(format!("while waiting for {what}: {fatal}"))
            } else if f(&s) {
                return;
            } else if Instant::now() > deadline {
                Some(format!(
                    "timed out after {timeout:?} waiting for {what}; \
                     peer state {:?}; server messages {:?}; errors {:?}; on_track {:?}; \
                     answers sent {}; offers ignored {}; tracks {:?}; audio packets {}; \
                     video packets {}; keyframes (packet#, width) {:?}",
                    s.state,
                    s.messages,
                    s.errors,
                    s.on_track,
                    s.answers_sent,
                    s.offers_ignored,
                    s.tracks,
                    s.audio_packets,
                    s.video_packets,
                    s.keyframes
                ))
            } else {
                None
            }
        };
        if let Some(failure) = failure {
            panic!("webrtc-rs classroom: {failure}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_rs_classroom_joins_publishes_and_receives_the_teacher() {
    let started = Instant::now();
    let srv = server::start(ServerConfig::ephemeral())
        .await
        .expect("server starts");
    let demo = srv.demo.clone().expect("demo lesson");
    let teacher = TestClient::connect(
        srv.http_addr,
        ClientMessage::Join {
            token: Some(srv.teacher_token("c-central-1")),
            code: None,
        },
        &TEACHER_LAYERS,
    )
    .await;
    let invite = &demo.classrooms[0];
    let (seen, signal) = webrtc_classroom(srv.http_addr, &invite.code).await;
    {
        let s = lock(&seen);
        let welcome = s.welcome.as_ref().unwrap();
        assert_eq!(
            welcome["classroom_id"],
            invite.classroom_id.as_str(),
            "{welcome}"
        );
    }

    // The teacher's audio and video reach the webrtc-rs classroom.
    wait_until(
        &seen,
        "the teacher's tracks in a server offer",
        Duration::from_secs(10),
        |s| {
            s.tracks
                .iter()
                .any(|t| t["from_teacher"] == true && t["kind"] == "audio")
                && s.tracks
                    .iter()
                    .any(|t| t["from_teacher"] == true && t["kind"] == "video")
        },
    )
    .await;
    wait_until(
        &seen,
        "teacher audio and video RTP",
        Duration::from_secs(15),
        |s| s.audio_packets > 50 && s.video_packets > 50,
    )
    .await;
    wait_until(&seen, "a teacher keyframe", Duration::from_secs(10), |s| {
        !s.keyframes.is_empty()
    })
    .await;

    // The teacher (str0m) receives the webrtc-rs classroom's camera.
    let mid = teacher.wait_video_from(&invite.classroom_id).await;
    let frames = teacher.frames_on(mid);
    assert!(frames[0].keyframe, "first forwarded frame is a keyframe");
    assert!(
        frames.iter().any(|f| f.width == Some(CLASSROOM_WIDTH)),
        "the teacher sees the webrtc-rs classroom's own keyframes (width {CLASSROOM_WIDTH})"
    );

    teacher
        .wait_for(
            "audio from the webrtc-rs classroom",
            Duration::from_secs(10),
            |s| {
                let mid = s.tracks.values().find(|t| {
                    t.classroom_id == invite.classroom_id
                        && t.kind == tongbu::signal::message::MediaKind::Audio
                })?;
                let n = s
                    .received
                    .iter()
                    .filter(|r| r.mid.to_string() == mid.mid)
                    .count();
                (n > 20).then_some(())
            },
        )
        .await;

    // Layer caps: high brings the 1280 layer, low the 320 layer, each on a keyframe.
    for (layer, width) in [("high", 1280u16), ("low", 320)] {
        let from = lock(&seen).video_packets;
        signal
            .send(json!({"v": 1, "type": "set_max_layer", "layer": layer}))
            .unwrap();
        wait_until(
            &seen,
            &format!("a keyframe of width {width} after set_max_layer {layer}"),
            Duration::from_secs(10),
            |s| s.keyframes.iter().any(|&(n, w)| n > from && w == width),
        )
        .await;
    }

    // The teacher leaves: the server renegotiates the teacher's tracks away, and webrtc-rs
    // accepts that offer too (stopped m-lines) and answers it.
    let teacher_frames = teacher.frames_on(mid).len();
    let answered = lock(&seen).answers_sent;
    drop(teacher);
    wait_until(
        &seen,
        "an answered server offer without the teacher's tracks",
        Duration::from_secs(10),
        |s| s.answers_sent > answered && !s.tracks.iter().any(|t| t["from_teacher"] == true),
    )
    .await;

    let s = lock(&seen);
    assert!(s.errors.is_empty(), "server errors: {:?}", s.errors);
    assert_eq!(
        s.keyframes.first().map(|k| k.0),
        Some(1),
        "the first video packet webrtc-rs receives starts a keyframe"
    );
    // Across both switches webrtc-rs sees one stream: one SSRC, RTP time moving forward by
    // about a frame (the server rewrites it per subscriber).
    let ssrc = s.video_rtp[0].0;
    assert!(
        s.video_rtp.iter().all(|&(x, _)| x == ssrc),
        "the teacher's video keeps one SSRC across layer switches"
    );
    for w in s.video_rtp.windows(2) {
        let step = w[1].1.wrapping_sub(w[0].1);
        assert!(
            step <= 90_000,
            "RTP time step {step} between consecutive video packets (should be one frame)"
        );
    }
    eprintln!(
        "webrtc-rs classroom: {} audio / {} video RTP packets, keyframe widths {:?}, \
         {} server offers answered, {} tracks ended, teacher got {} frames from it; {:?}",
        s.audio_packets,
        s.video_packets,
        s.keyframes.iter().map(|k| k.1).collect::<Vec<_>>(),
        s.answers_sent,
        s.tracks_ended,
        teacher_frames,
        started.elapsed()
    );
}
