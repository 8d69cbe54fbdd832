//! One client's WebRTC peer: its str0m `Rtc`, what it publishes, what it receives, and the SDP
//! negotiation between them.
//!
//! Negotiation rule: the client offers what it publishes; the server offers what the client
//! receives, one offer at a time. If the client's offer crosses a server offer, the server drops
//! its own (the client ignores it) and offers again once the client's is answered.

use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind as StrMediaKind, Mid, Rid};
use str0m::Rtc;

use crate::signal::message::{LayerChoice, MediaKind, SourceKind, TrackInfo, TrackQuality};
use crate::signal::ConnId;

use crate::bwe::{Dynacast, LayerRates, LayerSelector, LayerShaper};

use super::fec::{FecLink, FecPlanner};
use super::frames::FrameMemory;
use super::red::AudioHistory;
use super::rewrite::{PictureIds, SeqRewriter};
use super::timeline::RtpTimeline;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("SDP does not parse: {0}")]
    Sdp(String),
    #[error("SDP cannot be negotiated: {0}")]
    Negotiation(String),
    #[error("an answer came but no offer was pending")]
    NoPendingOffer,
}

/// A publisher's track, named by its publisher's connection and mid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackKey {
    pub publisher: ConnId,
    pub mid: Mid,
}

/// A track this peer publishes.
#[derive(Debug, Clone)]
pub struct Published {
    /// Engine-wide id, for keyframe throttling and allocation results.
    pub id: u64,
    pub mid: Mid,
    pub kind: MediaKind,
    pub source: SourceKind,
    /// Simulcast layers, lowest first; `[None]` for a single-layer track.
    pub layers: Vec<Option<Rid>>,
    /// Measured bitrate per layer.
    pub rates: LayerRates,
    /// Which layers the publisher encodes (`Dynacast::active`), and the remembered rates of
    /// those it does not.
    pub dynacast: Dynacast,
    /// The bitrate each camera layer is encoded at, from its subscribers' room (`bwe::shape`).
    pub shaper: LayerShaper,
    /// Recent audio payloads, for the redundancy each subscriber gets (audio only).
    pub audio: AudioHistory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    ToStop(Mid),
    NegotiatingStop(Mid),
}

impl OutState {
    pub fn mid(self) -> Option<Mid> {
        match self {
            OutState::ToOpen => None,
            OutState::Negotiating(m)
            | OutState::Open(m)
            | OutState::ToStop(m)
            | OutState::NegotiatingStop(m) => Some(m),
        }
    }
}

/// Layer selection and the rewriting that makes one received video continuous.
#[derive(Debug, Clone)]
pub struct VideoOut {
    pub selector: LayerSelector,
    pub timeline: RtpTimeline,
    pub pictures: PictureIds,
    pub frames: FrameMemory,
    /// Which packets the next FEC packets protect.
    pub fec: FecPlanner,
    /// Whether the stream is in ULPFEC mode (media in RED).
    pub fec_on: bool,
    /// The layer the last allocation gave and the video bitrate this subscriber has room for on
    /// it (`None`: unadapted, no more than the layer's own rate); `None` when paused. Read by
    /// layer shaping.
    pub room: Option<(u8, Option<u64>)>,
}

impl VideoOut {
    pub fn new(top_layer: u8, tuning: &crate::bwe::Tuning) -> Self {
        Self {
            selector: LayerSelector::new(top_layer, tuning),
            timeline: RtpTimeline::default(),
            pictures: PictureIds::default(),
            frames: FrameMemory::default(),
            fec: FecPlanner::default(),
            fec_on: false,
            room: None,
        }
    }
}

/// Payload types of an outgoing m-line, as the subscriber negotiated them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutPts {
    /// VP8 or Opus.
    pub media: str0m::media::Pt,
    /// RFC 2198 RED wrapping the media, if the subscriber accepted it. On video it is there only
    /// with ULPFEC, as its carrier.
    pub red: Option<str0m::media::Pt>,
}

/// A track this peer receives from another.
#[derive(Debug)]
pub struct Subscribed {
    pub key: TrackKey,
    /// The publisher's [`Published::id`].
    pub track_id: u64,
    pub kind: MediaKind,
    pub source: SourceKind,
    pub classroom_id: String,
    pub from_teacher: bool,
    pub state: OutState,
    /// Layer choice and timestamp rewriting; video only.
    pub video: Option<VideoOut>,
    /// Outgoing sequence numbers.
    pub seq: SeqRewriter,
    /// Resolved at the first packet after negotiation.
    pub pts: Option<OutPts>,
    /// The publisher's layer count, to map layer choices to indices.
    pub layer_count: usize,
}

