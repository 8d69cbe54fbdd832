//! Bandwidth adaptation, applied: per subscriber, str0m's estimate goes through the allocator
//! (`bwe::allocate`) into each received video's layer selector; publishers are told which
//! simulcast layers their subscribers take (dynacast); audio redundancy is costed by loss; pages
//! are told what they receive and the teacher how each classroom's link looks.

use std::time::Instant;

use str0m::bwe::{Bitrate, RecentFeedback};
use str0m::media::Mid;

use crate::bwe::{
    allocate, outage, overflow, FeedbackTimes, LayerBitrate, LayerChoice as Choice, Priority, Room,
    TrackDemand, MAX_LAYERS,
};
use crate::media::peer::{OutState, Peer, Published};
use crate::media::red;
use crate::signal::message::{
    LayerChoice, LinkInfo, LinkLevel, MediaKind, Role, ServerMessage, SourceKind, TrackQuality,
};
use crate::signal::ConnId;

use super::Engine;

/// Opus as browsers send it, before the first measurement.
const AUDIO_DEFAULT_BPS: u64 = 40_000;

/// Loss from which a link with a long round trip gets higher layers at full frame rate only
/// (`TrackDemand::partial_rates`). On the bursty profile (≈14 %) 640 px at 15 fps froze for
/// seconds at a time where 320 px at 30 fps played on.
const FRAGILE_LOSS: f32 = 0.05;

/// The traffic light for a classroom's link.
pub(crate) fn link_level(estimate_bps: u64, loss: f32, rtt_ms: u32) -> LinkLevel {
    if estimate_bps < 300_000 || loss > 0.05 || rtt_ms > 500 {
        LinkLevel::Poor
    } else if estimate_bps < 800_000 || loss > 0.01 || rtt_ms > 250 {
        LinkLevel::Fair
    } else {
        LinkLevel::Good
    }
}

/// The highest layer a subscriber takes of a track: its own cap, and thumbnails (classrooms at
/// the teacher, unless called on) stay on the lowest layer.
pub(crate) fn max_layer(cap: LayerChoice, layer_count: usize, thumbnail: bool) -> u8 {
    let top = layer_count.saturating_sub(1) as u8;
    if thumbnail {
        return 0;
    }
    match cap {
        LayerChoice::Low => 0,
        LayerChoice::Medium => 1.min(top),
        LayerChoice::High | LayerChoice::Auto => top,
    }
}

impl Engine {
    pub(crate) fn on_estimate(&mut self, id: ConnId, estimate: Bitrate, now: Instant) {
        if let Some(peer) = self.conns.get_mut(&id).and_then(|c| c.peer.as_mut()) {
            tracing::trace!(%id, bps = estimate.as_u64(), "egress estimate");
            self.metrics.estimate_bps.observe(estimate.as_u64() as f64);
            // The estimate falls as an outage's late feedback arrives: restore it first, so the
            // allocation never sees the fall (a pause would cost a hold and a keyframe).
            if self.adaptation {
                let feedback = peer.rtc.bwe().recent_feedback(overflow::WINDOW);
                recover_from_outage(id, peer, now, feedback.as_ref());
            }
            let floor = peer
                .outage
                .floor(now)
                .filter(|_| self.adaptation)
                .unwrap_or(0);
            peer.estimate_bps = Some(estimate.as_u64().max(floor));
        }
        self.reallocate(id, now);
    }

