//! tongbu patch: ULPFEC (RFC 5109) carried in RED (RFC 2198) on one outgoing video stream.
//!
//! libwebrtc's receiver XORs over each RED-wrapped media packet as it arrived, with the RED
//! header removed, the media payload type put back, and the extensions a pacer rewrites
//! (transport-wide sequence number, abs-send-time, transmission offset) zeroed. Those bytes
//! only exist once str0m serializes the packet, so the parity is computed here, at send time,
//! over the packets exactly as they went out. The application decides which packets each FEC
//! packet protects and reserves its sequence number (`RtpWrite::ulpfec`).

use std::collections::VecDeque;

use crate::rtp_::{Pt, SeqNo};

/// The most media packets one FEC packet covers: the long (48-bit) mask.
pub const ULPFEC_MAX_PROTECTED: usize = 48;

const RTP_FIXED_HEADER: usize = 12;
const FEC_HEADER: usize = 10;
const LEVEL_HEADER_SHORT: usize = 4;
const LEVEL_HEADER_LONG: usize = 8;

/// A media packet as the receiver's FEC decoder holds it.
#[derive(Debug)]
struct Protected {
    seq: SeqNo,
    bytes: Vec<u8>,
}

/// ULPFEC state of one send stream: the packets recently sent in RED, and the FEC packets the
/// application has queued.
#[derive(Debug, Default)]
pub(crate) struct UlpfecSender {
    sent: VecDeque<Protected>,
    /// Buffers of packets that aged out, reused so recording does not allocate.
    spare: Vec<Vec<u8>>,
    /// Queued FEC packets: (their own sequence number, first protected, mask).
    pending: VecDeque<(SeqNo, SeqNo, u64)>,
}

impl UlpfecSender {
    /// The application queued a FEC packet at `seq_no`, protecting `base + i` for every bit `i`
    /// set in `mask` (bit 0 is `base`).
    pub fn queue(&mut self, seq_no: SeqNo, base: SeqNo, mask: u64) {
        if self.pending.len() >= ULPFEC_MAX_PROTECTED {
            self.pending.pop_front();
        }
        self.pending.push_back((seq_no, base, mask));
    }

    /// Whether `seq_no` is a FEC packet the application queued.
    pub fn is_queued(&self, seq_no: SeqNo) -> bool {
        self.pending.iter().any(|(s, _, _)| *s == seq_no)
    }

    /// Remember a media packet just serialized into `packet` with a one-byte RED header at
    /// `header_len`. `mutable_ids` are the extension ids whose values the receiver zeroes.
    pub fn record(
        &mut self,
        seq: SeqNo,
        packet: &[u8],
        header_len: usize,
        media_pt: Pt,
        mutable_ids: &[u8],
    ) {
        if packet.len() <= header_len || header_len < RTP_FIXED_HEADER {
            return;
        }
        let mut bytes = if self.sent.len() >= ULPFEC_MAX_PROTECTED {
            self.sent.pop_front().map(|p| p.bytes).unwrap_or_default()
        } else {
            self.spare.pop().unwrap_or_default()
        };
        bytes.clear();
        bytes.extend_from_slice(&packet[..header_len]);
        bytes.extend_from_slice(&packet[header_len + 1..]);
        bytes[1] = (bytes[1] & 0x80) | (*media_pt & 0x7f);
        zero_extensions(&mut bytes, mutable_ids);
        self.sent.push_back(Protected { seq, bytes });
    }

