//! The forwarding path: published tracks appear, RTP packets fan out to subscribers, keyframe
//! requests go back to publishers. Runs per packet: no locks, no logging; a payload is shared
//! by every subscriber (str0m patches VP8 picture ids as it sends); a RED audio payload is built
//! once per packet for each redundancy depth subscribers need.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequest, KeyframeRequestKind, MediaAdded, Mid, Pt, Rid};
use str0m::media::{MediaChanged, MediaKind as StrMediaKind};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::Rtc;

use crate::bwe::{FrameInfo, LayerRates, MAX_LAYERS};
use crate::media::frames::Seen;
use crate::media::peer::{OutPts, OutState, Peer, Published, TrackKey};
use crate::media::red::AudioHistory;
use crate::media::vp8::Vp8Packet;
use crate::media::{history, red};
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
            layers,
            rates: LayerRates::new(&self.tuning),
            dynacast: Default::default(),
            shaper: Default::default(),
            audio: Default::default(),
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

    /// Fans one received RTP packet out to every subscriber of its track, rewritten into each
    /// subscriber's own continuous stream. Video goes by whole frames through each subscriber's
    /// layer selector; audio gets RED redundancy as deep as the subscriber's loss needs.
    pub(crate) fn forward_rtp(&mut self, publisher: ConnId, packet: RtpPacket, now: Instant) {
        let Engine {
            conns,
            registry,
            keyframes,
            dirty,
            metrics,
            tuning,
            crashed,
            ..
        } = self;
        let tuning = &*tuning;
        let backlog_brake = tuning.backlog_brake;
        let Some(pub_conn) = conns.get_mut(&publisher) else {
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
        let Some(peer) = pub_conn.peer.as_mut() else {
            return;
        };
        let publisher_rtt = peer.rtt.unwrap_or_default();
        let Some((mid, rid)) = peer
            .rtc
            .direct_api()
            .stream_rx(&packet.header.ssrc)
            .map(|s| (s.mid(), s.rid()))
        else {
            return;
        };
        let is_red = peer
            .rtc
            .codec_config()
            .iter()
            .any(|p| p.red() == Some(packet.header.payload_type));
        let Some(track) = peer.published.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        let layer = track.layers.iter().position(|r| *r == rid).unwrap_or(0) as u8;
        let track_id = track.id;
        // What the packet is: a VP8 packet's descriptor, or an audio packet's primary payload.
        let incoming = match track.kind {
            MediaKind::Video => {
                let Some(vp8) = Vp8Packet::parse(&packet.payload) else {
                    metrics.malformed_rtp.inc();
                    return;
                };
                track
                    .rates
                    .on_media(now, layer, vp8.temporal, packet.payload.len());
                if packet.header.marker {
                    track.rates.on_frame_end(now, layer);
                    metrics.frames_in.inc();
                }
                if vp8.keyframe {
                    keyframes.on_keyframe(now, track_id, layer);
                }
                Incoming::Video(vp8)
            }
            MediaKind::Audio => {
                let Some(primary) = red::primary(&packet.payload, is_red) else {
                    metrics.malformed_rtp.inc();
                    return;
                };
                track.rates.on_media(now, 0, None, primary.len());
                track.audio.push(packet.header.timestamp, primary.clone());
                metrics.frames_in.inc();
                // Lent to the loop below, returned after it (it lives with the publisher's track).
                let history = std::mem::take(&mut track.audio);
                Incoming::Audio { primary, history }
            }
        };
        // RED payloads by depth, built once per packet for every subscriber of that depth (and
        // Opus payload type).
        let mut red_built: [Option<(Pt, Arc<[u8]>)>; red::MAX_DISTANCE] = Default::default();
        // The empty payload of FEC packets (str0m fills it in when it sends them).
        let mut fec_payload: Option<Arc<[u8]>> = None;
        // Layers some subscriber needs a keyframe of, as a bitmask.
        let mut wanted_keyframes: u8 = 0;
        let key = TrackKey { publisher, mid };
        let in_seq = *packet.seq_no;
        // Subscribers whose `Rtc` panicked while writing: dropped after the loop.
        let mut crashed_now: Vec<ConnId> = Vec::new();
        let ext_vals = ExtensionValues {
            audio_level: packet.header.ext_vals.audio_level,
            voice_activity: packet.header.ext_vals.voice_activity,
            video_orientation: packet.header.ext_vals.video_orientation,
            video_content_type: packet.header.ext_vals.video_content_type,
            ..Default::default()
        };

        for sub_id in lesson.connections() {
            if sub_id == publisher {
                continue;
            }
            let Some(peer) = conns
                .get_mut(&sub_id)
                .and_then(|c| c.peer.as_mut())
                .filter(|p| p.connected)
            else {
                continue;
            };
            let Peer {
                rtc,
                subscribed,
                red_depth,
                fec_mode,
                fec_rate,
                ..
            } = peer;
            let Some(sub) = subscribed
                .iter_mut()
                .find(|s| s.key == key && matches!(s.state, OutState::Open(_)))
            else {
                continue;
            };
            let Some(out_mid) = sub.state.mid() else {
                continue;
            };
            if sub.pts.is_none() {
                sub.pts = out_pts(rtc, out_mid, sub.kind);
                if sub.kind == MediaKind::Video && sub.pts.is_some() {
                    // Repair only what can still be played: nothing older than the window.
                    if let Some(tx) = rtc.direct_api().stream_tx_by_mid(out_mid, None) {
                        tx.set_rtx_cache(
                            history::video_history_packets(
                                tuning.max_video_bps,
                                tuning.retransmit_window,
                            ),
                            tuning.retransmit_window,
                            Some(tuning.retransmit_share_cap),
                        );
                    }
                }
            }
            let Some(pts) = sub.pts else {
                continue;
            };
            // Set for a video packet that ends a frame towards a stream in ULPFEC mode.
            let mut fec_after = None;
            let (write, bytes) = match &incoming {
                Incoming::Video(vp8) => {
                    let Some(video) = sub.video.as_mut() else {
                        continue;
                    };
                    let time = packet.time.numer();
                    let forward = match video.frames.lookup(layer, time) {
                        // A late packet of a layer left behind would land in the new one's numbers.
                        Seen::Decided(forward) => forward && video.selector.is_current(layer),
                        Seen::Forgotten => false,
                        Seen::New => {
                            let backlog = rtc
                                .direct_api()
                                .stream_tx_by_mid(out_mid, None)
                                .and_then(|tx| tx.queue_info())
                                .and_then(|q| q.first_unsent())
                                .map(|oldest| now.saturating_duration_since(oldest));
                            video.selector.set_backlogged(
                                !backlog_brake.is_zero()
                                    && backlog.is_some_and(|b| b > backlog_brake),
                            );
                            let decision = video.selector.on_frame(FrameInfo {
                                layer,
                                temporal: vp8.temporal,
                                keyframe: vp8.keyframe,
                                layer_sync: vp8.layer_sync,
                            });
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
                            if decision.switched {
                                tracing::debug!(subscriber = %sub_id, layer, "switched layer");
                                // The decoder restarts from this keyframe: queued frames and
                                // resends of what came before it would only delay it (after a
                                // collapse, seconds of them at the capped pacing rate).
                                if let Some(tx) = rtc.direct_api().stream_tx_by_mid(out_mid, None) {
                                    tx.drop_queued();
                                }
                                sub.seq.rebase(in_seq);
                                video.timeline.rebase(time, now);
                                video.pictures.rebase(vp8.picture_id(), vp8.tl0_pic_idx());
                            }
                            video.frames.record(layer, time, decision.forward);
                            decision.forward
                        }
                    };
                    if !forward {
                        if video.selector.is_current(layer) {
                            // Left out of this subscriber's stream: close the gap behind it.
                            sub.seq.skip(in_seq);
                        }
                        continue;
                    }
                    let Some(out_seq) = sub.seq.forward(in_seq) else {
                        continue;
                    };
                    let out_time = video.timeline.rewrite(time, now) as u32;
                    let (picture, tl0) =
                        video.pictures.rewrite(vp8.picture_id(), vp8.tl0_pic_idx());
                    let ulpfec_mode = pts.red.is_some() && *fec_mode;
                    if ulpfec_mode != video.fec_on {
                        if let Some(tx) = rtc.direct_api().stream_tx_by_mid(out_mid, None) {
                            tx.set_ulpfec(ulpfec_mode);
                            video.fec_on = ulpfec_mode;
                        }
                    }
                    if video.fec_on {
                        // A stream without temporal layers is all base layer.
                        let base_layer = vp8.temporal.unwrap_or(0) == 0;
                        video.fec.on_media(out_seq, base_layer);
                        if packet.header.marker {
                            fec_after = pts.red.map(|red_pt| (red_pt, out_time, base_layer));
                        }
                    }
                    let mut write = RtpWrite::new(
                        pts.media,
                        out_seq.into(),
                        out_time,
                        packet.timestamp,
                        packet.payload.clone(),
                    )
                    .nackable(true);
                    if !video.pictures.is_identity() {
                        if let Some(patch) = vp8.patch(picture, tl0) {
                            write = write.vp8_patch(patch);
                        }
                    }
                    (write, packet.payload.len())
                }
                Incoming::Audio { primary, history } => {
                    if !sub.seq.started() {
                        sub.seq.rebase(in_seq);
                    }
                    let Some(out_seq) = sub.seq.forward(in_seq) else {
                        continue;
                    };
                    let red = pts.red.filter(|_| *red_depth > 0).and_then(|red_pt| {
                        let depth = (*red_depth).min(red::MAX_DISTANCE);
                        let built = &mut red_built[depth - 1];
                        if built.as_ref().is_none_or(|(pt, _)| *pt != pts.media) {
                            let payload =
                                history.red_payload(*pts.media, &red::DISTANCES[..depth])?;
                            *built = Some((pts.media, Arc::from(payload)));
                        }
                        built.as_ref().map(|(_, payload)| (red_pt, payload.clone()))
                    });
                    let (pt, payload) = red.unwrap_or((pts.media, primary.clone()));
                    let bytes = payload.len();
                    let write = RtpWrite::new(
                        pt,
                        out_seq.into(),
                        packet.header.timestamp,
                        packet.timestamp,
                        payload,
                    );
                    (write, bytes)
                }
            };
            let mut api = rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(out_mid, None) else {
                continue;
            };
            // A panic in str0m's writer is contained to this subscriber, as for its input and
            // output: one loop serves every lesson on the node.
            let written = super::contained(sub_id, || {
                tx.write_rtp(
                    write
                        .marker(packet.header.marker)
                        .ext_vals(ext_vals.clone()),
                );
                metrics.packets_out.inc();
                metrics.bytes_out.inc_by(bytes as u64);
                if let (Some((red_pt, out_time, base_layer)), Some(video)) =
                    (fec_after, sub.video.as_mut())
                {
                    // The frame is complete: the FEC packets of the base frame before it follow it,
                    // numbered right after it.
                    for fec in video.fec.on_frame_end(*fec_rate, base_layer) {
                        let Some(fec_seq) = sub.seq.insert_after(in_seq) else {
                            break;
                        };
                        let empty = fec_payload
                            .get_or_insert_with(|| Arc::from(&[][..]))
                            .clone();
                        tx.write_rtp(
                            RtpWrite::new(
                                red_pt,
                                fec_seq.into(),
                                out_time,
                                packet.timestamp,
                                empty,
                            )
                            .ulpfec(fec.base.into(), fec.mask),
                        );
                        metrics.fec_packets.inc();
                    }
                }
            });
            if written.is_none() {
                crashed_now.push(sub_id);
                continue;
            }
            mark_dirty_in(conns, dirty, sub_id);
        }

        for id in crashed_now {
            super::crash_in(conns, crashed, id);
        }
        if let Incoming::Audio { history, .. } = incoming {
            if let Some(track) = conns
                .get_mut(&publisher)
                .and_then(|c| c.peer.as_mut())
                .and_then(|p| p.published.iter_mut().find(|t| t.mid == mid))
            {
                track.audio = history;
            }
        }
        for layer in 0..MAX_LAYERS as u8 {
            if wanted_keyframes & (1 << layer) != 0 {
                request_keyframe(conns, publisher, mid, layer, metrics);
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

/// A publisher's packet, as the forwarding loop needs it.
enum Incoming {
    Video(Vp8Packet),
    /// The newest Opus payload (unwrapped if it came as RED) and the track's recent ones.
    Audio {
        primary: Arc<[u8]>,
        history: AudioHistory,
    },
}

/// The payload types a subscriber negotiated for an outgoing m-line of `kind`.
fn out_pts(rtc: &Rtc, mid: Mid, kind: MediaKind) -> Option<OutPts> {
    let remote = rtc.media(mid)?.remote_pts();
    let codec = match kind {
        MediaKind::Audio => Codec::Opus,
        MediaKind::Video => Codec::Vp8,
    };
    let params = rtc
        .codec_config()
        .iter()
        .find(|p| p.spec().codec == codec && remote.contains(&p.pt()))?;
    Some(OutPts {
        media: params.pt(),
        // str0m folds RED onto the codec's params only where the peer negotiated it; on video
        // only together with ULPFEC.
        red: params
            .red()
            .filter(|_| kind == MediaKind::Audio || params.ulpfec().is_some()),
    })
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
    if let Some(stream) = peer.rtc.direct_api().stream_rx_by_mid(mid, rid) {
        stream.request_keyframe(KeyframeRequestKind::Pli);
        metrics.keyframe_requests.inc();
        tracing::debug!(%publisher, %mid, layer, "keyframe requested");
    }
}