    /// Splits this subscriber's estimate across what it receives and hands each video selector
    /// its share. Runs per estimate update and route change, not per packet.
    pub(crate) fn reallocate(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let Some(joined) = conn.joined.as_ref() else {
            return;
        };
        let Some(peer) = conn.peer.as_ref() else {
            return;
        };
        let is_teacher = joined.role == Role::Teacher;
        let called_on = joined
            .lesson_id
            .as_deref()
            .and_then(|l| self.registry.get(l))
            .and_then(|l| l.called_on.clone());

        // Pass 1, read-only: what each received track costs and may take.
        let mut demands = Vec::with_capacity(peer.subscribed.len());
        // Per track: the ceiling of each layer where layer shaping may raise it (the teacher's
        // camera), else `None`.
        let mut shaping = Vec::with_capacity(peer.subscribed.len());
        let mut red_depth = 0;
        let fec_on = self.tuning.video_fec && peer.fec_link.is_on();
        // Loss as the repair costs see it: up at once, down over seconds. A village link's
        // bursts come back; costs that followed each second's loss (0–30 % on the bursty
        // profile) moved a layer in and out of the budget every few seconds.
        let link_loss = peer.fec_link.loss();
        // Half frame rates of higher layers only where NACK repairs in time or loss is rare
        // (`TrackDemand::partial_rates`).
        let partial_rates = !(peer.fec_link.is_on() && link_loss >= FRAGILE_LOSS);
        let fec_wanted = if fec_on {
            peer.fec_link.wanted(peer.overflow.cap_bps().is_some())
        } else {
            0.0
        };
        for (index, sub) in peer.subscribed.iter().enumerate() {
            if !matches!(sub.state, OutState::Open(_) | OutState::Negotiating(_)) {
                continue;
            }
            let Some(published) = self
                .conns
                .get(&sub.key.publisher)
                .and_then(|c| c.peer.as_ref())
                .and_then(|p| p.published.iter().find(|t| t.mid == sub.key.mid))
            else {
                continue;
            };
            let is_called_on = called_on.as_deref() == Some(sub.classroom_id.as_str());
            let priority = match (sub.kind, sub.from_teacher, sub.source) {
                (MediaKind::Audio, _, _) => Priority::Audio,
                (_, true, SourceKind::Screen) => Priority::Screen,
                (_, true, _) => Priority::TeacherCamera,
                _ if is_called_on => Priority::CalledOn,
                _ => Priority::Classroom,
            };
            let camera = sub.kind == MediaKind::Video && sub.source != SourceKind::Screen;
            let choppy_ratio = choppy_ratio(self.tuning.choppy_ratio, sub.kind, sub.source);
            let mut layers = published
                .dynacast
                .offered(now, &published.rates, choppy_ratio);
            let shapeable = camera && sub.from_teacher && published.layers.len() > 1;
            shaping.push(shapeable.then(|| {
                std::array::from_fn::<_, MAX_LAYERS, _>(|l| published.shaper.ceiling(l as u8))
            }));
            if sub.kind == MediaKind::Audio && layers.is_empty() {
                layers.push(LayerBitrate::plain(0, AUDIO_DEFAULT_BPS));
            }
            let thumbnail = is_teacher && !is_called_on;
            let redundancy = match sub.kind {
                // Audio goes out RED-wrapped where the client negotiated RED and the link loses
                // packets, one to three levels deep (`media::red::depth`), each level one more
                // payload; counted for every client to stay on the safe side.
                MediaKind::Audio => {
                    let audio_bps = layers.first().map_or(AUDIO_DEFAULT_BPS, |l| l.bps);
                    let depth = red::depth(
                        link_loss,
                        peer.overflow.cap_bps().is_some(),
                        peer.estimate_bps.unwrap_or(self.initial_estimate_bps),
                        audio_bps,
                    );
                    red_depth = red_depth.max(depth);
                    depth as f64
                }
                // Retransmissions at the measured loss, and the FEC the link calls for: a layer
                // is taken only with the protection it needs (on a lossy link a smaller picture
                // that arrives whole beats a larger one frozen on its losses).
                MediaKind::Video => f64::from(link_loss).min(0.5) + f64::from(fec_wanted),
            };
            demands.push(TrackDemand {
                id: index as u64,
                priority,
                layers,
                max_layer: max_layer(peer.max_layer, sub.layer_count, thumbnail),
                redundancy,
                partial_rates,
            });
        }
        let estimate = peer.estimate_bps.unwrap_or(self.initial_estimate_bps);
        // While the link overflows, what got through bounds the estimate at once.
        let estimate = peer
            .overflow
            .cap_bps()
            .map_or(estimate, |cap| estimate.min(cap));
        // A pinned layer (`set_max_layer` other than `auto`) bypasses adaptation, like the baseline.
        let adaptive = self.adaptation && peer.max_layer == LayerChoice::Auto;
        let allocation = adaptive.then(|| allocate(estimate, &demands, &self.tuning));
        // FEC only where adapting (the baseline stays plain); the allocation paid for it.
        let fec_rate = if allocation.is_some() {
            fec_wanted
        } else {
            0.0
        };

        // Pass 2: apply to the selectors.
        let Some(peer) = self.conns.get_mut(&id).and_then(|c| c.peer.as_mut()) else {
            return;
        };
        peer.red_depth = red_depth;
        peer.next_step_bps = allocation.as_ref().and_then(|a| a.next_step_bps);
        // The stream stays in ULPFEC mode while the loss calls for FEC, even when the budget
        // leaves none for a while: the mode changes with the link, the rate with the allocation.
        let fec_mode = allocation.is_some() && fec_on;
        if peer.fec_mode != fec_mode {
            tracing::debug!(%id, loss = peer.fec_link.loss(), rtt = ?peer.rtt, "video FEC {}", if fec_mode { "on" } else { "off" });
        }
        peer.fec_mode = fec_mode;
        peer.fec_rate = fec_rate;
        let overflowing = allocation.is_some() && peer.overflow.cap_bps().is_some();
        let favoured = allocation
            .as_ref()
            .and_then(|a| favoured(&demands, &shaping, a));
        let rooms = shaping_rooms(&demands, allocation.as_ref(), favoured);
        for (i, demand) in demands.iter().enumerate() {
            let Some(video) = peer
                .subscribed
                .get_mut(demand.id as usize)
                .and_then(|s| s.video.as_mut())
            else {
                continue;
            };
            video.selector.set_overflowing(overflowing);
            if video.selector.max() != demand.max_layer {
                video.selector.set_max(now, demand.max_layer);
            }
            let choice = match &allocation {
                Some(a) => a.tracks[i].choice,
                // Baseline or pinned: always the top layer the subscriber allows.
                None => Some(Choice {
                    layer: demand.max_layer,
                    temporal: crate::bwe::ALL_TEMPORAL,
                }),
            };
            let before = video.selector.target();
            video.selector.on_allocation(now, choice);
            if video.selector.target() != before {
                tracing::debug!(%id, from = ?before, to = ?video.selector.target(), "layer target");
            }
            video.room = rooms[i];
        }
        if let Some(a) = &allocation {
            tracing::trace!(%id, estimate, allocated = a.allocated_bps, desired = a.desired_bps, tracks = ?a.tracks, ?demands, "allocation");
        }
        if let Some(a) = allocation {
            // Probe for what raising the shaped layer up to its ceiling would take, so that the
            // estimate can grow into it.
            let shaping_probe = favoured
                .and_then(|i| {
                    let layer = a.tracks[i].choice?.layer;
                    let ceiling = shaping[i]?[layer as usize]?;
                    let taken = demands[i].layers.iter().find(|l| l.layer == layer)?.bps;
                    Some(ceiling.saturating_sub(taken) as f64 * (1.0 + demands[i].redundancy))
                })
                .map_or(0, |extra| {
                    ((a.allocated_bps as f64 + extra) / self.tuning.headroom) as u64
                });
            let rates = (
                a.sustain_bps(),
                a.desired_bps.max(a.allocated_bps).max(shaping_probe),
            );
            if peer.bwe_rates != Some(rates) {
                peer.bwe_rates = Some(rates);
                peer.rtc
                    .bwe()
                    .set_bitrate(Bitrate::bps(rates.0), Bitrate::bps(rates.1));
                self.mark_dirty(id);
            }
        }
    }