    /// Write the RED-wrapped FEC payload for the queued packet `seq_no` into `out`. Returns its
    /// length, or `None` when none of the packets it should protect went out in RED.
    pub fn build(&mut self, seq_no: SeqNo, ulpfec_pt: Pt, out: &mut [u8]) -> Option<usize> {
        // Requests behind this one will never be polled: their packets were dropped.
        while let Some(&(s, _, _)) = self.pending.front() {
            if s >= seq_no {
                break;
            }
            self.pending.pop_front();
        }
        let (_, base, mask) = self.pending.pop_front().filter(|(s, _, _)| *s == seq_no)?;

        // The recorded packets the mask names (no allocation: at most 48 to look through).
        let covers = |p: &&Protected| {
            *p.seq >= *base && *p.seq - *base < 64 && mask & (1 << (*p.seq - *base)) != 0
        };
        let covered = || self.sent.iter().filter(covers);
        let first = covered().map(|p| p.seq).min()?;
        let last = covered().map(|p| p.seq).max()?;
        if *last - *first >= ULPFEC_MAX_PROTECTED as u64 {
            return None;
        }
        let long_mask = *last - *first >= 16;
        let level_header = if long_mask {
            LEVEL_HEADER_LONG
        } else {
            LEVEL_HEADER_SHORT
        };
        let protection_len = covered().map(|p| p.bytes.len() - RTP_FIXED_HEADER).max()?;
        let payload_at = 1 + FEC_HEADER + level_header;
        let total = payload_at + protection_len;
        if total > out.len() || protection_len > u16::MAX as usize {
            return None;
        }
        let out = &mut out[..total];
        out.fill(0);

        // RED header: one block, the last (F = 0), carrying ULPFEC.
        out[0] = *ulpfec_pt & 0x7f;
        let (fec_header, rest) = out[1..].split_at_mut(FEC_HEADER);
        let (level, parity) = rest.split_at_mut(level_header);

        let mut length_recovery = 0u16;
        let mut bit_mask = 0u64;
        for p in covered() {
            // P, X, CC; M, PT; timestamp: XORed as they are.
            fec_header[0] ^= p.bytes[0];
            fec_header[1] ^= p.bytes[1];
            for k in 0..4 {
                fec_header[4 + k] ^= p.bytes[4 + k];
            }
            length_recovery ^= (p.bytes.len() - RTP_FIXED_HEADER) as u16;
            for (dst, src) in parity.iter_mut().zip(&p.bytes[RTP_FIXED_HEADER..]) {
                *dst ^= *src;
            }
            bit_mask |= 1 << (47 - (*p.seq - *first));
        }
        // E = 0 (no extension of the FEC header), L says which mask follows.
        fec_header[0] = (fec_header[0] & 0x3f) | if long_mask { 0x40 } else { 0 };
        fec_header[2..4].copy_from_slice(&(*first as u16).to_be_bytes());
        fec_header[8..10].copy_from_slice(&length_recovery.to_be_bytes());

        level[0..2].copy_from_slice(&(protection_len as u16).to_be_bytes());
        let mask_bytes = bit_mask.to_be_bytes();
        // The 48-bit mask sits in the low six bytes; its first 16 bits are the short mask.
        level[2..level_header].copy_from_slice(&mask_bytes[2..2 + level_header - 2]);

        Some(total)
    }
}

