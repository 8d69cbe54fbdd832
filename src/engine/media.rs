//! The forwarding path: published tracks appear, frames fan out to subscribers, keyframe
//! requests go back to publishers, estimates move layer targets. Runs per frame: no locks, no
//! logging, and no allocation beyond what str0m itself needs.

use std::time::Instant;

use str0m::bwe::BweKind;
use str0m::media::{Direction, KeyframeRequest, KeyframeRequestKind, MediaAdded, MediaData, Rid};
use str0m::media::{MediaKind as StrMediaKind, MediaTime};

use crate::media::forward::Decision;
use crate::media::peer::{Published, Subscribed, TrackKey};
use crate::signal::message::{LayerChoice, MediaKind, Role};
use crate::signal::ConnId;
use crate::usage::event::{QualityLevel, UsageEvent};

use super::Engine;

/// Auto layer choice thresholds for the estimate towards a subscriber (bits per second): at
/// least this much for the middle and the top layer of a three-layer track.
const AUTO_MIDDLE_BPS: u64 = 700_000;
const AUTO_TOP_BPS: u64 = 1_700_000;

/// Orders simulcast rids lowest first: our pages and most clients use q/h/f.
fn rid_rank(rid: &Rid) -> usize {
    match &**rid {
        "q" | "l" | "low" => 0,
        "h" | "m" | "mid" => 1,
        "f" | "hi" | "high" => 2,
        _ => 3,
    }
}

/// The layer a subscriber should get: the subscriber's cap, and for `auto` the estimate.
/// Classroom thumbnails at the teacher stay on the lowest layer unless called on.
pub(crate) fn target_layer(
    max: LayerChoice,
    estimate_bps: Option<u64>,
    layer_count: usize,
    thumbnail: bool,
) -> usize {
    let top = layer_count.saturating_sub(1);
    let auto = || {
        if thumbnail {
            return 0;
        }
        let est = estimate_bps.unwrap_or(0);
        let wanted = if est >= AUTO_TOP_BPS {
            2
        } else if est >= AUTO_MIDDLE_BPS {
            1
        } else {
            0
        };
        wanted.min(top)
    };
    match max {
        LayerChoice::Auto => auto(),
        LayerChoice::Low => 0,
        LayerChoice::Medium => 1.min(top),
        LayerChoice::High => top,
    }
}