    /// Every adaptation tick, after the allocations: each layer of the teacher's camera at the
    /// bitrate its subscribers have room for (`bwe::shape`); the teacher hears of changes at
    /// once. Classroom cameras keep their own rates: Chromium fills a lower simulcast layer
    /// before a higher one, so on a village uplink a raised thumbnail layer would take from the
    /// layer the called-on classroom is seen in.
    fn shape_layers(&mut self, now: Instant) {
        let mut updates = Vec::new();
        for (pub_id, conn) in &self.conns {
            let Some(joined) = conn.joined.as_ref().filter(|j| j.role == Role::Teacher) else {
                continue;
            };
            let Some(peer) = conn.peer.as_ref() else {
                continue;
            };
            // Its subscribers are in its lesson: no need to look through every lesson's.
            let Some(lesson) = joined
                .lesson_id
                .as_deref()
                .and_then(|l| self.registry.get(l))
            else {
                continue;
            };
            for track in peer.published.iter() {
                if track.kind != MediaKind::Video
                    || track.source == SourceKind::Screen
                    || track.layers.len() < 2
                {
                    continue;
                }
                let mut rooms = [Room::Unwatched; MAX_LAYERS];
                let subscribers = lesson
                    .connections()
                    .filter_map(|id| self.conns.get(&id)?.peer.as_ref())
                    .flat_map(|p| p.subscribed.iter())
                    .filter(|s| s.key.publisher == *pub_id && s.key.mid == track.mid);
                for (layer, room) in subscribers.filter_map(|s| s.video.as_ref()?.room) {
                    if let Some(r) = rooms.get_mut(layer as usize) {
                        r.add(room);
                    }
                }
                updates.push((*pub_id, track.mid, rooms));
            }
        }
        for (pub_id, mid, rooms) in updates {
            let Some(track) = self.published_mut(pub_id, mid) else {
                continue;
            };
            let measured: [Option<u64>; MAX_LAYERS] =
                std::array::from_fn(|l| track.rates.layer(now, l as u8).map(|b| b.bps));
            if track.shaper.update(now, &measured, &rooms).is_some() {
                tracing::debug!(%pub_id, %mid, told = ?track.shaper.told(), "layer shaping");
                let msg = publish_layers(track);
                self.send(pub_id, msg);
            }
        }
    }