/// Zero the values of the extensions `ids` in a serialized RTP packet (one- or two-byte form).
fn zero_extensions(bytes: &mut [u8], ids: &[u8]) {
    if ids.is_empty() || bytes[0] & 0x10 == 0 {
        return;
    }
    let start = RTP_FIXED_HEADER + 4 * (bytes[0] & 0x0f) as usize;
    if bytes.len() < start + 4 {
        return;
    }
    let profile = u16::from_be_bytes([bytes[start], bytes[start + 1]]);
    let words = u16::from_be_bytes([bytes[start + 2], bytes[start + 3]]) as usize;
    let end = (start + 4 + words * 4).min(bytes.len());
    let two_byte = profile & 0xfff0 == 0x1000;
    if profile != 0xBEDE && !two_byte {
        return;
    }
    let mut i = start + 4;
    while i < end {
        if bytes[i] == 0 {
            i += 1; // padding
            continue;
        }
        let (id, len, data) = if two_byte {
            if i + 1 >= end {
                return;
            }
            (bytes[i], bytes[i + 1] as usize, i + 2)
        } else {
            let id = bytes[i] >> 4;
            if id == 15 {
                return;
            }
            (id, (bytes[i] & 0x0f) as usize + 1, i + 1)
        };
        let stop = (data + len).min(end);
        if ids.contains(&id) {
            bytes[data..stop].fill(0);
        }
        i = stop;
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// A serialized packet: 12-byte header with one-byte extensions (id 3 = 3 bytes of
    /// abs-send-time, id 4 = 1 byte of MID), a RED byte, then the payload.
    fn packet(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> (Vec<u8>, usize) {
        let mut p = vec![0x90, if marker { 0x80 | 116 } else { 116 }];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(&[0xBE, 0xDE, 0, 2, 0x32, 0xAA, 0xBB, 0xCC, 0x40, b'v', 0, 0]);
        let header_len = p.len();
        p.push(96); // RED block header: VP8
        p.extend_from_slice(payload);
        (p, header_len)
    }

    /// Recover one missing packet the way RFC 5109 section 10.2 describes.
    fn recover(fec: &[u8], received: &[&[u8]], missing_seq: u16) -> Vec<u8> {
        let fec = &fec[1..]; // RED header
        let long = fec[0] & 0x40 != 0;
        let payload_at = FEC_HEADER + if long { 8 } else { 4 };
        let mut header = [0u8; 10];
        header.copy_from_slice(&fec[..10]);
        let mut len = u16::from_be_bytes([fec[8], fec[9]]);
        let mut body = fec[payload_at..].to_vec();
        for r in received {
            header[0] ^= r[0];
            header[1] ^= r[1];
            for k in 0..4 {
                header[4 + k] ^= r[4 + k];
            }
            len ^= (r.len() - 12) as u16;
            for (d, s) in body.iter_mut().zip(&r[12..]) {
                *d ^= *s;
            }
        }
        let mut out = vec![(header[0] & 0x3f) | 0x80, header[1]];
        out.extend_from_slice(&missing_seq.to_be_bytes());
        out.extend_from_slice(&header[4..8]);
        out.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        out.extend_from_slice(&body[..len as usize]);
        out
    }

    fn as_protected(p: &[u8], header_len: usize) -> Vec<u8> {
        let mut v = p[..header_len].to_vec();
        v.extend_from_slice(&p[header_len + 1..]);
        v[1] = (v[1] & 0x80) | 96;
        v[17..20].fill(0);
        v
    }

    #[test]
    fn one_lost_packet_is_rebuilt_from_the_others() {
        let mut fec = UlpfecSender::default();
        let frames = [
            packet(100, 9000, false, &[1, 2, 3, 4, 5, 6, 7]),
            packet(101, 9000, false, &[9; 30]),
            packet(102, 9000, true, &[7, 7]),
        ];
        for (i, (p, h)) in frames.iter().enumerate() {
            fec.record((100 + i as u64).into(), p, *h, 96.into(), &[3]);
        }
        fec.queue(103.into(), 100.into(), 0b111);
        let mut out = [0u8; 1500];
        let n = fec.build(103.into(), 117.into(), &mut out).expect("fec");
        assert_eq!(out[0], 117, "RED header names ULPFEC, F = 0");
        assert_eq!(u16::from_be_bytes([out[3], out[4]]), 100, "SN base");
        assert_eq!(&out[13..15], &[0b1110_0000, 0], "short mask: 100, 101, 102");

        for lost in 0..3 {
            let received: Vec<Vec<u8>> = frames
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != lost)
                .map(|(_, (p, h))| as_protected(p, *h))
                .collect();
            let refs: Vec<&[u8]> = received.iter().map(|v| v.as_slice()).collect();
            let rebuilt = recover(&out[..n], &refs, 100 + lost as u16);
            let (p, h) = &frames[lost];
            assert_eq!(
                rebuilt,
                as_protected(p, *h),
                "packet {lost} rebuilt byte for byte"
            );
        }
    }

    #[test]
    fn mutable_extensions_are_zeroed_and_others_kept() {
        let (p, h) = packet(1, 0, false, &[1]);
        let mut fec = UlpfecSender::default();
        fec.record(1.into(), &p, h, 96.into(), &[3]);
        let kept = &fec.sent[0].bytes;
        assert_eq!(&kept[16..20], &[0x32, 0, 0, 0], "abs-send-time zeroed");
        assert_eq!(&kept[20..22], &[0x40, b'v'], "MID kept");
        assert_eq!(kept[1], 96, "media PT restored");
        assert_eq!(kept.len(), p.len() - 1, "RED header removed");
    }

    #[test]
    fn a_wide_span_takes_the_long_mask_and_gaps_are_left_out() {
        let mut fec = UlpfecSender::default();
        for seq in [10u16, 30] {
            let (p, h) = packet(seq, 0, false, &[seq as u8; 5]);
            fec.record((seq as u64).into(), &p, h, 96.into(), &[]);
        }
        // Asks for 10..=30 and 31 (never sent): the FEC covers what went out.
        fec.queue(40.into(), 10.into(), (1 << 20) | (1 << 21) | 1);
        let mut out = [0u8; 1500];
        fec.build(40.into(), 117.into(), &mut out).expect("fec");
        assert_eq!(out[1] & 0x40, 0x40, "L bit");
        let mask = u64::from_be_bytes([0, 0, out[13], out[14], out[15], out[16], out[17], out[18]]);
        assert_eq!(mask, (1 << 47) | (1 << 27));
    }

    #[test]
    fn nothing_to_protect_gives_no_packet() {
        let mut fec = UlpfecSender::default();
        fec.queue(5.into(), 1.into(), 0b11);
        let mut out = [0u8; 1500];
        assert!(fec.build(5.into(), 117.into(), &mut out).is_none());
        assert!(!fec.is_queued(5.into()));
    }
}
