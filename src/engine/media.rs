//! The forwarding path: published tracks appear, frames fan out to subscribers, keyframe
//! requests go back to publishers. Runs per frame: no locks, no logging, and no allocation beyond
//! what str0m itself needs.

use std::collections::HashMap;
use std::time::Instant;

use str0m::media::{
    Direction, KeyframeRequest, KeyframeRequestKind, MediaAdded, MediaData, Mid, Rid,
};
use str0m::media::{MediaChanged, MediaKind as StrMediaKind, MediaTime};

use crate::bwe::{FrameInfo, LayerRates, MAX_LAYERS};
use crate::media::peer::{Published, TrackKey};
use crate::signal::message::MediaKind;
use crate::signal::ConnId;

use super::{mark_dirty_in, Conn, Engine};

/// Orders simulcast rids lowest first: our pages and most clients use q/h/f.
fn rid_rank(rid: &Rid) -> usize {
    match &**rid {
        "q" | "l" | "low" => 0,
        "h" | "m" | "mid" => 1,
        "f" | "hi" | "high" => 2,
        _ => 3,
    }
}

/// Temporal layer, layer-sync bit and keyframe flag of a frame, from its codec details.
fn frame_details(data: &MediaData) -> (Option<u8>, bool) {
    match data.codec_extra {
        str0m::format::CodecExtra::Vp8(vp8) => (Some(vp8.layer_index), vp8.sync),
        _ => (None, false),
    }
}

impl Engine {
    pub(crate) fn on_media_added(&mut self, id: ConnId, added: MediaAdded) {
        // Only m-lines the client sends on are published tracks; ours are SendOnly.
        if !matches!(added.direction, Direction::RecvOnly | Direction::SendRecv) {
            return;
        }
        self.next_track_id += 1;
        let track_id = self.next_track_id;
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
        // More layers than the allocator measures would never be chosen; keep the lowest ones.
        layers.truncate(MAX_LAYERS);
        let source = peer.announced_source(added.mid, kind);
        peer.published.retain(|p| p.mid != added.mid);
        peer.published.push(Published {
            id: track_id,
            mid: added.mid,
            kind,
            source,
            active: vec![true; layers.len()],
            layers,
            rates: LayerRates::new(&self.tuning),
        });
        if let Some(lesson_id) = lesson_id {
            self.schedule_reroute(&lesson_id);
        }
    }

    /// A client stopped sending on an m-line (it stopped sharing its screen, say): its
    /// subscribers lose the track at once.
    pub(crate) fn on_media_changed(&mut self, id: ConnId, changed: MediaChanged) {
        if matches!(changed.direction, Direction::RecvOnly | Direction::SendRecv) {
            return;
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let lesson_id = conn.joined.as_ref().and_then(|j| j.lesson_id.clone());
        let Some(peer) = conn.peer.as_mut() else {
            return;
        };
        let before = peer.published.len();
        peer.published.retain(|p| p.mid != changed.mid);
        if peer.published.len() == before {
            return;
        }
        let key = TrackKey {
            publisher: id,
            mid: changed.mid,
        };
        let others: Vec<ConnId> = self.conns.keys().copied().filter(|c| *c != id).collect();
        for other in others {
            if let Some(p) = self.conns.get_mut(&other).and_then(|c| c.peer.as_mut()) {
                p.unsubscribe(key);
            }
            self.offer_if_needed(other);
        }
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
        let (temporal, layer_sync) = frame_details(&data);
        let keyframe = data.is_keyframe();
        let Some(pub_conn) = conns.get_mut(&publisher) else {
            return;
        };
        let publisher_rtt = pub_conn
            .peer
            .as_ref()
            .and_then(|p| p.rtt)
            .unwrap_or_default();
        let Some((track_id, layer, is_video)) = pub_conn
            .peer
            .as_mut()
            .and_then(|p| p.published.iter_mut().find(|t| t.mid == data.mid))
            .map(|t| {
                let layer = t.layers.iter().position(|r| *r == data.rid).unwrap_or(0) as u8;
                t.rates.on_media(now, layer, temporal, data.data.len());
                (t.id, layer, t.kind == MediaKind::Video)
            })
        else {
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
        metrics.frames_in.inc();
        if is_video && keyframe {
            keyframes.on_keyframe(now, track_id, layer);
        }
        // Layers some subscriber needs a keyframe of, as a bitmask.
        let mut wanted_keyframes: u8 = 0;
        if is_video
            && !data.contiguous
            && keyframes.request(now, track_id, layer, now, publisher_rtt)
        {
            // Frames were lost upstream: this layer needs a fresh keyframe to decode again.
            wanted_keyframes |= 1 << layer;
        }
        let key = TrackKey {
            publisher,
            mid: data.mid,
        };
        let frame = FrameInfo {
            layer,
            temporal,
            keyframe,
            layer_sync,
        };

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
                    let decision = video.selector.on_frame(frame);
                    if let Some(req) = video.selector.keyframe_request(now) {
                        if keyframes.request(
                            now,
                            track_id,
                            req.layer,
                            req.waiting_since,
                            publisher_rtt,
                        ) {
                            wanted_keyframes |= 1 << req.layer;
                        }
                    }
                    if !decision.forward {
                        continue;
                    }
                    if decision.switched {
                        video.timeline.rebase(data.time.numer(), now);
                    }
                    video.timeline.rewrite(data.time.numer(), now)
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
                mark_dirty_in(conns, dirty, sub_id);
            }
        }

        for layer in 0..MAX_LAYERS as u8 {
            if wanted_keyframes & (1 << layer) != 0 {
                request_keyframe(conns, publisher, data.mid, layer, metrics);
                mark_dirty_in(conns, dirty, publisher);
            }
        }
    }

