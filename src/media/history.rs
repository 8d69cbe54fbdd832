//! How much retransmission history each outgoing video stream keeps. str0m keeps one ring buffer
//! per stream (default 1000 packets, ~1.2 MB); a village subscriber needs only what its highest
//! bitrate sends during the longest round trip still worth repairing. Older packets would arrive
//! too late to be played, so keeping them only costs memory per subscriber.

use std::time::Duration;

/// RTP payload bytes per packet, roughly (MTU minus headers).
const PACKET_BYTES: f64 = 1_150.0;
/// Never less than one large keyframe (1280×720 keyframes reach ~150 KB).
const MIN_PACKETS: usize = 128;
/// str0m's own default; more never helps.
const MAX_PACKETS: usize = 1_000;

/// Packets of history for a stream of at most `max_bps`, repaired within `window`.
pub fn video_history_packets(max_bps: u64, window: Duration) -> usize {
    let packets = (max_bps as f64 * window.as_secs_f64() / 8.0 / PACKET_BYTES).ceil() as usize;
    packets.clamp(MIN_PACKETS, MAX_PACKETS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_scales_with_bitrate_and_window_within_bounds() {
        let one_s = Duration::from_secs(1);
        // 2.5 Mbit/s over 1 s: 272 packets, about a quarter of str0m's default.
        assert_eq!(video_history_packets(2_500_000, one_s), 272);
        assert_eq!(video_history_packets(5_000_000, one_s), 544);
        assert_eq!(video_history_packets(300_000, one_s), MIN_PACKETS);
        assert_eq!(video_history_packets(50_000_000, one_s), MAX_PACKETS);
        assert!(
            video_history_packets(2_500_000, 2 * one_s) > video_history_packets(2_500_000, one_s)
        );
    }
}
