//! What makes forwarded packets look like one continuous stream to a subscriber, whichever
//! simulcast layer they came from and whichever frames were left out: sequence numbers without
//! holes the subscriber would NACK, and VP8 picture ids and TL0PICIDX that continue across a
//! layer switch. Pure: packets' numbers in, numbers out.

use std::collections::VecDeque;

/// Offsets kept for sequence ranges: packets older than this many skips are too late to matter.
const MAX_RANGES: usize = 64;
/// A jump this large is a restarted source (a new SSRC on the same layer), not loss: start over.
const RESTART_JUMP: u64 = 3000;
/// Picture ids are 15 bits.
const PICTURE_ID_MODULO: u32 = 0x8000;

/// Outgoing sequence numbers for one subscriber's stream.
///
/// Each dropped packet of the current source (a frame of a temporal layer the subscriber does not
/// get) shifts later packets down by one, so the subscriber sees no hole; a packet lost upstream
/// keeps its hole, because its retransmission may still come and is then forwarded into it.
#[derive(Debug, Clone)]
pub struct SeqRewriter {
    /// `(first incoming seq, offset)`, oldest first: outgoing = incoming + offset.
    ranges: VecDeque<(u64, i64)>,
    highest_in: u64,
    next_out: u64,
}

impl SeqRewriter {
    /// Starts at `first_out`; it must stay below 2^16 so the stream starts without SRTP rollover.
    pub fn new(first_out: u64) -> Self {
        Self {
            ranges: VecDeque::new(),
            highest_in: 0,
            next_out: first_out,
        }
    }

    /// The packet `in_seq` begins a new source (a layer switch, or the first packet): it goes out
    /// right after the last packet sent.
    pub fn rebase(&mut self, in_seq: u64) {
        self.ranges.clear();
        self.ranges
            .push_back((in_seq, self.next_out as i64 - in_seq as i64));
        self.highest_in = in_seq;
    }

    /// Whether a source has been set since creation.
    pub fn started(&self) -> bool {
        !self.ranges.is_empty()
    }

    /// The outgoing number of a forwarded packet; `None` if it is older than the current source
    /// (a late packet of the layer before a switch) or than the ranges kept.
    pub fn forward(&mut self, in_seq: u64) -> Option<u64> {
        let start = self.ranges.front()?.0;
        if in_seq > self.highest_in + RESTART_JUMP || in_seq + RESTART_JUMP < start {
            self.rebase(in_seq);
        }
        let offset = self.offset_at(in_seq)?;
        let out = u64::try_from(in_seq as i64 + offset).ok()?;
        self.highest_in = self.highest_in.max(in_seq);
        self.next_out = self.next_out.max(out + 1);
        Some(out)
    }

    /// Reserves the outgoing number right after the newest forwarded packet `in_seq` for a packet
    /// of the server's own (a FEC packet); later packets shift up by one. `None` if `in_seq` is
    /// not the newest packet seen (a late one: the slot after it is taken).
    pub fn insert_after(&mut self, in_seq: u64) -> Option<u64> {
        if in_seq != self.highest_in {
            return None;
        }
        let offset = self.offset_at(in_seq)?;
        let newest_out = u64::try_from(in_seq as i64 + offset).ok()?;
        // After an earlier insertion behind the same packet, the next number is further on.
        let reserved = self.next_out.max(newest_out + 1);
        if self
            .ranges
            .back()
            .is_some_and(|(start, _)| *start == in_seq + 1)
        {
            self.ranges.pop_back();
        }
        // The packet after `in_seq` goes out right after the reserved number.
        self.ranges
            .push_back((in_seq + 1, reserved as i64 - in_seq as i64));
        if self.ranges.len() > MAX_RANGES {
            self.ranges.pop_front();
        }
        self.next_out = reserved + 1;
        Some(reserved)
    }

    /// The offset of the range `in_seq` falls in.
    fn offset_at(&self, in_seq: u64) -> Option<i64> {
        let (_, offset) = self
            .ranges
            .iter()
            .rev()
            .find(|(start, _)| *start <= in_seq)?;
        Some(*offset)
    }

