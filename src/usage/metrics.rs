//! Per-classroom usage counters for Prometheus. Labels are the classroom id and its school, both
//! from the bounded directory; events for classrooms outside it are counted under
//! `classroom="unknown", school="unknown"` so a bad id cannot grow the series set. Never a label
//! per lesson, session, peer or IP: per-session detail belongs to the database.

use prometheus::{CounterVec, IntCounterVec, Opts, Registry};

use super::event::UsageEvent;
use super::recorder::Outcome;
use crate::directory::SharedDirectory;

#[derive(Clone)]
pub struct UsageMetrics {
    directory: SharedDirectory,
    connected_seconds: CounterVec,
    bytes: IntCounterVec,
    lessons_joined: IntCounterVec,
    quality_seconds: CounterVec,
    reconnects: IntCounterVec,
}

impl UsageMetrics {
    /// Creates the series and registers them into `registry`.
    pub fn new(
        registry: &Registry,
        directory: SharedDirectory,
    ) -> Result<UsageMetrics, prometheus::Error> {
        let connected_seconds = CounterVec::new(
            Opts::new(
                "tongbu_classroom_connected_seconds_total",
                "Seconds a classroom was connected to lessons (sampled).",
            ),
            &["classroom", "school"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "tongbu_classroom_media_bytes_total",
                "Media bytes the server received from (in) and sent to (out) a classroom.",
            ),
            &["classroom", "school", "direction"],
        )?;
        let lessons_joined = IntCounterVec::new(
            Opts::new(
                "tongbu_classroom_lessons_joined_total",
                "Usage sessions started by a classroom (reconnects within the grace period excluded).",
            ),
            &["classroom", "school"],
        )?;
        let quality_seconds = CounterVec::new(
            Opts::new(
                "tongbu_classroom_quality_seconds_total",
                "Seconds a classroom received each quality level.",
            ),
            &["classroom", "school", "level"],
        )?;
        let reconnects = IntCounterVec::new(
            Opts::new(
                "tongbu_classroom_reconnects_total",
                "Reconnects that continued a usage session.",
            ),
            &["classroom", "school"],
        )?;
        registry.register(Box::new(connected_seconds.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(lessons_joined.clone()))?;
        registry.register(Box::new(quality_seconds.clone()))?;
        registry.register(Box::new(reconnects.clone()))?;
        Ok(UsageMetrics {
            directory,
            connected_seconds,
            bytes,
            lessons_joined,
            quality_seconds,
            reconnects,
        })
    }

    /// Bounded labels for a classroom id.
    fn labels(&self, classroom: &str) -> (String, String) {
        // A poisoned lock only means a writer panicked mid-edit; the data is still a directory.
        let dir = self
            .directory
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match dir.classroom(classroom) {
            Some(c) => (c.id.clone(), c.school.clone()),
            None => ("unknown".into(), "unknown".into()),
        }
    }

    /// Counts what the recorder did with one event.
    pub fn observe(&self, ev: &UsageEvent, outcome: Outcome) {
        let classroom = match ev {
            UsageEvent::Joined { classroom_id, .. } | UsageEvent::Sample { classroom_id, .. } => {
                classroom_id
            }
            _ => return,
        };
        match outcome {
            Outcome::SessionStarted => {
                let (c, s) = self.labels(classroom);
                self.lessons_joined.with_label_values(&[&c, &s]).inc();
            }
            Outcome::Reconnected => {
                let (c, s) = self.labels(classroom);
                self.reconnects.with_label_values(&[&c, &s]).inc();
            }
            Outcome::Sampled {
                ms,
                quality,
                bytes_in,
                bytes_out,
            } => {
                let (c, s) = self.labels(classroom);
                let secs = ms as f64 / 1000.0;
                self.connected_seconds
                    .with_label_values(&[&c, &s])
                    .inc_by(secs);
                self.quality_seconds
                    .with_label_values(&[&c, &s, quality.as_str()])
                    .inc_by(secs);
                self.bytes
                    .with_label_values(&[&c, &s, "in"])
                    .inc_by(bytes_in);
                self.bytes
                    .with_label_values(&[&c, &s, "out"])
                    .inc_by(bytes_out);
            }
            Outcome::Recorded | Outcome::Ignored => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::Directory;
    use crate::usage::event::QualityLevel;
    use crate::usage::recorder::{Recorder, RecorderConfig};

    #[test]
    fn counts_by_classroom_and_folds_unknown_ids() {
        let registry = Registry::new();
        let dir = std::sync::Arc::new(std::sync::RwLock::new(Directory::demo()));
        let m = UsageMetrics::new(&registry, dir).unwrap();
        let mut r = Recorder::new(RecorderConfig::default());
        for (c, lesson) in [("c-xiacun-1", "L1"), ("evil-1", "L1"), ("evil-2", "L1")] {
            let ev = UsageEvent::Joined {
                lesson_id: lesson.into(),
                classroom_id: c.into(),
                at: 0,
            };
            m.observe(&ev, r.handle(&ev));
            let ev = UsageEvent::Sample {
                lesson_id: lesson.into(),
                classroom_id: c.into(),
                at: 1000,
                bytes_in: 10,
                bytes_out: 20,
                quality: QualityLevel::Middle,
                loss: None,
                rtt_ms: None,
                freezes: 0,
            };
            m.observe(&ev, r.handle(&ev));
        }
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(text.contains(
            r#"tongbu_classroom_lessons_joined_total{classroom="c-xiacun-1",school="s-xiacun"} 1"#
        ), "{text}");
        assert!(text.contains(
            r#"tongbu_classroom_lessons_joined_total{classroom="unknown",school="unknown"} 2"#
        ));
        assert!(text.contains(
            r#"tongbu_classroom_quality_seconds_total{classroom="c-xiacun-1",level="middle",school="s-xiacun"} 1"#
        ), "{text}");
        assert!(!text.contains("L1"), "no per-lesson labels");
    }
}