    /// Between adaptation ticks: an early reading of each adapted subscriber's newest sends,
    /// which bounds a collapsing link at once (`OverflowDetector::on_early_feedback`) and
    /// re-allocates it; nothing else changes here.
    pub(crate) fn early_overflow_tick(&mut self, now: Instant) {
        if !self.adaptation {
            return;
        }
        let mut bounded = Vec::new();
        for (id, conn) in &mut self.conns {
            let Some(peer) = conn.peer.as_mut().filter(|p| !p.subscribed.is_empty()) else {
                continue;
            };
            if read_early_feedback(*id, peer, now) {
                apply_pacing_cap(peer, true);
                bounded.push(*id);
            }
        }
        for id in bounded {
            self.mark_dirty(id);
            self.reallocate(id, now);
        }
    }

    /// Every adaptation tick: holds that ended, keyframes still awaited, and periodic
    /// re-allocation (layer rates move even when the estimate does not).
    pub(crate) fn adapt_tick(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer.as_ref().is_some_and(|p| !p.subscribed.is_empty()))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let adaptation = self.adaptation;
            let tolerance = adaptation && self.tuning.loss_tolerance;
            let repaced = self
                .conns
                .get_mut(&id)
                .and_then(|c| c.peer.as_mut())
                .is_some_and(|peer| follow_feedback(id, peer, now, adaptation, tolerance));
            if repaced {
                self.mark_dirty(id);
            }
            self.reallocate(id, now);
            let climbed = adaptation
                && self.tuning.climb_probes
                && self
                    .conns
                    .get_mut(&id)
                    .and_then(|c| c.peer.as_mut())
                    .is_some_and(|peer| climb(id, peer, now));
            if climbed {
                self.mark_dirty(id);
            }
            let Some(peer) = self.conns.get_mut(&id).and_then(|c| c.peer.as_mut()) else {
                continue;
            };
            let mut asks = Vec::new();
            for sub in &mut peer.subscribed {
                let Some(video) = sub.video.as_mut() else {
                    continue;
                };
                if video.selector.poll_timeout().is_some_and(|t| t <= now) {
                    video.selector.handle_timeout(now);
                }
                // The browser asked again for a packet that has left the retransmission history:
                // its picture cannot be repaired, and Chromium would go on asking (up to ten
                // times, a round trip apart) before it asks for a keyframe, if that request gets
                // through its own lossy uplink.
                // Ask on its behalf now, through the shared throttle. Taken every tick, so that
                // what was asked while a keyframe was awaited anyway does not count later.
                let expired = sub.state.mid().map_or(0, |mid| {
                    peer.rtc
                        .direct_api()
                        .stream_tx_by_mid(mid, None)
                        .map_or(0, |tx| tx.take_expired_nacks())
                });
                if let Some(req) = video.selector.keyframe_request(now) {
                    asks.push((sub.key, sub.track_id, req.layer, req.waiting_since));
                } else if let Some(current) = video
                    .selector
                    .current()
                    .filter(|_| expired > 0 && !video.selector.is_waiting())
                {
                    tracing::debug!(%id, mid = ?sub.state.mid(), expired, "keyframe for packets gone from the history");
                    asks.push((sub.key, sub.track_id, current.layer, now));
                }
            }
            for (key, track_id, layer, waiting_since) in asks {
                self.ask_keyframe(key, track_id, layer, waiting_since, now);
            }
        }
        self.dynacast(now);
        if self.adaptation {
            self.shape_layers(now);
        }
    }

    /// Once a second: quality reports.
    pub(crate) fn report_tick(&mut self) {
        self.send_quality();
        self.send_link_quality();
    }

    /// The track `pub_id` publishes at `mid`.
    fn published_mut(&mut self, pub_id: ConnId, mid: Mid) -> Option<&mut Published> {
        self.conns
            .get_mut(&pub_id)?
            .peer
            .as_mut()?
            .published
            .iter_mut()
            .find(|t| t.mid == mid)
    }

    /// Every adaptation tick: tells each publisher which layers of each video its subscribers
    /// take (`bwe::dynacast`): the layer a subscriber's allocation settled on, or the one still
    /// flowing to it while it switches down. A target above what is encoded switches it on at
    /// the next tick.
    fn dynacast(&mut self, now: Instant) {
        let mut updates = Vec::new();
        for (pub_id, conn) in &self.conns {
            let Some(peer) = conn.peer.as_ref() else {
                continue;
            };
            for track in peer.published.iter().filter(|t| t.layers.len() > 1) {
                let taken = self
                    .conns
                    .values()
                    .filter_map(|c| c.peer.as_ref())
                    .flat_map(|p| p.subscribed.iter())
                    .filter(|s| s.key.publisher == *pub_id && s.key.mid == track.mid)
                    .filter_map(|s| s.video.as_ref())
                    .flat_map(|v| [v.selector.target(), v.selector.current()])
                    .flatten()
                    .map(|c| c.layer)
                    .max();
                updates.push((*pub_id, track.mid, taken));
            }
        }
        let tuning_ratio = self.tuning.choppy_ratio;
        for (pub_id, mid, taken) in updates {
            let Some(track) = self.published_mut(pub_id, mid) else {
                continue;
            };
            let choppy_ratio = choppy_ratio(tuning_ratio, track.kind, track.source);
            let count = track.layers.len();
            if let Some(active) =
                track
                    .dynacast
                    .update(now, &track.rates, taken, count, choppy_ratio)
            {
                tracing::debug!(%pub_id, %mid, ?active, "dynacast");
                let msg = publish_layers(track);
                self.send(pub_id, msg);
            }
        }
    }

    /// Each subscriber hears what it receives when that changes (the page shows "paused").
    fn send_quality(&mut self) {
        let mut out = Vec::new();
        for (id, conn) in self.conns.iter_mut() {
            let Some(peer) = conn.peer.as_mut() else {
                continue;
            };
            let tracks: Vec<TrackQuality> = peer
                .subscribed
                .iter()
                .filter_map(|s| {
                    let video = s.video.as_ref()?;
                    Some(TrackQuality {
                        mid: s.state.mid()?.to_string(),
                        layer: video.selector.current().map(|c| c.layer),
                        paused: video.selector.target().is_none() && self.adaptation,
                    })
                })
                .collect();
            if tracks != peer.last_quality {
                peer.last_quality = tracks.clone();
                let estimate_kbps = (peer.estimate_bps.unwrap_or(0) / 1000) as u32;
                out.push((
                    *id,
                    ServerMessage::Quality {
                        estimate_kbps,
                        tracks,
                    },
                ));
            }
        }
        for (id, msg) in out {
            self.send(id, msg);
        }
    }

    /// The teacher's traffic lights.
    fn send_link_quality(&mut self) {
        let mut out = Vec::new();
        for lesson in self.registry.lessons() {
            let Some(teacher) = lesson.teacher else {
                continue;
            };
            let classrooms = lesson
                .present
                .iter()
                .filter_map(|(classroom_id, conn)| {
                    let peer = self.conns.get(conn)?.peer.as_ref()?;
                    let estimate = peer.estimate_bps.unwrap_or(0);
                    let loss = peer.loss.unwrap_or(0.0);
                    let rtt_ms = peer.rtt.map_or(0, |d| d.as_millis() as u32);
                    Some(LinkInfo {
                        classroom_id: classroom_id.clone(),
                        estimate_kbps: (estimate / 1000) as u32,
                        loss_pct: f64::from(loss) * 100.0,
                        rtt_ms,
                        level: link_level(estimate, loss, rtt_ms),
                    })
                })
                .collect();
            out.push((teacher, ServerMessage::LinkQuality { classrooms }));
        }
        for (id, msg) in out {
            self.send(id, msg);
        }
    }
}