    /// A packet of the current source that this subscriber does not get.
    pub fn skip(&mut self, in_seq: u64) {
        let Some(&(_, offset)) = self.ranges.back() else {
            return;
        };
        if in_seq <= self.highest_in {
            // Late: its slot was already left as a hole (or used); nothing to shift.
            return;
        }
        self.highest_in = in_seq;
        self.ranges.push_back((in_seq + 1, offset - 1));
        if self.ranges.len() > MAX_RANGES {
            self.ranges.pop_front();
        }
    }
}

/// VP8 picture id and TL0PICIDX continuity across layer switches for one subscriber.
#[derive(Debug, Clone, Default)]
pub struct PictureIds {
    picture_offset: u32,
    tl0_offset: u8,
    last_picture: Option<u16>,
    last_tl0: Option<u8>,
}

impl PictureIds {
    /// A new source starts with a keyframe carrying these numbers: continue after the last ones.
    pub fn rebase(&mut self, picture_id: Option<u16>, tl0: Option<u8>) {
        if let (Some(last), Some(id)) = (self.last_picture, picture_id) {
            self.picture_offset =
                (u32::from(last) + 1 + PICTURE_ID_MODULO - u32::from(id)) % PICTURE_ID_MODULO;
        }
        if let (Some(last), Some(t)) = (self.last_tl0, tl0) {
            self.tl0_offset = last.wrapping_add(1).wrapping_sub(t);
        }
    }

    /// The subscriber's numbers for a packet carrying these.
    pub fn rewrite(
        &mut self,
        picture_id: Option<u16>,
        tl0: Option<u8>,
    ) -> (Option<u16>, Option<u8>) {
        let picture =
            picture_id.map(|id| ((u32::from(id) + self.picture_offset) % PICTURE_ID_MODULO) as u16);
        let tl0 = tl0.map(|t| t.wrapping_add(self.tl0_offset));
        if let Some(p) = picture {
            if self.last_picture.is_none_or(|last| picture_newer(p, last)) {
                self.last_picture = Some(p);
            }
        }
        if let Some(t) = tl0 {
            if self
                .last_tl0
                .is_none_or(|last| (t.wrapping_sub(last) as i8) > 0)
            {
                self.last_tl0 = Some(t);
            }
        }
        (picture, tl0)
    }

    /// Whether rewriting changes anything (no switch yet: packets go out untouched).
    pub fn is_identity(&self) -> bool {
        self.picture_offset == 0 && self.tl0_offset == 0
    }
}

