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
/// A round trip this short repairs by NACK within a frame or two, unless loss is heavy.
const SHORT_RTT_MS: u32 = 100;
/// Loss above which FEC is sent even on a short round trip.
const HEAVY_LOSS: f32 = 0.05;
/// Most media packets a FEC group waits for, so a loss early in it is repaired soon.
const MAX_GROUP: usize = 24;

/// FEC packets per media packet for a subscriber link losing `loss` (0–1) of its packets with
/// a round trip of `rtt_ms`; 0 while the link overflows (`congested`).
///
/// The steps follow the loss: with `r` FEC packets per media packet, each FEC packet covers
/// every `1/r`-th packet of its group (interleaved), so a burst of up to `r × group` packets is
/// rebuilt when the FEC packets arrive.
pub fn rate(loss: f32, congested: bool, rtt_ms: u32) -> f32 {
    if congested || loss < MIN_LOSS || (rtt_ms < SHORT_RTT_MS && loss < HEAVY_LOSS) {
        return 0.0;
    }
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

/// Loss as FEC should see it: str0m reports the loss of the last second (from transport-wide
/// feedback) twice a second, and on a bursty link one second shows 20 % and the next none. FEC
/// must already be on when the next burst comes, so a rise is taken at once and a fall only
/// slowly (a tenth per report: halving takes about 3 s).
#[derive(Debug, Clone, Copy, Default)]
pub struct LossMemory {
    value: f32,
}

impl LossMemory {
    const DECAY: f32 = 0.1;

    /// A new loss report (fraction 0–1).
    pub fn on_report(&mut self, loss: f32) {
        let loss = loss.clamp(0.0, 1.0);
        self.value = if loss >= self.value {
            loss
        } else {
            self.value + (loss - self.value) * Self::DECAY
        };
    }

    pub fn value(&self) -> f32 {
        self.value
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
#[derive(Debug, Clone, Default)]
pub struct FecPlanner {
    /// Outgoing sequence numbers sent since the last FEC packet, in sending order.
    group: Vec<u64>,
    /// FEC packets earned by the packets sent so far, not yet sent.
    credit: f32,
    /// Packets sent since the last frame end, not yet in `credit`.
    uncounted: usize,
}

impl FecPlanner {
    /// A media packet went out as `out_seq`.
    pub fn on_media(&mut self, out_seq: u64) {
        // A mask spans 48 sequence numbers: older packets of the group fall out uncovered.
        self.group
            .retain(|s| out_seq.abs_diff(*s) < ULPFEC_MAX_PROTECTED as u64);
        self.group.push(out_seq);
        self.uncounted += 1;
    }

    /// A frame ended: the FEC packets to send now at `rate` FEC packets per media packet, each
    /// covering an interleaved share of the group (packet `k` of the group goes to FEC packet
    /// `k mod count`), so that consecutive losses land in different FEC packets.
    pub fn on_frame_end(&mut self, rate: f32, out: &mut Vec<FecPacket>) {
        if rate <= 0.0 || self.group.is_empty() {
            self.group.clear();
            self.credit = 0.0;
            self.uncounted = 0;
            return;
        }
        self.credit += rate * self.uncounted as f32;
        self.uncounted = 0;
        // The epsilon keeps 0.2 + 0.4 + 0.4 from falling just short of one.
        let mut count = (self.credit + 1e-4).floor() as usize;
        if count == 0 && self.group.len() >= MAX_GROUP {
            count = 1;
        }
        if count == 0 {
            return; // the group grows until it has earned a FEC packet
        }
        let count = count.min(self.group.len());
        self.credit = (self.credit - count as f32).max(0.0);
        let base = *self.group.iter().min().expect("group is not empty");
        for j in 0..count {
            let mask = self
                .group
                .iter()
                .skip(j)
                .step_by(count)
                .fold(0u64, |m, s| m | 1 << (s - base));
            out.push(FecPacket { base, mask });
        }
        self.group.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_follows_loss_and_round_trip() {
        assert_eq!(rate(0.005, false, 600), 0.0, "NACK alone at low loss");
        assert_eq!(rate(0.02, false, 60), 0.0, "short round trip, light loss");
        assert_eq!(rate(0.02, false, 300), 0.1);
        assert_eq!(
            rate(0.06, false, 60),
            0.2,
            "heavy loss even on a short round trip"
        );
        assert_eq!(rate(0.10, false, 300), 0.35);
        assert_eq!(rate(0.20, false, 300), 0.5);
        assert_eq!(rate(0.20, true, 300), 0.0, "never while the link overflows");
    }

    #[test]
    fn loss_memory_rises_at_once_and_falls_slowly() {
        let mut m = LossMemory::default();
        m.on_report(0.2);
        assert_eq!(m.value(), 0.2);
        m.on_report(0.0);
        assert!((m.value() - 0.18).abs() < 1e-6);
        for _ in 0..5 {
            m.on_report(0.0);
        }
        assert!(
            m.value() > 0.1,
            "still protecting 3 s after a burst: {}",
            m.value()
        );
        m.on_report(0.3);
        assert_eq!(m.value(), 0.3);
    }

    #[test]
    fn a_frame_gets_interleaved_fec() {
        let mut plan = FecPlanner::default();
        for seq in 100..108 {
            plan.on_media(seq);
        }
        let mut out = Vec::new();
        plan.on_frame_end(0.5, &mut out);
        assert_eq!(out.len(), 4);
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
        // Two-packet frames at 0.2: one FEC packet every two and a half frames.
        let mut sent_at = Vec::new();
        for frame in 0..10u64 {
            plan.on_media(frame * 2);
            plan.on_media(frame * 2 + 1);
            let before = out.len();
            plan.on_frame_end(0.2, &mut out);
            if out.len() > before {
                sent_at.push(frame);
            }
        }
        assert_eq!(out.len(), 4, "20 packets at 0.2");
        assert_eq!(sent_at, vec![2, 4, 7, 9]);
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
        plan.on_media(1);
        let mut out = Vec::new();
        plan.on_frame_end(0.0, &mut out);
        assert!(out.is_empty());
        plan.on_media(2);
        plan.on_frame_end(1.0, &mut out);
        assert_eq!(out, vec![FecPacket { base: 2, mask: 1 }]);
    }

    #[test]
    fn the_mask_never_reaches_past_48() {
        let mut plan = FecPlanner::default();
        plan.on_media(0);
        plan.on_media(60);
        plan.on_media(61);
        let mut out = Vec::new();
        plan.on_frame_end(0.5, &mut out);
        assert_eq!(
            out,
            vec![FecPacket {
                base: 60,
                mask: 0b11
            }]
        );
    }
}
