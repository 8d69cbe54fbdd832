//! Audio redundancy (RFC 2198 RED) on the way out: every outgoing audio packet may carry the
//! one, two or three packets before it, so a village classroom rebuilds lost audio from the
//! next packet instead of waiting a round trip. How deep is decided per subscriber
//! ([`depth()`]); publishers may send plain Opus or RED, subscribers get what they negotiated.

use std::collections::VecDeque;
use std::sync::Arc;

use str0m::rtp::{RedDecoder, RedEncoder, RedundantBlock};

/// Deepest redundancy sent (packets back).
pub const MAX_DISTANCE: usize = 3;

/// How far back each redundant block reaches, deepest last; a subscriber gets the first
/// [`depth()`] of them.
pub const DISTANCES: [usize; MAX_DISTANCE] = [1, 2, 3];

/// Largest RED payload sent: the deepest blocks are left out beyond it. Opus at 400 kbit/s
/// sends 1000-byte frames, and two of them do not fit a datagram with our headers (str0m
/// could not send such a packet; it panicked before it was patched to drop it). 1200 bytes
/// also keeps an audio packet within the path MTU of a village link.
pub const MAX_RED_BYTES: usize = 1200;

/// Below this loss audio goes out plain: a lost 20 ms packet now and then is concealed unheard,
/// and one redundant block doubles what audio costs, 40 kbit/s of a 300 kbit/s village link
/// that the lowest video layer needs at full frame rate.
const MIN_LOSS: f32 = 0.005;

/// How many redundant blocks a subscriber's audio carries (0: plain Opus). By loss: none below
/// 0.5 %, one below 2 %, two below 8 %, three above (bursty village loss takes out two or three
/// packets in a row; a Gilbert-Elliott bad state lasts about three). But one level while the
/// link is congested (overflowing: the collapse's own loss, where more would add to it), and
/// never deeper than one where audio would take more than a quarter of the estimate (each
/// level costs one more payload).
pub fn depth(loss: f32, congested: bool, estimate_bps: u64, audio_bps: u64) -> usize {
    let by_loss = if congested {
        1
    } else if loss < MIN_LOSS {
        0
    } else if loss < 0.02 {
        1
    } else if loss < 0.08 {
        2
    } else {
        3
    };
    let affordable = (estimate_bps / 4 / audio_bps.max(1)).saturating_sub(1) as usize;
    by_loss.min(affordable.max(1))
}

/// The primary (newest) block of a packet: the payload itself, or the last block of a RED
/// payload. `None` for a malformed RED payload.
pub fn primary(payload: &Arc<[u8]>, is_red: bool) -> Option<Arc<[u8]>> {
    if !is_red {
        return Some(payload.clone());
    }
    let blocks = RedDecoder::decode(payload).ok()?;
    let last = blocks.last().filter(|b| b.is_primary)?;
    Some(Arc::from(last.payload))
}

/// The recent primaries of one published audio track, newest last.
#[derive(Debug, Clone, Default)]
pub struct AudioHistory {
    entries: VecDeque<(u32, Arc<[u8]>)>,
}

impl AudioHistory {
    /// Records the primary of the packet at RTP time `time`.
    pub fn push(&mut self, time: u32, primary: Arc<[u8]>) {
        if self.entries.len() == MAX_DISTANCE + 1 {
            self.entries.pop_front();
        }
        self.entries.push_back((time, primary));
    }

