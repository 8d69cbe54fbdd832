//! Bandwidth allocation and layer selection per subscriber; pure logic (sans-IO).
//!
//! str0m estimates the egress bitrate (`Event::EgressBitrateEstimate`); this module decides what to do
//! with it. Nothing here reads the clock or touches a socket: `now` comes in, decisions go out.
//!
//! - [`rates`]: per-layer bitrates of a publisher's simulcast layers, measured from the frames it sends.
//! - [`allocate()`]: split one subscriber's estimate across its tracks by priority.
//! - [`select`]: per (subscriber, video track) layer selector: max / target / current, with hysteresis.
//! - [`keyframe`]: keyframe requests throttled and shared across subscribers of a publisher layer.
//! - [`shape`]: each camera layer encoded at what its subscribers have room for.
//! - [`dynacast`]: which layers a publisher encodes: those its subscribers take.
//! - [`outage`]: a link back from carrying nothing restarts near its old estimate, and its
//!   video on a fresh keyframe.
//! - [`climb`]: probes toward the allocation's next step while the link is calm, backing off
//!   while they fail.
//!
//! One estimate update runs `rates` → `allocate` → `select::LayerSelector::on_allocation`; every
//! forwarded frame runs `LayerSelector::on_frame`; `LayerSelector::keyframe_request` goes through
//! `KeyframeThrottle::request` before a PLI reaches the publisher.

pub mod allocate;
pub mod climb;
pub mod dynacast;
pub mod keyframe;
pub mod outage;
pub mod overflow;
pub mod queue;
pub mod radio_loss;
pub mod rates;
pub mod select;
pub mod shape;

use std::time::Duration;

pub use allocate::{
    allocate, Allocation, LayerBitrate, LayerChoice, Priority, TrackAllocation, TrackDemand,
    ALL_TEMPORAL,
};
pub use climb::ClimbProbe;
pub use dynacast::Dynacast;
pub use keyframe::{keyframe_needed, KeyframeThrottle};
pub use outage::{FeedbackTimes, OutageRecovery, OutageWatch};
pub use overflow::OverflowDetector;
pub use queue::QueueGauge;
pub use radio_loss::RadioLoss;
pub use rates::{LayerRates, MAX_LAYERS};
pub use select::{FrameDecision, FrameInfo, KeyframeRequest, LayerSelector};
pub use shape::{LayerShaper, Room};