    /// A subscriber's browser asked for a keyframe (its decoder lost the picture): pass it to the
    /// publisher through the shared throttle.
    pub(crate) fn relay_keyframe_request(
        &mut self,
        id: ConnId,
        req: KeyframeRequest,
        now: Instant,
    ) {
        let Some(sub) = self
            .conns
            .get(&id)
            .and_then(|c| c.peer.as_ref())
            .and_then(|p| p.subscribed.iter().find(|s| s.state.mid() == Some(req.mid)))
        else {
            return;
        };
        let (key, track_id) = (sub.key, sub.track_id);
        let layer = sub
            .video
            .as_ref()
            .and_then(|v| v.selector.current().or(v.selector.target()))
            .map_or(0, |c| c.layer);
        self.ask_keyframe(key, track_id, layer, now, now);
    }

    /// Asks the publisher of `key` for a keyframe of `layer` for a subscriber waiting since
    /// `waiting_since`, if the shared throttle lets it through.
    pub(crate) fn ask_keyframe(
        &mut self,
        key: TrackKey,
        track_id: u64,
        layer: u8,
        waiting_since: Instant,
        now: Instant,
    ) {
        let rtt = self
            .conns
            .get(&key.publisher)
            .and_then(|c| c.peer.as_ref())
            .and_then(|p| p.rtt)
            .unwrap_or_default();
        if self
            .keyframes
            .request(now, track_id, layer, waiting_since, rtt)
        {
            request_keyframe(
                &mut self.conns,
                key.publisher,
                key.mid,
                layer,
                &self.metrics,
            );
            self.mark_dirty(key.publisher);
        }
    }
}

/// Sends a PLI for one layer of a publisher's track.
fn request_keyframe(
    conns: &mut HashMap<ConnId, Conn>,
    publisher: ConnId,
    mid: Mid,
    layer: u8,
    metrics: &crate::metrics::Metrics,
) {
    let Some(peer) = conns.get_mut(&publisher).and_then(|c| c.peer.as_mut()) else {
        return;
    };
    let Some(rid) = peer
        .published
        .iter()
        .find(|t| t.mid == mid)
        .and_then(|t| t.layers.get(layer as usize).copied())
    else {
        return;
    };
    if let Some(mut writer) = peer.rtc.writer(mid) {
        // Fails only when this rid is not (yet) received; the selector asks again.
        if writer
            .request_keyframe(rid, KeyframeRequestKind::Pli)
            .is_ok()
        {
            metrics.keyframe_requests.inc();
        }
    }
}