/// Reads the subscriber's newest transport-wide feedback into its outage, overflow and
/// radio-loss detectors, over the regular window and then the early one. A link back from an
/// outage restarts the subscriber's video on keyframes and its estimate near the old one. While
/// the link overflows, str0m's pacing is held under what it delivered (the baseline,
/// `--no-adaptation`, keeps str0m's own pacing), and when that bound lapses an estimate still far
/// over it restarts at it; while the link loses packets at a steady round trip, str0m's estimate
/// ignores the loss (if `tolerance`). True when the pacing changed.
fn follow_feedback(
    id: ConnId,
    peer: &mut Peer,
    now: Instant,
    adaptation: bool,
    tolerance: bool,
) -> bool {
    let feedback = peer.rtc.bwe().recent_feedback(overflow::WINDOW);
    let times = FeedbackTimes {
        last_report: peer.rtc.bwe().last_feedback_at(),
        oldest_unreported: peer.rtc.bwe().oldest_unreported_send(),
    };
    if adaptation && peer.outage_watch.on_tick(now, times, feedback.as_ref()) {
        tracing::debug!(%id, ?feedback, "link back from an outage: video restarts on keyframes");
        restart_video(peer, now);
    }
    peer.calm = false;
    if adaptation && recover_from_outage(id, peer, now, feedback.as_ref()) {
        apply_pacing_cap(peer, adaptation);
        return true;
    }
    if adaptation && feedback.as_ref().is_some_and(outage::is_outage) {
        // What was sent into an outage says nothing about the link's rate or queue.
        return apply_pacing_cap(peer, adaptation);
    }
    let queue = feedback.as_ref().and_then(|fb| peer.queue.on_feedback(fb));
    if peer.overflow.on_feedback(now, feedback.as_ref(), queue) {
        tracing::debug!(%id, ?feedback, ?queue, "link overflows: allocation bounded");
        peer.fec_link.forget_congestion();
    }
    if let Some(lapsed) = peer.overflow.take_lapsed().filter(|_| adaptation) {
        restart_after_bound(id, peer, lapsed);
    }
    // Then the newest sends alone, as between ticks: a collapse the regular window does not
    // show yet is bounded now, not a tick later. In this order, a bound the regular reading
    // started is not replaced: the early reading leaves a standing bound alone. The other order
    // would let the regular reading move an early bound at once to its own delivered rate, which
    // right after a collapse still counts arrivals at the old rate.
    let early = adaptation && read_early_feedback(id, peer, now);
    let overflowing = peer.overflow.cap_bps().is_some();
    peer.calm = !overflowing
        && queue.is_some_and(|q| q < overflow::QUEUE_GROWTH)
        && peer.fec_link.loss() < FRAGILE_LOSS;
    let tolerant = peer
        .radio_loss
        .on_feedback(now, feedback.as_ref(), queue, overflowing)
        && tolerance;
    if tolerant != peer.loss_tolerant {
        tracing::debug!(%id, tolerant, ?feedback, ?queue, "radio-loss tolerance");
        peer.loss_tolerant = tolerant;
        peer.rtc.bwe().set_loss_tolerant(tolerant);
    }
    apply_pacing_cap(peer, adaptation) || early
}

