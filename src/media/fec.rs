//! Forward error correction on a subscriber's video: how much of it a link needs, and which
//! packets each ULPFEC packet protects. Pure: loss and packets in, FEC plan out. str0m computes
//! the parity when it sends (`StreamTx::set_ulpfec`, `RtpWrite::ulpfec`, vendor/str0m/TONGBU.md).
//!
//! NACK repairs a loss one round trip later; on a village link with a 300 ms RTT that is a
//! frozen picture. FEC repairs it as soon as its FEC packet arrives, at a bitrate cost, so it is
//! sent only where loss is high enough and the round trip long enough to need it, and never
//! while the link overflows (extra packets there only add to the loss).

use str0m::rtp::ULPFEC_MAX_PROTECTED;

/// Below this loss NACK alone repairs in time often enough.
const MIN_LOSS: f32 = 0.01;
/// From this round trip a NACK repair comes so late that every unrepaired base-layer loss is
/// a freeze of about a round trip (400–450 ms each on the satellite profile's 600 ms), so FEC
/// is worth it at any loss that is seen at all.
const LONG_RTT_MS: u32 = 250;
/// Loss from which a long round trip gets FEC. On the satellite profile (0.5 % random loss) the
/// 1 % threshold turned FEC off and on every few seconds as the loss average wandered around it,
/// and every freeze of a run came from a base-layer packet lost while it was off: losses while
/// it was on were rebuilt.
const LONG_RTT_MIN_LOSS: f32 = 0.002;
/// Below this round trip a NACK repair lands within the 200 ms a viewer counts as a freeze, and
/// FEC repaired nothing in the benchmark (village 4G and collapse, 60 ms: Chromium rebuilt 0
/// packets from FEC that was 11–15 % of the video), so it is not sent.
const SHORT_RTT_MS: u32 = 100;
/// Most media packets a FEC group waits for, so a loss early in it is repaired soon.
const MAX_GROUP: usize = 24;

/// Whether a link losing `loss` (0–1) of its packets over a base round trip of `rtt_ms` needs
/// FEC at all.
fn needs_fec(loss: f32, rtt_ms: f32) -> bool {
    let min_loss = if rtt_ms >= LONG_RTT_MS as f32 {
        LONG_RTT_MIN_LOSS
    } else {
        MIN_LOSS
    };
    loss >= min_loss && rtt_ms >= SHORT_RTT_MS as f32
}

/// FEC packets per media packet for a link that needs FEC and loses `loss` of its packets.
///
/// The steps follow the loss: with `r` FEC packets per media packet, each FEC packet covers
/// every `1/r`-th packet of its group (interleaved), so a burst of up to `r × group` packets is
/// rebuilt when the FEC packets arrive.
fn rate_for_loss(loss: f32) -> f32 {
    if loss < 0.03 {
        0.1
    } else if loss < 0.08 {
        0.2
    } else if loss < 0.15 {
        0.35
    } else {
        0.5
    }
}

/// A subscriber link as FEC sees it, from str0m's reports twice a second: loss (over the last
/// second, from transport-wide feedback) and round trip (from RTCP).
///
/// On a bursty link one second shows 20 % loss and the next none, and FEC must already be on
/// when the next burst comes: the loss average rises fast (half the way per report) and falls
/// slowly (a tenth: halving takes about 3 s). Taking each peak whole made 1 % random loss read as
/// 5 % at times. The round trip that counts is the link's own, without queueing: a congested
/// 60 ms link shows 150 ms and loss, and FEC there only adds to the queue (Chromium rebuilt almost
/// nothing from it in the collapse benchmark). So it is the lowest sample, which rises only
/// slowly (2 % per report) to follow a changed route; CPU spikes on a busy machine (50–100 ms)
/// do not move it either. FEC, once on, stays on until loss or round trip fall clearly below the
/// thresholds (hysteresis), so that it does not flap.
#[derive(Debug, Clone, Copy, Default)]
pub struct FecLink {
    loss: f32,
    /// The loss average before each of the last two reports, oldest first: what it was about a
    /// second ago, before a report that may have carried the start of a congestion.
    earlier: [f32; 2],
    rtt_ms: Option<f32>,
    on: bool,
}