impl Engine {
    pub(crate) fn on_media_added(&mut self, id: ConnId, added: MediaAdded) {
        // Only m-lines the client sends on are published tracks; ours are SendOnly.
        if !matches!(added.direction, Direction::RecvOnly | Direction::SendRecv) {
            return;
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let lesson_id = conn.joined.as_ref().and_then(|j| j.lesson_id.clone());
        let Some(peer) = conn.peer.as_mut() else {
            return;
        };
        let kind = match added.kind {
            StrMediaKind::Audio => MediaKind::Audio,
            StrMediaKind::Video => MediaKind::Video,
        };
        let mut layers: Vec<Option<Rid>> = added
            .simulcast
            .map(|s| {
                let mut rids: Vec<Rid> = s.recv.iter().map(|l| l.rid).collect();
                rids.sort_by_key(rid_rank);
                rids.into_iter().map(Some).collect()
            })
            .unwrap_or_default();
        if layers.is_empty() {
            layers.push(None);
        }
        let source = peer.announced_source(added.mid, kind);
        peer.published.retain(|p| p.mid != added.mid);
        peer.published.push(Published {
            mid: added.mid,
            kind,
            source,
            layers,
        });
        if let Some(lesson_id) = lesson_id {
            self.schedule_reroute(&lesson_id);
        }
    }

    /// Fans one received frame out to every subscriber of its track.
    pub(crate) fn forward_media(&mut self, publisher: ConnId, data: MediaData, now: Instant) {
        let Engine {
            conns,
            registry,
            keyframes,
            dirty,
            metrics,
            ..
        } = self;
        let Some(pub_conn) = conns.get(&publisher) else {
            return;
        };
        let Some(lesson) = pub_conn
            .joined
            .as_ref()
            .and_then(|j| j.lesson_id.as_deref())
            .and_then(|l| registry.get(l))
        else {
            return;
        };
        let Some((layer, is_video)) = pub_conn
            .peer
            .as_ref()
            .and_then(|p| p.published.iter().find(|t| t.mid == data.mid))
            .map(|t| {
                let layer = t.layers.iter().position(|r| *r == data.rid).unwrap_or(0);
                (layer, t.kind == MediaKind::Video)
            })
        else {
            return;
        };
        let key = TrackKey {
            publisher,
            mid: data.mid,
        };
        let is_keyframe = data.is_keyframe();
        metrics.frames_in.inc();
        // Layers some subscriber waits to switch to, as a bitmask (at most a handful of layers).
        let mut awaited: u32 = 0;
        if is_video && !data.contiguous {
            // Frames were lost upstream: this layer needs a fresh keyframe to decode again.
            awaited |= 1 << layer.min(31);
        }

        for sub_id in lesson.connections() {
            if sub_id == publisher {
                continue;
            }
            let Some(peer) = conns.get_mut(&sub_id).and_then(|c| c.peer.as_mut()) else {
                continue;
            };
            let Some(sub) = peer.subscription_mut(key) else {
                continue;
            };
            let rtp_time = match sub.video.as_mut() {
                None => data.time.numer(),
                Some(video) => {
                    let decision = video.on_frame(layer, data.time.numer(), is_keyframe, now);
                    if let Some(l) = video.awaited_keyframe() {
                        awaited |= 1 << l.min(31);
                    }
                    match decision {
                        Decision::Forward { rtp_time, .. } => rtp_time,
                        Decision::Drop(_) => continue,
                    }
                }
            };
            let Some(mid) = sub.state.mid() else {
                continue;
            };
            let Some(writer) = peer.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = writer.match_params(data.params) else {
                continue;
            };
            let time = MediaTime::new(rtp_time, data.time.frequency());
            if writer
                .write(pt, data.network_time, time, data.data.clone())
                .is_ok()
            {
                metrics.frames_out.inc();
                metrics.bytes_out.inc_by(data.data.len() as u64);
                if !dirty.contains(&sub_id) {
                    dirty.push(sub_id);
                }
            }
        }

        if awaited != 0 {
            let rids: Vec<Option<Rid>> = conns
                .get(&publisher)
                .and_then(|c| c.peer.as_ref())
                .and_then(|p| p.published.iter().find(|t| t.mid == data.mid))
                .map(|t| {
                    t.layers
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| awaited & (1 << (*i).min(31)) != 0)
                        .map(|(_, r)| *r)
                        .collect()
                })
                .unwrap_or_default();
            for rid in rids {
                if keyframes.allow(publisher, data.mid, rid, now) {
                    request_keyframe(conns, publisher, data.mid, rid, metrics);
                    if !dirty.contains(&publisher) {
                        dirty.push(publisher);
                    }
                }
            }
        }
    }

    /// A subscriber's browser asked for a keyframe: pass it to the publisher, throttled.
    pub(crate) fn relay_keyframe_request(
        &mut self,
        id: ConnId,
        req: KeyframeRequest,
        now: Instant,
    ) {
        let Some(peer) = self.conns.get(&id).and_then(|c| c.peer.as_ref()) else {
            return;
        };
        let Some(sub) = peer
            .subscribed
            .iter()
            .find(|s| s.state.mid() == Some(req.mid))
        else {
            return;
        };
        let key = sub.key;
        let layer = sub
            .video
            .as_ref()
            .and_then(|v| v.current().or(v.target()))
            .unwrap_or(0);
        let Some(rid) = self
            .conns
            .get(&key.publisher)
            .and_then(|c| c.peer.as_ref())
            .and_then(|p| p.published.iter().find(|t| t.mid == key.mid))
            .and_then(|t| t.layers.get(layer).copied())
        else {
            return;
        };
        if self.keyframes.allow(key.publisher, key.mid, rid, now) {
            request_keyframe(&mut self.conns, key.publisher, key.mid, rid, &self.metrics);
            self.mark_dirty(key.publisher);
        }
    }

    pub(crate) fn on_estimate(&mut self, id: ConnId, kind: BweKind) {
        let estimate = match kind {
            BweKind::Twcc { estimate, .. } => estimate,
            BweKind::Remb { estimate, .. } => estimate,
            _ => return,
        };
        if let Some(peer) = self.conns.get_mut(&id).and_then(|c| c.peer.as_mut()) {
            peer.estimate_bps = Some(estimate.as_u64());
        }
        self.update_layer_targets(id);
    }