/// A probe toward the allocation's next step, when `bwe::climb` calls for one. True when it did.
fn climb(id: ConnId, peer: &mut Peer, now: Instant) -> bool {
    let Some(estimate) = peer.estimate_bps else {
        return false;
    };
    let Some(target) = peer
        .climb
        .on_tick(now, estimate, peer.next_step_bps, peer.calm)
    else {
        return false;
    };
    tracing::debug!(%id, estimate, target, "probe toward the next step");
    peer.rtc.bwe().request_probe(Bitrate::bps(target));
    true
}

/// An early reading of the subscriber's newest sends ([`overflow::EARLY_WINDOW`]); when it shows
/// a collapse, bounds the allocation at once (the caller applies the pacing cap). True when it
/// did.
fn read_early_feedback(id: ConnId, peer: &mut Peer, now: Instant) -> bool {
    let Some(feedback) = peer.rtc.bwe().recent_feedback(overflow::EARLY_WINDOW) else {
        return false;
    };
    if outage::is_outage(&feedback) {
        return false;
    }
    let queue = peer.queue.peek(&feedback);
    let radio_lossy = peer.radio_loss.radio_lossy(now);
    if !peer
        .overflow
        .on_early_feedback(now, &feedback, queue, radio_lossy)
    {
        return false;
    }
    tracing::debug!(%id, ?feedback, ?queue, "link collapses: allocation bounded early");
    peer.fec_link.forget_congestion();
    true
}