/// The knobs of bandwidth adaptation, with defaults chosen for rural links (256 kbit/s–2 Mbit/s,
/// 60–600 ms RTT, bursty loss); see each field for why.
#[derive(Debug, Clone, PartialEq)]
pub struct Tuning {
    /// Fraction of the estimate the allocator hands out; the rest absorbs RTX retransmissions,
    /// keyframe bursts and estimate noise. 0.95: str0m's estimate counts RTP payloads only, so it
    /// already sits some 7 % under what the link carries (headers), and RED and FEC are costed
    /// inside the allocation. Side by side on the weak-link bench, 0.9 used 83 % of the satellite
    /// profile's 2 Mbit/s and 0.95 89 %, with collapse and bursty freeze within their run-to-run
    /// swing.
    pub headroom: f64,
    /// Any video layer is costed at least this much, so video pauses rather than ride on a layer whose
    /// measured rate is near zero (a static slide measures a few kbit/s, then one change bursts).
    /// 30 kbit/s: about the lowest rate at which VP8 at 160×90 still shows a face.
    pub min_video_layer_bps: u64,
    /// How long a higher allocation must hold before the selector steps up to a higher spatial
    /// layer (more frame rate on the same layer needs no keyframe and comes at once). 3 s: long
    /// enough to ride out GCC's probe-and-back-off cycles, short enough that a recovered link is
    /// used soon.
    pub up_hold: Duration,
    /// Cap on the up-hold after repeated down-steps (it doubles per recent down-step). 4 s: every
    /// spatial step of a climb waits its own hold (frame-rate steps on the same layer do not), so
    /// after a collapse the climb is ≈ 2 holds; measured in real Chromium (loadtest/README.md, 2 → 0.3 → 2 Mbit/s),
    /// 10 s took 23.8 s back to the top layer, 4 s took 9.4 s, with half the freeze time.
    pub up_hold_max: Duration,
    /// How long a spatial step down (or a pause) waits while the link shows no congestion (no
    /// overflow, no backed-up queue: those step down at once). 1 s: on a lossy 1 Mbit/s link the
    /// estimate and the repair costs wobble by 10–20 % within a second, and the allocation
    /// crossed a layer's edge back and forth every few seconds; each crossing cost a keyframe of
    /// each layer, which on that link takes a second or more to arrive whole.
    pub down_grace: Duration,
    /// How long a down-step counts as recent for the back-off. 10 s: a few GCC probe cycles; with
    /// 30 s every hold of a recovery after a 30 s collapse still ran at the cap.
    pub down_memory: Duration,
    /// Least time between keyframe requests for one publisher layer (and per subscriber retry).
    /// 500 ms: one keyframe per half second at most on a weak uplink, yet a lost one is retried soon.
    pub keyframe_interval: Duration,
    /// Sliding window over which layer bitrates are measured. 1 s: thirty frames of camera video.
    pub rate_window: Duration,
    /// A layer with no frame for this long is unavailable to the allocator. 2 s: twice the window,
    /// so a low-frame-rate screen share is not declared gone between two frames.
    pub layer_stale_after: Duration,
    /// Oldest packet worth retransmitting; sizes the retransmission history of each outgoing
    /// video stream (see `media::history`). 2 s: a lost base-layer packet holds up every frame
    /// after it, and Chromium keeps those frames waiting for it for 3 s before it asks for a
    /// keyframe. On a 300 ms link losing 14 % each way, one NACK round fails about one time in
    /// four (the NACK or the resend lost); 1 s left room for three, and a base-layer packet
    /// failed all three about once a minute, freezing the picture for 3.5 s each time.
    pub retransmit_window: Duration,
    /// Highest bitrate one outgoing video stream carries (the top simulcast layer with margin).
    pub max_video_bps: u64,
    /// Share of a video stream's bytes that may be retransmissions before str0m drops queued
    /// resends. str0m's 0.15 sits right at a village link's bursty loss (≈14 %, plus resends
    /// lost again), where it stopped repairing exactly when repair was needed (bursty freeze
    /// 86–91 % against 26–30 % with 0.35); 0.35 still keeps a NACK storm from taking the link.
    /// The allocation counts video repair at the measured loss.
    pub retransmit_share_cap: f32,
    /// Oldest a subscriber's queued video may be before only temporal layer 0 is added to it.
    /// str0m's pacer sends at 1.1 × its estimate and lets up to 2 s queue; when a link collapses,
    /// the big layer already queued delays the small layer's keyframe by seconds. 250 ms: a few
    /// frames, well above pacing jitter on a healthy link. Zero turns the brake off.
    pub backlog_brake: Duration,
    /// Whether lossy links with long round trips get ULPFEC on their video (`media::fec`), so a
    /// lost packet is rebuilt on arrival of its FEC packet instead of one NACK round trip later.
    /// On by default; off only to measure what it does.
    pub video_fec: bool,
    /// Whether loss at a steady round trip (radio loss) is kept from cutting the estimate
    /// (`radio_loss`). On by default; off only to measure what it does.
    pub loss_tolerance: bool,
    /// Whether a subscriber short of its next layer gets probes toward it (`climb`). Off by
    /// default: over session 13's runs it showed no gain in freeze or climb time (the start-up
    /// slump it was meant for turned out to be str0m's smoothing, patched since), and one run of
    /// the real-Chromium collapse test with it stayed on the lowest layer for 24 s after the
    /// link came back (not traced; a likely reading is the stale "overuse" cause that held
    /// str0m's probes under a flat estimate, patched in session 14). Session 14 measured it
    /// again, probing every 1.5-2.5 s: no gain; str0m's allocation probes find a recovered
    /// link first.
    pub climb_probes: bool,
    /// A camera's higher simulcast layer is not offered while it runs at under this share of
    /// its lowest layer's frame rate (`LayerRates::choppy`): its encoder is starving it. 0.6:
    /// the teacher's 1280 px layer of a detailed picture at 1 Mbit/s runs at 10 of 30 fps, and
    /// froze (gaps over 200 ms) a quarter of the time on 2 Mbit/s links in the bench, where 640 px
    /// plays at 30 fps; a layer at 20 of 30 fps still plays. Screen shares are exempt: their
    /// text needs the pixels more than the frames. 0 turns the rule off.
    pub choppy_ratio: f64,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            headroom: 0.95,
            min_video_layer_bps: 30_000,
            up_hold: Duration::from_secs(3),
            up_hold_max: Duration::from_secs(4),
            down_memory: Duration::from_secs(10),
            down_grace: Duration::from_secs(1),
            keyframe_interval: Duration::from_millis(500),
            rate_window: Duration::from_secs(1),
            layer_stale_after: Duration::from_secs(2),
            retransmit_window: Duration::from_secs(2),
            max_video_bps: 2_500_000,
            retransmit_share_cap: 0.35,
            backlog_brake: Duration::from_millis(250),
            video_fec: true,
            loss_tolerance: true,
            climb_probes: false,
            choppy_ratio: 0.6,
        }
    }
}