fn picture_newer(a: u16, b: u16) -> bool {
    let diff = (u32::from(a) + PICTURE_ID_MODULO - u32::from(b)) % PICTURE_ID_MODULO;
    diff != 0 && diff < PICTURE_ID_MODULO / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Whatever mix of forwarded, skipped, lost-then-late packets and inserted FEC packets, no
    /// outgoing number is ever used twice, and a packet forwarded twice (a duplicate) keeps its
    /// number.
    #[test]
    fn outgoing_numbers_are_never_reused() {
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut seq = SeqRewriter::new(rng.random_range(0..1000));
            seq.rebase(100);
            let mut used = std::collections::HashMap::new(); // out -> what took it
            let mut late = Vec::new();
            for in_seq in 100u64..600 {
                match rng.random_range(0..10) {
                    0 => late.push(in_seq), // lost upstream, may come later
                    1 => seq.skip(in_seq),
                    _ => {
                        if let Some(out) = seq.forward(in_seq) {
                            assert_eq!(used.insert(out, in_seq), None, "seed {seed}: {out} reused");
                            if rng.random_bool(0.2) {
                                for _ in 0..rng.random_range(1..4) {
                                    let fec = seq.insert_after(in_seq).expect("newest");
                                    assert_eq!(
                                        used.insert(fec, u64::MAX),
                                        None,
                                        "seed {seed}: FEC {fec} reused"
                                    );
                                }
                            }
                        }
                    }
                }
                if !late.is_empty() && rng.random_bool(0.3) {
                    let l = late.swap_remove(rng.random_range(0..late.len()));
                    if let Some(out) = seq.forward(l) {
                        assert_eq!(
                            used.insert(out, l),
                            None,
                            "seed {seed}: late {l} took {out}"
                        );
                        assert_eq!(seq.forward(l), Some(out), "a duplicate keeps its number");
                    }
                }
            }
        }
    }

    #[test]
    fn continuous_across_a_switch() {
        let mut seq = SeqRewriter::new(100);
        seq.rebase(5000);
        assert_eq!(seq.forward(5000), Some(100));
        assert_eq!(seq.forward(5001), Some(101));
        // New layer, its own numbering.
        seq.rebase(70);
        assert_eq!(seq.forward(70), Some(102));
        assert_eq!(seq.forward(71), Some(103));
        assert_eq!(seq.forward(69), None, "older than the current source");
    }

    #[test]
    fn skipped_packets_leave_no_hole_but_losses_do() {
        let mut seq = SeqRewriter::new(0);
        seq.rebase(10);
        assert_eq!(seq.forward(10), Some(0));
        seq.skip(11);
        seq.skip(12);
        assert_eq!(seq.forward(13), Some(1));
        // 14 lost upstream; 15 keeps a hole at 2 for it.
        assert_eq!(seq.forward(15), Some(3));
        assert_eq!(
            seq.forward(14),
            Some(2),
            "a late retransmission fills its hole"
        );
        // A late packet of a skipped frame changes nothing.
        seq.skip(12);
        assert_eq!(seq.forward(16), Some(4));
    }

    #[test]
    fn inserted_packets_take_a_number_and_late_packets_keep_theirs() {
        let mut seq = SeqRewriter::new(0);
        seq.rebase(10);
        assert_eq!(seq.forward(10), Some(0));
        assert_eq!(seq.forward(12), Some(2), "11 lost upstream: hole at 1");
        assert_eq!(seq.insert_after(12), Some(3));
        assert_eq!(seq.insert_after(12), Some(4), "a second one follows");
        assert_eq!(seq.forward(13), Some(5));
        assert_eq!(
            seq.forward(11),
            Some(1),
            "the retransmission fills its own hole"
        );
        assert_eq!(seq.insert_after(11), None, "not the newest");
        seq.skip(14);
        assert_eq!(seq.forward(15), Some(6), "skips still close gaps");
    }

    #[test]
    fn skip_after_a_gap_shifts_only_later_packets() {
        let mut seq = SeqRewriter::new(0);
        seq.rebase(0);
        assert_eq!(seq.forward(0), Some(0));
        seq.skip(2); // 1 lost, 2 dropped
        assert_eq!(seq.forward(3), Some(2));
        assert_eq!(seq.forward(1), Some(1));
    }

    #[test]
    fn a_restarted_source_continues_the_numbering() {
        let mut seq = SeqRewriter::new(0);
        seq.rebase(40_000);
        assert_eq!(seq.forward(40_000), Some(0));
        assert_eq!(seq.forward(40_001), Some(1));
        assert_eq!(seq.forward(7), Some(2), "a new SSRC starts low");
        assert_eq!(seq.forward(8), Some(3));
        assert_eq!(seq.forward(90_000), Some(4), "or far ahead");
        assert_eq!(seq.forward(89_999), None, "older than the restart");
        assert_eq!(seq.forward(90_001), Some(5));
    }

    #[test]
    fn picture_ids_continue_after_a_switch() {
        let mut ids = PictureIds::default();
        assert_eq!(
            ids.rewrite(Some(30000), Some(200)),
            (Some(30000), Some(200))
        );
        assert!(ids.is_identity());
        ids.rebase(Some(5), Some(250));
        assert_eq!(ids.rewrite(Some(5), Some(250)), (Some(30001), Some(201)));
        assert_eq!(ids.rewrite(Some(6), Some(250)), (Some(30002), Some(201)));
        // Wraps at 15 bits and 8 bits.
        ids.rebase(Some(0x7FFF), Some(255));
        assert_eq!(
            ids.rewrite(Some(0x7FFF), Some(255)),
            (Some(30003), Some(202))
        );
        ids.rebase(Some(1), Some(0));
        let mut wrap = PictureIds::default();
        wrap.rewrite(Some(0x7FFF), Some(255));
        wrap.rebase(Some(10), Some(3));
        assert_eq!(wrap.rewrite(Some(10), Some(3)), (Some(0), Some(0)));
    }
}