/// When `feedback` (the regular window's) is the first of an outage's (`bwe::outage`): lifts any
/// bound and restarts str0m's estimate at a share of what it was before. True when it did.
fn recover_from_outage(
    id: ConnId,
    peer: &mut Peer,
    now: Instant,
    feedback: Option<&RecentFeedback>,
) -> bool {
    let Some(feedback) = feedback else {
        return false;
    };
    let Some(restore) = peer.outage.on_feedback(now, feedback, peer.estimate_bps) else {
        return false;
    };
    tracing::debug!(%id, ?feedback, restore, "link back from an outage: estimate restored");
    peer.overflow.lift();
    restart_estimate(peer, restore);
    true
}

/// str0m's estimator starts again from `bps`, and so does this subscriber's copy of it (str0m
/// reports the new estimate only at its next change).
fn restart_estimate(peer: &mut Peer, bps: u64) {
    peer.rtc.bwe().reset(Bitrate::bps(bps));
    peer.estimate_bps = Some(bps);
}

/// Every video track this subscriber receives waits for a fresh keyframe, asked for at once,
/// and what its streams still hold to send or resend is dropped: after an outage the decoder
/// has lost its references, and resends of seconds of the past would go out ahead of the
/// keyframe.
fn restart_video(peer: &mut Peer, now: Instant) {
    for sub in &mut peer.subscribed {
        let (Some(video), Some(mid)) = (sub.video.as_mut(), sub.state.mid()) else {
            continue;
        };
        video.selector.restart(now);
        if let Some(tx) = peer.rtc.direct_api().stream_tx_by_mid(mid, None) {
            tx.drop_queued();
        }
    }
}

/// A bound of `lapsed` bits per second just lapsed: str0m's estimate, if still far over it,
/// restarts at it ([`overflow::restart_at`]) rather than overflow the link again.
fn restart_after_bound(id: ConnId, peer: &mut Peer, lapsed: u64) {
    let Some(restart) = overflow::restart_at(lapsed, peer.estimate_bps) else {
        return;
    };
    tracing::debug!(%id, restart, estimate = ?peer.estimate_bps, "bound lapsed: estimate restarted at it");
    restart_estimate(peer, restart);
}

/// Holds str0m's pacing under what the overflowing link delivered (only when adapting), or lifts
/// the hold. True when the pacing changed.
fn apply_pacing_cap(peer: &mut Peer, adaptation: bool) -> bool {
    let pacing_cap = peer
        .overflow
        .cap_bps()
        .filter(|_| adaptation)
        .map(overflow::pacing_cap);
    if peer.pacing_cap == pacing_cap {
        return false;
    }
    peer.pacing_cap = pacing_cap;
    peer.rtc.bwe().set_pacing_cap(pacing_cap.map(Bitrate::bps));
    true
}

/// `Tuning::choppy_ratio` for a camera; 0 (the rule off) for audio and screen shares, whose
/// text needs the pixels more than the frames.
fn choppy_ratio(tuning_ratio: f64, kind: MediaKind, source: SourceKind) -> f64 {
    if kind == MediaKind::Video && source != SourceKind::Screen {
        tuning_ratio
    } else {
        0.0
    }
}

/// What a publisher is told of one track: the layers to encode and the bitrates shaped ones
/// may take.
fn publish_layers(track: &Published) -> ServerMessage {
    let active = track
        .layers
        .iter()
        .zip(track.dynacast.active(track.layers.len()))
        .filter(|(_, on)| *on)
        .filter_map(|(r, _)| r.map(|r| r.to_string()))
        .collect();
    let max_kbps = track
        .layers
        .iter()
        .zip(track.shaper.told())
        .filter_map(|(rid, bps)| Some((rid.as_ref()?.to_string(), (bps.as_ref()? / 1000) as u32)))
        .collect();
    ServerMessage::PublishLayers {
        mid: track.mid.to_string(),
        active,
        max_kbps,
    }
}

/// The track the allocation's spare budget goes to: the highest-priority shapeable one taken.
fn favoured<T>(
    demands: &[TrackDemand],
    shaping: &[Option<T>],
    a: &crate::bwe::Allocation,
) -> Option<usize> {
    (0..demands.len())
        .filter(|&i| shaping[i].is_some() && a.tracks[i].choice.is_some())
        .min_by_key(|&i| demands[i].priority)
}