    /// Recomputes the target layer of every video this peer receives.
    pub(crate) fn update_layer_targets(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let is_teacher = conn
            .joined
            .as_ref()
            .is_some_and(|j| j.role == Role::Teacher);
        let called_on = conn
            .joined
            .as_ref()
            .and_then(|j| j.lesson_id.as_deref())
            .and_then(|l| self.registry.get(l))
            .and_then(|l| l.called_on.clone());
        let Some(peer) = conn.peer.as_mut() else {
            return;
        };
        let (max, estimate) = (peer.max_layer, peer.estimate_bps);
        for sub in &mut peer.subscribed {
            let thumbnail = is_teacher && called_on.as_deref() != Some(sub.classroom_id.as_str());
            let target = target_layer(max, estimate, sub.layer_count, thumbnail);
            if let Some(video) = sub.video.as_mut() {
                if video.target() != Some(target) {
                    video.set_target(Some(target));
                }
            }
        }
    }

    /// Once a second: usage samples for every connected classroom.
    pub(crate) fn tick(&mut self, _now: Instant) {
        let at = chrono::Utc::now().timestamp_millis();
        let mut samples = Vec::new();
        for conn in self.conns.values_mut() {
            let Some(joined) = conn.joined.as_ref() else {
                continue;
            };
            let Some(lesson_id) = joined.lesson_id.clone() else {
                continue;
            };
            let quality = match (&joined.role, conn.peer.as_ref()) {
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
                loss: conn.latest.loss,
                rtt_ms: conn.latest.rtt_ms,
                freezes: 0,
            });
            conn.sampled = conn.latest;
        }
        for s in samples {
            self.usage(s);
        }
    }
}

/// The quality of the teacher's camera as this classroom receives it.
fn received_quality(subscribed: &[Subscribed]) -> QualityLevel {
    let Some(sub) = subscribed
        .iter()
        .find(|s| s.from_teacher && s.kind == MediaKind::Video)
    else {
        return QualityLevel::AudioOnly;
    };
    let Some(video) = sub.video.as_ref() else {
        return QualityLevel::AudioOnly;
    };
    match (video.current(), video.target()) {
        (_, None) => QualityLevel::Paused,
        (None, Some(_)) => QualityLevel::AudioOnly,
        (Some(l), _) if l + 1 >= sub.layer_count && sub.layer_count > 1 => QualityLevel::Top,
        (Some(0), _) if sub.layer_count > 1 => QualityLevel::Low,
        (Some(_), _) if sub.layer_count == 1 => QualityLevel::Top,
        (Some(_), _) => QualityLevel::Middle,
    }
}

fn request_keyframe(
    conns: &mut std::collections::HashMap<ConnId, super::Conn>,
    publisher: ConnId,
    mid: str0m::media::Mid,
    rid: Option<Rid>,
    metrics: &crate::metrics::Metrics,
) {
    let Some(peer) = conns.get_mut(&publisher).and_then(|c| c.peer.as_mut()) else {
        return;
    };
    if let Some(mut writer) = peer.rtc.writer(mid) {
        // Fails only when this rid is not (yet) received; the next frame asks again.
        if writer
            .request_keyframe(rid, KeyframeRequestKind::Pli)
            .is_ok()
        {
            metrics.keyframe_requests.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_choice_table() {
        use LayerChoice::*;
        // (cap, estimate, layers, thumbnail, expected)
        let rows = [
            (Auto, Some(3_000_000), 3, false, 2),
            (Auto, Some(1_000_000), 3, false, 1),
            (Auto, Some(300_000), 3, false, 0),
            (Auto, None, 3, false, 0),
            (Auto, Some(3_000_000), 2, false, 1),
            (Auto, Some(3_000_000), 3, true, 0),
            (High, Some(100_000), 3, false, 2),
            (Medium, None, 3, false, 1),
            (Medium, None, 1, false, 0),
            (Low, Some(9_000_000), 3, false, 0),
        ];
        for (cap, est, n, thumb, expected) in rows {
            assert_eq!(
                target_layer(cap, est, n, thumb),
                expected,
                "{cap:?} {est:?} {n} {thumb}"
            );
        }
    }
}
