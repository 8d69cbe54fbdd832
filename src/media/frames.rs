//! Packets arrive one by one, but a subscriber gets or misses whole frames: the selector decides
//! once per frame, and every other packet of that frame (late or retransmitted ones too) must
//! get the same answer. This remembers those answers per simulcast layer. Pure.

use crate::bwe::MAX_LAYERS;

/// Frames remembered per layer for late packets: about a quarter second of 30 fps video, the
/// longest a publisher's retransmission takes on the teacher's side.
const RECENT: usize = 8;

/// What is known of a packet's frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A frame newer than any seen on its layer: decide now.
    New,
    /// A frame already decided: forward or not.
    Decided(bool),
    /// An older frame no longer remembered: drop the packet.
    Forgotten,
}

#[derive(Debug, Clone, Copy, Default)]
struct LayerFrames {
    latest: Option<u64>,
    recent: [(u64, bool); RECENT],
    next: usize,
}

/// Per subscriber and video track.
#[derive(Debug, Clone, Default)]
pub struct FrameMemory {
    layers: [LayerFrames; MAX_LAYERS],
}

impl FrameMemory {
    /// The packet of `layer` at (extended) RTP time `time`.
    pub fn lookup(&self, layer: u8, time: u64) -> Seen {
        let Some(frames) = self.layers.get(layer as usize) else {
            return Seen::Forgotten;
        };
        match frames.latest {
            Some(latest) if time <= latest => frames
                .recent
                .iter()
                .find(|(t, _)| *t == time)
                .map_or(Seen::Forgotten, |(_, f)| Seen::Decided(*f)),
            _ => Seen::New,
        }
    }

    /// Remembers the decision for the new frame at `time`.
    pub fn record(&mut self, layer: u8, time: u64, forward: bool) {
        let Some(frames) = self.layers.get_mut(layer as usize) else {
            return;
        };
        frames.latest = Some(time);
        frames.recent[frames.next] = (time, forward);
        frames.next = (frames.next + 1) % RECENT;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_packet_of_a_frame_gets_its_decision() {
        let mut m = FrameMemory::default();
        assert_eq!(m.lookup(0, 3000), Seen::New);
        m.record(0, 3000, true);
        assert_eq!(m.lookup(0, 3000), Seen::Decided(true));
        assert_eq!(m.lookup(1, 3000), Seen::New, "layers are separate");
        m.record(0, 6000, false);
        assert_eq!(m.lookup(0, 6000), Seen::Decided(false));
        assert_eq!(m.lookup(0, 3000), Seen::Decided(true), "a late packet");
        assert_eq!(m.lookup(0, 9000), Seen::New);
        for i in 3..20 {
            m.record(0, 3000 * i, true);
        }
        assert_eq!(m.lookup(0, 6000), Seen::Forgotten);
        assert_eq!(
            m.lookup(0, 4500),
            Seen::Forgotten,
            "never seen, older than the latest"
        );
        assert_eq!(m.lookup(9, 0), Seen::Forgotten, "no such layer");
    }
}
