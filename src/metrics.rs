//! Server-wide Prometheus series. Low cardinality only: per-classroom detail lives in the
//! usage database (and the usage module's bounded per-classroom counters), never a label per
//! lesson, session, peer or address.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    pub lessons_live: IntGauge,
    pub classrooms_connected: IntGauge,
    pub peers: IntGauge,
    pub frames_in: IntCounter,
    pub packets_out: IntCounter,
    pub malformed_rtp: IntCounter,
    pub fec_packets: IntCounter,
    pub bytes_out: IntCounter,
    pub keyframe_requests: IntCounter,
    pub calls_on: IntCounter,
    pub signaling_errors: IntCounterVec,
    pub nacks: IntCounter,
    pub subscriber_keyframe_requests: IntCounter,
    /// Every estimate update towards any subscriber.
    pub estimate_bps: Histogram,
    /// Seconds classrooms spent receiving the teacher at each quality level.
    pub received_quality_seconds: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let signaling_errors = IntCounterVec::new(
            Opts::new(
                "tongbu_signaling_errors_total",
                "Signaling messages refused, by error code",
            ),
            &["code"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(signaling_errors.clone()))
            .expect("unique metric");
        let estimate_bps = Histogram::with_opts(
            HistogramOpts::new(
                "tongbu_egress_estimate_bps",
                "Send-side bandwidth estimates towards subscribers, bits per second",
            )
            .buckets(vec![
                100e3, 200e3, 300e3, 500e3, 800e3, 1.2e6, 2e6, 3e6, 5e6, 10e6,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(estimate_bps.clone()))
            .expect("unique metric");
        let received_quality_seconds = IntCounterVec::new(
            Opts::new(
                "tongbu_received_quality_seconds_total",
                "Seconds classrooms received the teacher's camera at each quality level",
            ),
            &["level"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(received_quality_seconds.clone()))
            .expect("unique metric");
        Metrics {
            nacks: counter(
                "tongbu_nacks_received_total",
                "NACKs received from subscribers",
            ),
            subscriber_keyframe_requests: counter(
                "tongbu_subscriber_keyframe_requests_total",
                "PLI/FIR received from subscribers (each is a lost picture)",
            ),
            estimate_bps,
            received_quality_seconds,
            lessons_live: gauge("tongbu_lessons_live", "Lessons in progress"),
            classrooms_connected: gauge(
                "tongbu_classrooms_connected",
                "Village classrooms connected to a lesson",
            ),
            peers: gauge("tongbu_peers", "WebRTC peer connections"),
            frames_in: counter(
                "tongbu_media_frames_received_total",
                "Media frames received from publishers",
            ),
            packets_out: counter(
                "tongbu_media_packets_forwarded_total",
                "RTP packets forwarded to subscribers",
            ),
            malformed_rtp: counter(
                "tongbu_malformed_rtp_total",
                "RTP packets from publishers dropped as malformed (bad VP8 descriptor or RED)",
            ),
            fec_packets: counter(
                "tongbu_video_fec_packets_total",
                "ULPFEC packets queued for subscribers' video",
            ),
            bytes_out: counter(
                "tongbu_media_forwarded_bytes_total",
                "Media payload bytes forwarded to subscribers",
            ),
            keyframe_requests: counter(
                "tongbu_keyframe_requests_total",
                "Keyframe requests sent to publishers",
            ),
            calls_on: counter("tongbu_calls_on_total", "Times a classroom was called on"),
            signaling_errors,
            registry,
        }
    }

    /// The text exposition format for `/metrics`.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
