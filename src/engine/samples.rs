//! Usage samples: once a second, what each connected classroom sent, received and at which
//! quality. Reported as facts over a channel; the usage module does the accounting.

use crate::media::peer::Subscribed;
use crate::signal::message::{MediaKind, Role};
use crate::usage::event::{QualityLevel, UsageEvent};

use super::Engine;

impl Engine {
    pub(crate) fn sample_usage(&mut self) {
        let at = chrono::Utc::now().timestamp_millis();
        let mut samples = Vec::new();
        for conn in self.conns.values_mut() {
            let Some(joined) = conn.joined.as_ref() else {
                continue;
            };
            let Some(lesson_id) = joined.lesson_id.clone() else {
                continue;
            };
            let quality = match (joined.role, conn.peer.as_ref()) {
                (_, None) => QualityLevel::Paused,
                (Role::Teacher, Some(_)) => QualityLevel::Top,
                (_, Some(peer)) => received_quality(&peer.subscribed),
            };
            samples.push(UsageEvent::Sample {
                lesson_id,
                classroom_id: joined.classroom_id.clone(),
                at,
                bytes_in: conn.latest.bytes_rx.saturating_sub(conn.sampled.bytes_rx),
                bytes_out: conn.latest.bytes_tx.saturating_sub(conn.sampled.bytes_tx),
                quality,
                loss: conn.peer.as_ref().and_then(|p| p.loss),
                rtt_ms: conn
                    .peer
                    .as_ref()
                    .and_then(|p| p.rtt)
                    .map(|d| d.as_secs_f32() * 1000.0),
                freezes: conn
                    .latest
                    .keyframe_requests
                    .saturating_sub(conn.sampled.keyframe_requests),
            });
            self.metrics
                .received_quality_seconds
                .with_label_values(&[quality.as_str()])
                .inc();
            conn.sampled = conn.latest;
        }
        for s in samples {
            self.usage(s);
        }
    }
}

/// The quality of the teacher's camera as this classroom receives it.
pub(crate) fn received_quality(subscribed: &[Subscribed]) -> QualityLevel {
    let Some(sub) = subscribed
        .iter()
        .find(|s| s.from_teacher && s.kind == MediaKind::Video)
    else {
        return QualityLevel::AudioOnly;
    };
    let Some(video) = sub.video.as_ref() else {
        return QualityLevel::AudioOnly;
    };
    let top = sub.layer_count.saturating_sub(1) as u8;
    match (video.selector.current(), video.selector.target()) {
        (_, None) => QualityLevel::Paused,
        (None, Some(_)) => QualityLevel::AudioOnly,
        (Some(c), _) if c.layer >= top => QualityLevel::Top,
        (Some(c), _) if c.layer == 0 => QualityLevel::Low,
        (Some(_), _) => QualityLevel::Middle,
    }
}