impl FecLink {
    const LOSS_RISE: f32 = 0.5;
    const LOSS_FALL: f32 = 0.1;
    /// How fast the base round trip follows samples above it.
    const BASE_RTT_RISE: f32 = 0.02;
    /// Off only below this share of the thresholds.
    const HYSTERESIS: f32 = 0.7;

    /// A new report: `loss` as a fraction (0–1), `rtt_ms` if known.
    pub fn on_report(&mut self, loss: Option<f32>, rtt_ms: Option<u32>) {
        self.earlier = [self.earlier[1], self.loss];
        if let Some(loss) = loss {
            let loss = loss.clamp(0.0, 1.0);
            let step = if loss >= self.loss {
                Self::LOSS_RISE
            } else {
                Self::LOSS_FALL
            };
            self.loss += (loss - self.loss) * step;
        }
        if let Some(rtt) = rtt_ms {
            let rtt = rtt as f32;
            self.rtt_ms = Some(match self.rtt_ms {
                Some(base) if rtt > base => base + (rtt - base) * Self::BASE_RTT_RISE,
                _ => rtt,
            });
        }
        self.decide();
    }

    /// The link was found overflowing: the loss of the last second or so was the queue's, which
    /// the overflow bound answers, not the link's own. Reports while it overflows are left out
    /// by the caller, but the one that carried the start of it came before it was found: after
    /// a collapse to 300 kbit/s that report (15 % loss) kept audio in RED for the next 27 s,
    /// doubling what audio cost on the collapsed link.
    pub fn forget_congestion(&mut self) {
        self.loss = self.loss.min(self.earlier[0]);
        self.earlier = self.earlier.map(|l| l.min(self.loss));
        self.decide();
    }

    fn decide(&mut self) {
        let rtt = self.rtt_ms.unwrap_or(0.0);
        // Once on, the thresholds are lower by the hysteresis share.
        let scale = if self.on { Self::HYSTERESIS } else { 1.0 };
        self.on = needs_fec(self.loss / scale, rtt / scale);
    }

    /// Whether this link's video goes out in RED, ready for FEC.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// FEC packets per media packet the link calls for now; 0 while it overflows (`congested`).
    pub fn wanted(&self, congested: bool) -> f32 {
        if !self.on || congested {
            return 0.0;
        }
        // Within the hysteresis band the lowest step still applies.
        rate_for_loss(self.loss)
    }

    pub fn loss(&self) -> f32 {
        self.loss
    }
}

/// One ULPFEC packet to send: it protects `base + i` for every bit `i` set in `mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FecPacket {
    pub base: u64,
    pub mask: u64,
}

/// Groups one subscriber stream's outgoing video packets and decides, at each frame's end,
/// how many FEC packets to send for them.
///
/// Only base-layer frames (temporal layer 0, or every frame of a stream without temporal
/// layers) are protected, with the FEC that all packets earn. Every later frame refers to a
/// base-layer frame, so its loss freezes the picture until repaired; a lost frame of a higher
/// temporal layer costs a frame or two (33–67 ms at 30 fps). Spread over all packets, FEC at a
/// third of the video rebuilt 20 lost packets per 100 FEC packets on the bursty profile, and
/// base-layer losses still froze the picture for a round trip each.
///
/// A group's FEC packets go out one frame late, behind the next frame's packets. Village radio
/// loss comes in bursts of a few packets in a row (a Gilbert-Elliott bad state lasts about three
/// on the bursty profile), and a FEC packet sent right behind the packets it protects fell into
/// the same burst: Chromium rebuilt 13–20 packets per 100 FEC packets. One frame later is 33 ms
/// at 30 fps, well inside the 200 ms a viewer counts as a freeze, and NACK takes a round trip.
///
/// Each base-layer packet is protected twice: by the FEC of its own group and again by the next
/// group's, which covers both groups interleaved. A FEC packet is lost as often as any other
/// (14 % on the bursty profile), and when each packet had one FEC packet, losing both froze the
/// picture: in a traced bursty run 33 of 151 lost base-layer packets were not rebuilt, 32 of them
/// because the FEC packet that covered them was lost too. The second chance comes a base-layer
/// frame later, still well before a retransmission at that round trip. At the same number of
/// FEC packets, a simulation of that link (temporal layers 0-2-1-2, 3/2/1 packets, audio
/// between) leaves 10 % of lost base-layer packets unrebuilt instead of 32 % at 0.35 FEC per
/// packet, and 3.5 % instead of 20 % at 0.5 (`bursty_loss_leaves_few_base_layer_losses_unrebuilt`).
#[derive(Debug, Clone, Default)]
pub struct FecPlanner {
    /// Outgoing sequence numbers of the base-layer packets sent since the last FEC packet, in
    /// sending order.
    group: Vec<u64>,
    /// The group protected by the last FEC packets, protected again with the next group.
    previous: Vec<u64>,
    /// What the FEC packets being planned cover: `previous` then `group` (kept to reuse it).
    protect: Vec<u64>,
    /// FEC packets earned by the packets sent so far, not yet sent.
    credit: f32,
    /// Packets sent since the last frame end, not yet in `credit`.
    uncounted: usize,
    /// The FEC packets planned at the last frame end, to send at this one.
    held: Vec<FecPacket>,
    /// The FEC packets to send now (both kept to reuse their allocations).
    ready: Vec<FecPacket>,
}