/// Per received track, the layer this subscriber takes and the video bitrate it has room for
/// on it (`VideoOut::room`). What the allocation left of the budget goes to one track only, the
/// highest-priority camera, so two tracks never count on the same spare bits; every other track
/// has room for what it takes. Unadapted (baseline, pinned) subscribers have no room.
fn shaping_rooms(
    demands: &[TrackDemand],
    allocation: Option<&crate::bwe::Allocation>,
    favoured: Option<usize>,
) -> Vec<Option<(u8, Option<u64>)>> {
    let Some(a) = allocation else {
        return demands.iter().map(|d| Some((d.max_layer, None))).collect();
    };
    let spare = a.budget_bps.saturating_sub(a.allocated_bps);
    (0..demands.len())
        .map(|i| {
            // At part of its frame rate the layer does not fit whole: its room, under what it
            // measures, cuts a raised layer to what fits rather than back to its own rate.
            let choice = a.tracks[i].choice?;
            let extra = if Some(i) == favoured { spare } else { 0 };
            let video = (a.tracks[i].bps + extra) as f64 / (1.0 + demands[i].redundancy);
            Some((choice.layer, Some(video as u64)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_light_table() {
        let rows = [
            (2_000_000, 0.0, 40, LinkLevel::Good),
            (600_000, 0.0, 40, LinkLevel::Fair),
            (2_000_000, 0.02, 40, LinkLevel::Fair),
            (2_000_000, 0.0, 300, LinkLevel::Fair),
            (250_000, 0.0, 40, LinkLevel::Poor),
            (2_000_000, 0.10, 40, LinkLevel::Poor),
            (2_000_000, 0.0, 600, LinkLevel::Poor),
        ];
        for (est, loss, rtt, level) in rows {
            assert_eq!(link_level(est, loss, rtt), level, "{est} {loss} {rtt}");
        }
    }

    #[test]
    fn max_layer_table() {
        assert_eq!(max_layer(LayerChoice::Auto, 3, false), 2);
        assert_eq!(max_layer(LayerChoice::Auto, 3, true), 0);
        assert_eq!(max_layer(LayerChoice::Medium, 3, false), 1);
        assert_eq!(max_layer(LayerChoice::Medium, 1, false), 0);
        assert_eq!(max_layer(LayerChoice::High, 2, false), 1);
        assert_eq!(max_layer(LayerChoice::Low, 3, false), 0);
    }

    #[test]
    fn the_spare_budget_goes_to_the_highest_priority_camera_only() {
        let tuning = crate::bwe::Tuning::default();
        let video = |id, priority, bps| TrackDemand {
            id,
            priority,
            layers: vec![LayerBitrate::plain(0, bps)],
            max_layer: 0,
            redundancy: 0.25,
            partial_rates: true,
        };
        let demands = [
            video(0, Priority::CalledOn, 300_000),
            video(1, Priority::TeacherCamera, 400_000),
            video(2, Priority::Screen, 200_000),
        ];
        let shaping = [Some(()), Some(()), None];
        let estimate = 2_000_000;
        let a = allocate(estimate, &demands, &tuning);
        assert_eq!(a.budget_bps, (estimate as f64 * tuning.headroom) as u64);
        let rooms = shaping_rooms(&demands, Some(&a), favoured(&demands, &shaping, &a));
        let spare = a.budget_bps - a.allocated_bps;
        assert!(spare > 500_000, "{a:?}");
        // Teacher camera: its own video plus the spare, net of its repair share.
        let teacher = rooms[1].unwrap();
        assert_eq!(teacher.0, 0);
        let expected = (a.tracks[1].bps + spare) as f64 / 1.25;
        assert!(
            (teacher.1.unwrap() as f64 - expected).abs() < 2.0,
            "{rooms:?}"
        );
        // The others: what they take now.
        for i in [0, 2] {
            let taken = (a.tracks[i].bps as f64 / 1.25) as u64;
            assert_eq!(rooms[i], Some((0, Some(taken))), "track {i}");
        }
        // Unadapted: the top layer allowed, no room.
        assert_eq!(
            shaping_rooms(&demands, None, None),
            vec![Some((0, None)); 3]
        );
        // Paused for lack of budget: on no layer.
        let starved = allocate(100_000, &demands, &tuning);
        let favoured = favoured(&demands, &shaping, &starved);
        let rooms = shaping_rooms(&demands, Some(&starved), favoured);
        assert!(rooms.iter().all(|r| r.is_none()), "{rooms:?}");
    }
}
