//! Server-wide Prometheus series. Low cardinality only: per-classroom detail lives in the
//! usage database (and the usage module's bounded per-classroom counters), never a label per
//! lesson, session, peer or address.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    pub lessons_live: IntGauge,
    pub classrooms_connected: IntGauge,
    pub peers: IntGauge,
    pub frames_in: IntCounter,
    pub frames_out: IntCounter,
    pub bytes_out: IntCounter,
    pub keyframe_requests: IntCounter,
    pub calls_on: IntCounter,
    pub signaling_errors: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("tongbu".into()), None)
            // A fixed prefix is always a valid metric name.
            .expect("valid registry prefix");
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
                "signaling_errors_total",
                "Signaling messages refused, by error code",
            ),
            &["code"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(signaling_errors.clone()))
            .expect("unique metric");
        Metrics {
            lessons_live: gauge("lessons_live", "Lessons in progress"),
            classrooms_connected: gauge(
                "classrooms_connected",
                "Village classrooms connected to a lesson",
            ),
            peers: gauge("peers", "WebRTC peer connections"),
            frames_in: counter(
                "media_frames_received_total",
                "Media frames received from publishers",
            ),
            frames_out: counter(
                "media_frames_forwarded_total",
                "Media frames forwarded to subscribers",
            ),
            bytes_out: counter(
                "media_forwarded_bytes_total",
                "Media payload bytes forwarded to subscribers",
            ),
            keyframe_requests: counter(
                "keyframe_requests_total",
                "Keyframe requests sent to publishers",
            ),
            calls_on: counter("calls_on_total", "Times a classroom was called on"),
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