impl FecPlanner {
    /// A media packet went out as `out_seq`; `base_layer`: of a base-layer frame.
    pub fn on_media(&mut self, out_seq: u64, base_layer: bool) {
        // A mask spans 48 sequence numbers: older packets of the group fall out uncovered.
        self.group
            .retain(|s| out_seq.abs_diff(*s) < ULPFEC_MAX_PROTECTED as u64);
        if base_layer {
            self.group.push(out_seq);
        }
        self.uncounted += 1;
    }

    /// A frame ended: returns the FEC packets to send now (planned at the frame before), and,
    /// after a base-layer frame, plans those of the base-layer packets so far: `rate` FEC packets
    /// per media packet of any frame, each covering an interleaved share of the group (packet `k`
    /// of the group goes to FEC packet `k mod count`), so that consecutive losses land in
    /// different FEC packets.
    pub fn on_frame_end(&mut self, rate: f32, base_layer: bool) -> &[FecPacket] {
        std::mem::swap(&mut self.ready, &mut self.held);
        self.held.clear();
        self.plan(rate, base_layer);
        &self.ready
    }

    fn plan(&mut self, rate: f32, base_layer: bool) {
        if rate <= 0.0 {
            self.group.clear();
            self.previous.clear();
            self.credit = 0.0;
            self.uncounted = 0;
            return;
        }
        self.credit += rate * self.uncounted as f32;
        self.uncounted = 0;
        if !base_layer || self.group.is_empty() {
            self.credit = self.credit.min(MAX_GROUP as f32); // earned for the next base frame
            return;
        }
        // The epsilon keeps 0.2 + 0.4 + 0.4 from falling just short of one.
        let mut count = (self.credit + 1e-4).floor() as usize;
        if count == 0 && self.group.len() >= MAX_GROUP {
            count = 1;
        }
        if count == 0 {
            return; // the group grows until it has earned a FEC packet
        }
        // The previous group again, as far as a mask reaches back from the newest packet.
        let newest = *self.group.last().expect("group is not empty");
        self.protect.clear();
        self.protect.extend(
            self.previous
                .iter()
                .filter(|s| newest.abs_diff(**s) < ULPFEC_MAX_PROTECTED as u64),
        );
        self.protect.extend_from_slice(&self.group);
        // At most one FEC packet per protected packet (each then a copy of one): what is earned
        // beyond that is not carried over.
        let count = count.min(self.protect.len());
        self.credit = (self.credit - count as f32).clamp(0.0, 1.0);
        let base = *self.protect.iter().min().expect("the group is in it");
        for j in 0..count {
            let mask = self
                .protect
                .iter()
                .skip(j)
                .step_by(count)
                .fold(0u64, |m, s| m | 1 << (s - base));
            self.held.push(FecPacket { base, mask });
        }
        std::mem::swap(&mut self.previous, &mut self.group);
        self.group.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_follows_loss_and_round_trip() {
        assert!(!needs_fec(0.005, 150.0), "NACK alone at low loss");
        assert!(
            needs_fec(0.005, 600.0),
            "a long round trip protects rare losses"
        );
        assert!(!needs_fec(0.001, 600.0));
        assert!(
            !needs_fec(0.02, 60.0),
            "NACK repairs in time on a short round trip"
        );
        assert!(!needs_fec(0.2, 60.0));
        assert!(needs_fec(0.02, 300.0));
        assert_eq!(rate_for_loss(0.02), 0.1);
        assert_eq!(rate_for_loss(0.06), 0.2);
        assert_eq!(rate_for_loss(0.10), 0.35);
        assert_eq!(rate_for_loss(0.20), 0.5);
        let mut link = FecLink::default();
        link.on_report(Some(0.2), Some(300));
        link.on_report(Some(0.2), Some(300));
        assert_eq!(link.wanted(false), 0.5);
        assert_eq!(link.wanted(true), 0.0, "never while the link overflows");
    }

    #[test]
    fn fec_link_follows_bursts_and_does_not_flap() {
        let mut link = FecLink::default();
        link.on_report(Some(0.2), Some(300));
        assert!(link.is_on());
        assert_eq!(link.wanted(false), 0.35, "loss average 10 %");
        assert_eq!(link.wanted(true), 0.0, "none while the link overflows");
        link.on_report(Some(0.2), Some(300));
        assert_eq!(link.wanted(false), 0.5);
        for _ in 0..6 {
            link.on_report(Some(0.0), Some(300));
        }
        assert!(
            link.wanted(false) >= 0.2,
            "still protecting 3 s after a burst"
        );

        // A congested 60 ms link: loss, and queueing lifts the round trip. Not for FEC.
        let mut collapse = FecLink::default();
        collapse.on_report(Some(0.0), Some(60));
        for _ in 0..20 {
            collapse.on_report(Some(0.15), Some(150));
            assert!(!collapse.is_on(), "base RTT {:?}", collapse.rtt_ms);
        }

        // 1 % random loss on a 60 ms link whose RTT samples spike: never on.
        let mut village = FecLink::default();
        for (i, loss) in [0.0, 0.04, 0.0, 0.0, 0.02, 0.0, 0.0, 0.01, 0.0, 0.0]
            .repeat(3)
            .into_iter()
            .enumerate()
        {
            let rtt = if i % 7 == 3 { 160 } else { 65 };
            village.on_report(Some(loss), Some(rtt));
            assert!(!village.is_on(), "report {i}: loss {}", village.loss());
        }

        // Once on, a dip just under the thresholds keeps it on; a clear fall turns it off.
        let mut sat = FecLink::default();
        sat.on_report(Some(0.02), Some(600));
        sat.on_report(Some(0.02), Some(600));
        assert!(sat.is_on());
        sat.on_report(Some(0.009), Some(600));
        assert!(sat.is_on());
        for _ in 0..40 {
            sat.on_report(Some(0.0), Some(600));
        }
        assert!(!sat.is_on(), "20 s without loss");

        // 0.5 % random loss over 600 ms: whole seconds without a loss, then two at once. Once on,
        // FEC stays on (it had flapped around a 1 % threshold, each gap an unprotected window).
        let mut sat = FecLink::default();
        for (i, loss) in [0.008, 0.0, 0.0, 0.004, 0.0, 0.012, 0.0, 0.0, 0.0, 0.004]
            .repeat(4)
            .into_iter()
            .enumerate()
        {
            sat.on_report(Some(loss), Some(600));
            assert!(sat.is_on(), "report {i}: loss {}", sat.loss());
            assert!(sat.wanted(false) > 0.0);
        }
        // The same loss over 150 ms: NACK repairs in time, no FEC.
        let mut regional = FecLink::default();
        for loss in [0.008, 0.0, 0.0, 0.004, 0.0, 0.012, 0.0, 0.0].repeat(4) {
            regional.on_report(Some(loss), Some(150));
            assert!(!regional.is_on(), "loss {}", regional.loss());
        }
    }

    #[test]
    fn the_loss_that_started_a_congestion_is_forgotten() {
        let mut link = FecLink::default();
        for _ in 0..4 {
            link.on_report(Some(0.0), Some(60));
        }
        // The link collapses: one report carries the queue's loss before the overflow is found.
        link.on_report(Some(0.15), Some(120));
        assert!(link.loss() > 0.05);
        link.forget_congestion();
        assert_eq!(link.loss(), 0.0);
        // Radio loss before it is kept: the average as it was a report or two before.
        let mut radio = FecLink::default();
        for _ in 0..6 {
            radio.on_report(Some(0.03), Some(300));
        }
        radio.on_report(Some(0.2), Some(400));
        radio.forget_congestion();
        assert!((radio.loss() - 0.03).abs() < 0.002, "{}", radio.loss());
        assert!(radio.is_on());
    }

    #[test]
    fn a_frame_gets_interleaved_fec() {
        let mut plan = FecPlanner::default();
        for seq in 100..108 {
            plan.on_media(seq, true);
        }
        assert!(plan.on_frame_end(0.5, true).is_empty(), "held for a frame");
        plan.on_media(108, true);
        let out = plan.on_frame_end(0.5, true).to_vec();
        assert_eq!(out.len(), 4, "sent behind the next frame");
        assert_eq!(
            out[0],
            FecPacket {
                base: 100,
                mask: 0b0001_0001
            }
        );
        assert_eq!(
            out[3],
            FecPacket {
                base: 100,
                mask: 0b1000_1000
            }
        );
        // Four consecutive losses, one in each FEC packet: all recoverable.
        let covered: u64 = out.iter().fold(0, |m, f| {
            assert_eq!((f.mask & 0b1111).count_ones(), 1);
            m | f.mask
        });
        assert_eq!(covered, 0xff, "every packet protected");
    }

    #[test]
    fn small_frames_share_a_fec_packet_at_a_low_rate() {
        let mut plan = FecPlanner::default();
        let mut out = Vec::new();
        // Two-packet frames at 0.2: one FEC packet every two and a half frames, each sent one
        // frame after it was earned.
        let mut sent_at = Vec::new();
        for frame in 0..11u64 {
            plan.on_media(frame * 2, true);
            plan.on_media(frame * 2 + 1, true);
            let before = out.len();
            out.extend_from_slice(plan.on_frame_end(0.2, true));
            if out.len() > before {
                sent_at.push(frame);
            }
        }
        assert_eq!(out.len(), 4, "20 packets at 0.2");
        assert_eq!(sent_at, vec![3, 5, 8, 10]);
        assert_eq!(
            out[0],
            FecPacket {
                base: 0,
                mask: 0b11_1111
            }
        );
    }

    #[test]
    fn no_rate_no_fec_and_the_group_is_forgotten() {
        let mut plan = FecPlanner::default();
        plan.on_media(1, true);
        assert!(plan.on_frame_end(0.0, true).is_empty());
        assert!(
            plan.on_frame_end(0.0, true).is_empty(),
            "nothing was planned"
        );
        plan.on_media(2, true);
        assert!(plan.on_frame_end(1.0, true).is_empty());
        // What was planned goes out even when the rate falls to zero meanwhile.
        assert_eq!(
            plan.on_frame_end(0.0, true),
            [FecPacket { base: 2, mask: 1 }]
        );
    }

    #[test]
    fn the_mask_never_reaches_past_48() {
        let mut plan = FecPlanner::default();
        plan.on_media(0, true);
        plan.on_media(60, true);
        plan.on_media(61, true);
        plan.on_frame_end(0.5, true);
        assert_eq!(
            plan.on_frame_end(0.5, true),
            vec![FecPacket {
                base: 60,
                mask: 0b11
            }]
        );
        // The previous group is protected again only as far as a mask reaches.
        plan.on_media(120, true);
        plan.on_media(121, true);
        plan.on_frame_end(1.0, true);
        assert_eq!(
            plan.on_frame_end(1.0, true),
            vec![
                FecPacket { base: 120, mask: 1 },
                FecPacket { base: 120, mask: 2 }
            ]
        );
    }

    /// The bursty profile's Gilbert-Elliott link, per packet: 5 % good → bad, 30 % bad → good,
    /// 90 % loss when bad, 1 % when good (≈14 % on average). Seeded xorshift.
    struct BurstyLink {
        state: u64,
        bad: bool,
    }

    impl BurstyLink {
        fn chance(&mut self, p: f64) -> bool {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            ((self.state >> 11) as f64 / (1u64 << 53) as f64) < p
        }

        fn loses(&mut self) -> bool {
            self.bad = if self.bad {
                !self.chance(0.3)
            } else {
                self.chance(0.05)
            };
            self.chance(if self.bad { 0.9 } else { 0.01 })
        }
    }

    /// Share of the lost base-layer packets that FEC at `rate` does not rebuild on the bursty
    /// link: 20 fps in temporal layers 0-2-1-2 of 3/2/1 packets, 50 audio packets a second
    /// between them, FEC packets through the same link; rebuilt as a receiver does, over and
    /// over while some FEC packet misses exactly one of its packets.
    fn unrebuilt_share(rate: f32, seed: u64) -> f64 {
        let mut link = BurstyLink {
            state: seed,
            bad: false,
        };
        let mut plan = FecPlanner::default();
        let (mut seq, mut lost, mut base_layer) = (0u64, Vec::new(), Vec::new());
        let mut arrived_fec = Vec::new();
        for frame in 0..4000 {
            let layer = [0, 2, 1, 2][frame % 4];
            for _ in 0..(2 + frame % 2) {
                link.loses(); // audio
            }
            for _ in 0..[3, 2, 1][layer] {
                if link.loses() {
                    lost.push(seq);
                }
                if layer == 0 {
                    base_layer.push(seq);
                }
                plan.on_media(seq, layer == 0);
                seq += 1;
            }
            for fec in plan.on_frame_end(rate, layer == 0) {
                if !link.loses() {
                    arrived_fec.push(*fec);
                }
            }
        }
        let mut missing: std::collections::HashSet<u64> = lost.iter().copied().collect();
        let covers = |f: FecPacket| {
            (0..64)
                .filter(move |i| f.mask >> i & 1 == 1)
                .map(move |i| f.base + i)
        };
        while let Some(rebuilt) = arrived_fec.iter().find_map(|f| {
            let mut gone = covers(*f).filter(|s| missing.contains(s));
            let first = gone.next();
            first.filter(|_| gone.next().is_none())
        }) {
            missing.remove(&rebuilt);
        }
        let lost_base = base_layer.iter().filter(|s| lost.contains(s)).count();
        let unrebuilt = base_layer.iter().filter(|s| missing.contains(s)).count();
        unrebuilt as f64 / lost_base as f64
    }

    #[test]
    fn bursty_loss_leaves_few_base_layer_losses_unrebuilt() {
        // With one FEC packet per base-layer packet's group (no second chance) the same link
        // leaves about 32 % (0.35) and 20 % (0.5) unrebuilt.
        for (rate, most) in [(0.35, 0.15), (0.5, 0.07)] {
            let share = unrebuilt_share(rate, 0x9e37_79b9_7f4a_7c15);
            assert!(
                share < most,
                "FEC at {rate}: {:.1} % unrebuilt",
                share * 100.0
            );
        }
    }

    #[test]
    fn the_fec_all_packets_earn_protects_the_base_layer() {
        let mut plan = FecPlanner::default();
        let mut out = Vec::new();
        // Three temporal layers at 0.5: a three-packet base frame, then three one-packet frames
        // of the upper layers (TL2, TL1, TL2), twice.
        let mut seq = 0u64;
        for _ in 0..2 {
            for _ in 0..3 {
                plan.on_media(seq, true);
                seq += 1;
            }
            out.extend_from_slice(plan.on_frame_end(0.5, true));
            for _ in 0..3 {
                plan.on_media(seq, false);
                seq += 1;
                out.extend_from_slice(plan.on_frame_end(0.5, false));
            }
        }
        // The first base frame has earned one and a half FEC packets by its end: one over all
        // three. From then on the six packets of each cycle earn three, all for the base frames:
        // each covers one packet of this base frame and one of the base frame before (0-2 and
        // 6-8 interleaved). Each goes out behind the next frame.
        assert_eq!(
            out,
            [
                FecPacket {
                    base: 0,
                    mask: 0b111
                },
                FecPacket {
                    base: 0,
                    mask: 0b00_0100_0001
                },
                FecPacket {
                    base: 0,
                    mask: 0b00_1000_0010
                },
                FecPacket {
                    base: 0,
                    mask: 0b01_0000_0100
                },
            ]
        );
    }
}