pub struct Peer {
    pub rtc: Rtc,
    pending: Option<SdpPendingOffer>,
    pub published: Vec<Published>,
    pub subscribed: Vec<Subscribed>,
    pub next_timeout: Instant,
    pub max_layer: LayerChoice,
    /// Latest send-side estimate towards this peer, bits per second.
    pub estimate_bps: Option<u64>,
    /// Bounds the allocation by what got through while the link overflows (a collapse).
    pub overflow: crate::bwe::OverflowDetector,
    /// Restores the estimate after an outage (see `bwe::outage`).
    pub outage: crate::bwe::OutageRecovery,
    /// Tells when the link is back from an outage, for the video to restart on keyframes.
    pub outage_watch: crate::bwe::OutageWatch,
    /// Probes toward the allocation's next step (`bwe::climb`).
    pub climb: crate::bwe::ClimbProbe,
    /// The allocation's next step: the estimate at which one more layer would fit.
    pub next_step_bps: Option<u64>,
    /// At the last feedback reading: no overflow, no standing queue, little loss.
    pub calm: bool,
    /// The pacing bound handed to str0m while the link overflows (see `bwe::overflow::pacing_cap`).
    pub pacing_cap: Option<u64>,
    /// The standing queue each feedback reading shows (for the two detectors around it).
    pub queue: crate::bwe::QueueGauge,
    /// Tells loss at a steady round trip (radio loss) from congestion.
    pub radio_loss: crate::bwe::RadioLoss,
    /// Whether str0m's estimate ignores loss now (`bwe::radio_loss`).
    pub loss_tolerant: bool,
    /// Latest loss fraction (0..1) and RTT towards this peer, from str0m's peer stats.
    pub loss: Option<f32>,
    pub rtt: Option<std::time::Duration>,
    /// Redundant audio blocks per packet towards this peer (`media::red::depth`; 0: plain).
    pub red_depth: usize,
    /// Whether this peer's video goes out in RED, ready for FEC (its loss calls for FEC).
    pub fec_mode: bool,
    /// Video FEC packets per media packet towards this peer (`media::fec::affordable`).
    pub fec_rate: f32,
    /// Loss and round trip as FEC sees them (`media::fec::FecLink`).
    pub fec_link: FecLink,
    /// The minimum (sustained, padding included) and desired bitrates last given to str0m's
    /// estimator (it probes up to the desired one).
    pub bwe_rates: Option<(u64, u64)>,
    /// The last `quality` report sent to the client.
    pub last_quality: Vec<TrackQuality>,
    /// Since when ICE has been disconnected, if it is.
    pub ice_lost_since: Option<Instant>,
    /// ICE and DTLS have come up once. Media is forwarded only from then on: what is written
    /// before would wait in str0m's queue (seconds of it on a long-RTT link's handshakes) and
    /// then arrive in one burst, which sets the browser's clock estimate off for minutes.
    pub connected: bool,
    /// NACKs received so far per outgoing stream, to count new ones.
    pub egress_nacks: std::collections::HashMap<(Mid, Option<Rid>), u64>,
    /// Sources announced with the client's last offer, by mid.
    announced: Vec<(String, SourceKind)>,
}

impl Peer {
    pub fn new(rtc: Rtc, now: Instant) -> Peer {
        Peer {
            rtc,
            pending: None,
            published: Vec::new(),
            subscribed: Vec::new(),
            next_timeout: now,
            max_layer: LayerChoice::Auto,
            estimate_bps: None,
            overflow: Default::default(),
            outage: Default::default(),
            outage_watch: Default::default(),
            climb: Default::default(),
            next_step_bps: None,
            calm: false,
            pacing_cap: None,
            queue: Default::default(),
            radio_loss: Default::default(),
            loss_tolerant: false,
            loss: None,
            rtt: None,
            red_depth: 0,
            fec_mode: false,
            fec_rate: 0.0,
            fec_link: FecLink::default(),
            bwe_rates: None,
            last_quality: Vec::new(),
            ice_lost_since: None,
            connected: false,
            egress_nacks: Default::default(),
            announced: Vec::new(),
        }
    }