    /// The newest packet wrapped in RED with blocks `distances` back, all with payload type `pt`.
    /// Blocks that do not fit RED's fields (a gap over 14 bits of time, say) are left out, and
    /// so are the deepest ones beyond [`MAX_RED_BYTES`].
    pub fn red_payload(&self, pt: u8, distances: &[usize]) -> Option<Vec<u8>> {
        let (time, primary) = self.entries.back()?;
        let newest = self.entries.len() - 1;
        let mut blocks: Vec<RedundantBlock> = distances
            .iter()
            .rev() // oldest first, as RFC 2198 orders them
            .filter_map(|d| newest.checked_sub(*d).map(|i| &self.entries[i]))
            .map(|(t, payload)| RedundantBlock {
                pt,
                timestamp_offset: time.wrapping_sub(*t),
                payload: payload.to_vec(),
            })
            .collect();
        blocks.retain(|b| b.fits() && b.timestamp_offset > 0);
        // Four header bytes per redundant block, one for the primary's.
        let size = |blocks: &[RedundantBlock]| {
            blocks.iter().map(|b| 4 + b.payload.len()).sum::<usize>() + 1 + primary.len()
        };
        while !blocks.is_empty() && size(&blocks) > MAX_RED_BYTES {
            blocks.remove(0); // oldest first
        }
        Some(RedEncoder::encode(pt, primary, &blocks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(n: u32) -> AudioHistory {
        let mut h = AudioHistory::default();
        for i in 0..n {
            h.push(960 * i, Arc::from(vec![i as u8; 10 + i as usize]));
        }
        h
    }

    #[test]
    fn red_payload_carries_the_packets_before_and_decodes() {
        let h = history(5);
        let red = h.red_payload(111, &[1, 2, 3]).unwrap();
        let blocks = RedDecoder::decode(&red).unwrap();
        assert_eq!(blocks.len(), 4);
        let offsets: Vec<u32> = blocks.iter().map(|b| b.timestamp_offset).collect();
        assert_eq!(offsets, vec![2880, 1920, 960, 0]);
        assert_eq!(blocks[0].payload, &[1u8; 11][..]);
        assert_eq!(blocks[3].payload, &[4u8; 14][..]);
        assert!(blocks.iter().all(|b| b.pt == 111));
        // The primary comes back out of it.
        let red: Arc<[u8]> = Arc::from(red);
        assert_eq!(&*primary(&red, true).unwrap(), &[4u8; 14][..]);
    }

    #[test]
    fn large_frames_keep_the_payload_within_a_packet() {
        // Frames of 400–1000 bytes (Opus at 160–400 kbit/s): three back would be 2.8 kB.
        let mut h = AudioHistory::default();
        for i in 0..4u32 {
            h.push(960 * i, Arc::from(vec![i as u8; 400 + 200 * i as usize]));
        }
        let red = h.red_payload(111, &DISTANCES).unwrap();
        assert!(red.len() <= MAX_RED_BYTES, "{} bytes", red.len());
        let blocks = RedDecoder::decode(&red).unwrap();
        // The newest (1000 bytes) and the one before it (800) do not fit together: primary only.
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].payload.len(), 1000);
        // Smaller frames keep what fits, the newest first.
        let mut h = AudioHistory::default();
        for i in 0..4u32 {
            h.push(960 * i, Arc::from(vec![i as u8; 300]));
        }
        let blocks = RedDecoder::decode(&h.red_payload(111, &DISTANCES).unwrap())
            .unwrap()
            .iter()
            .map(|b| b.timestamp_offset)
            .collect::<Vec<_>>();
        assert_eq!(blocks, vec![1920, 960, 0], "the oldest left out");
        // A frame over the limit on its own still goes out, plain.
        let mut h = AudioHistory::default();
        h.push(0, Arc::from(vec![1u8; 100]));
        h.push(960, Arc::from(vec![2u8; 1275]));
        let red = h.red_payload(111, &DISTANCES).unwrap();
        assert_eq!(RedDecoder::decode(&red).unwrap().len(), 1);
        assert_eq!(red.len(), 1276);
    }

    #[test]
    fn short_history_sends_what_it_has() {
        let h = history(2);
        let blocks_len = RedDecoder::decode(&h.red_payload(111, &[1, 2, 3]).unwrap())
            .unwrap()
            .len();
        assert_eq!(blocks_len, 2);
        assert!(AudioHistory::default().red_payload(111, &[1]).is_none());
    }

    #[test]
    fn deeper_redundancy_for_lossier_links_unless_congested_or_too_dear() {
        let mbit = 1_000_000;
        assert_eq!(
            depth(0.0, false, mbit, 32_000),
            0,
            "a clean link: plain Opus"
        );
        assert_eq!(depth(0.004, false, mbit, 32_000), 0);
        assert_eq!(depth(0.01, false, mbit, 32_000), 1);
        assert_eq!(depth(0.0, true, mbit, 32_000), 1, "a collapse's own loss");
        assert_eq!(depth(0.05, false, mbit, 32_000), 2);
        assert_eq!(depth(0.15, false, mbit, 32_000), 3);
        assert_eq!(
            depth(0.15, true, mbit, 32_000),
            1,
            "congestion loss: no more traffic"
        );
        assert_eq!(
            depth(0.15, false, 300_000, 32_000),
            1,
            "75 kbit/s buys two payloads"
        );
        assert_eq!(depth(0.15, false, 400_000, 32_000), 2);
        assert_eq!(
            depth(0.15, false, 50_000, 32_000),
            1,
            "one level on a lossy link always"
        );
    }

    #[test]
    fn malformed_red_is_refused() {
        let bad: Arc<[u8]> = Arc::from(vec![0x80 | 111, 0, 0]);
        assert!(primary(&bad, true).is_none());
        let plain: Arc<[u8]> = Arc::from(vec![1, 2, 3]);
        assert_eq!(&*primary(&plain, false).unwrap(), &[1, 2, 3][..]);
    }
}