    /// Accepts the client's offer and returns the answer SDP.
    pub fn accept_offer(
        &mut self,
        sdp: &str,
        sources: Vec<(String, SourceKind)>,
    ) -> Result<String, PeerError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| PeerError::Sdp(e.to_string()))?;
        // The client ignores our offer when its own crosses it; forget ours and redo it later.
        if self.pending.take().is_some() {
            for sub in &mut self.subscribed {
                sub.state = match sub.state {
                    OutState::Negotiating(_) => OutState::ToOpen,
                    OutState::NegotiatingStop(m) => OutState::ToStop(m),
                    s => s,
                };
            }
        }
        self.announced = sources;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| PeerError::Negotiation(e.to_string()))?;
        Ok(answer.to_sdp_string())
    }

    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), PeerError> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| PeerError::Sdp(e.to_string()))?;
        let pending = self.pending.take().ok_or(PeerError::NoPendingOffer)?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| PeerError::Negotiation(e.to_string()))?;
        for sub in &mut self.subscribed {
            if let OutState::Negotiating(m) = sub.state {
                sub.state = OutState::Open(m);
            }
        }
        // A stopped m-line is now inactive and may be recycled by a later add_media.
        self.subscribed
            .retain(|s| !matches!(s.state, OutState::NegotiatingStop(_)));
        Ok(())
    }

    /// The source the client announced for a mid; audio defaults to the microphone and video
    /// to the camera.
    pub fn announced_source(&self, mid: Mid, kind: MediaKind) -> SourceKind {
        self.announced
            .iter()
            .find(|(m, _)| m.as_str() == &*mid)
            .map(|(_, s)| *s)
            .unwrap_or(match kind {
                MediaKind::Audio => SourceKind::Microphone,
                MediaKind::Video => SourceKind::Camera,
            })
    }

    /// Whether a negotiation is wanted and possible now.
    pub fn needs_offer(&self) -> bool {
        self.pending.is_none()
            && self.rtc.is_alive()
            && self
                .subscribed
                .iter()
                .any(|s| matches!(s.state, OutState::ToOpen | OutState::ToStop(_)))
    }

    /// Creates the server's offer for every pending track change, with the track list the
    /// client needs to place what it receives.
    pub fn create_offer(&mut self) -> Option<(String, Vec<TrackInfo>)> {
        if !self.needs_offer() {
            return None;
        }
        let mut change = self.rtc.sdp_api();
        for sub in &mut self.subscribed {
            match sub.state {
                OutState::ToOpen => {
                    let kind = match sub.kind {
                        MediaKind::Audio => StrMediaKind::Audio,
                        MediaKind::Video => StrMediaKind::Video,
                    };
                    // One stream id per publishing classroom keeps its audio and video in sync.
                    let mid = change.add_media(
                        kind,
                        Direction::SendOnly,
                        Some(sub.classroom_id.clone()),
                        None,
                        None,
                    );
                    sub.state = OutState::Negotiating(mid);
                }
                OutState::ToStop(mid) => {
                    change.stop_media(mid);
                    sub.state = OutState::NegotiatingStop(mid);
                }
                _ => {}
            }
        }
        let (offer, pending) = change.apply()?;
        self.pending = Some(pending);
        Some((offer.to_sdp_string(), self.track_infos()))
    }

    /// Every track the client receives (or is about to), by mid.
    pub fn track_infos(&self) -> Vec<TrackInfo> {
        self.subscribed
            .iter()
            .filter(|s| matches!(s.state, OutState::Negotiating(_) | OutState::Open(_)))
            .filter_map(|s| {
                Some(TrackInfo {
                    mid: s.state.mid()?.to_string(),
                    kind: s.kind,
                    source: s.source,
                    classroom_id: s.classroom_id.clone(),
                    from_teacher: s.from_teacher,
                })
            })
            .collect()
    }

    /// Marks a subscription for removal (or forgets it if it was never offered).
    pub fn unsubscribe(&mut self, key: TrackKey) {
        self.subscribed.retain_mut(|s| {
            if s.key != key {
                return true;
            }
            match s.state {
                OutState::ToOpen => false,
                OutState::Open(m) | OutState::Negotiating(m) => {
                    s.state = OutState::ToStop(m);
                    true
                }
                OutState::ToStop(_) | OutState::NegotiatingStop(_) => true,
            }
        });
    }

    pub fn subscription_mut(&mut self, key: TrackKey) -> Option<&mut Subscribed> {
        self.subscribed
            .iter_mut()
            .find(|s| s.key == key && matches!(s.state, OutState::Open(_)))
    }

    pub fn is_subscribed(&self, key: TrackKey) -> bool {
        self.subscribed.iter().any(|s| {
            s.key == key && !matches!(s.state, OutState::ToStop(_) | OutState::NegotiatingStop(_))
        })
    }
}
