//! What the forwarder needs to know of a VP8 RTP packet (RFC 7741 payload descriptor): where a
//! frame starts, whether it is a keyframe, its temporal layer, and the picture id and TL0PICIDX a
//! subscriber's stream must keep continuous across layer switches. str0m parses the descriptor
//! and builds the in-place patch; this adds the temporal fields str0m does not expose.

use str0m::rtp::{Vp8Descriptor, Vp8Patch};

/// The parsed descriptor of one VP8 packet.
#[derive(Debug, Clone, Copy)]
pub struct Vp8Packet {
    descriptor: Vp8Descriptor,
    /// First packet of a frame (S=1, partition 0).
    pub frame_start: bool,
    /// First packet of a keyframe.
    pub keyframe: bool,
    /// Temporal layer (TID), when the stream carries temporal layers.
    pub temporal: Option<u8>,
    /// Layer sync (Y): the frame references temporal layer 0 only.
    pub layer_sync: bool,
    /// The picture id field is 7 bits wide (browsers send 15; some encoders start short).
    short_picture_id: bool,
}

impl Vp8Packet {
    /// `None` for a payload too short or malformed to be VP8.
    pub fn parse(payload: &[u8]) -> Option<Vp8Packet> {
        let descriptor = Vp8Descriptor::parse(payload).ok()?;
        let first = payload[0];
        let frame_start = first & 0x10 != 0 && first & 0x07 == 0;
        let (temporal, layer_sync) = temporal_fields(payload);
        // X and I set, and the first PictureID octet without its M (15-bit) bit.
        let short_picture_id = first & 0x80 != 0
            && payload.get(1).is_some_and(|ext| ext & 0x80 != 0)
            && payload.get(2).is_some_and(|id| id & 0x80 == 0);
        Some(Vp8Packet {
            descriptor,
            frame_start,
            keyframe: descriptor.starts_keyframe(payload),
            temporal,
            layer_sync,
            short_picture_id,
        })
    }

    pub fn picture_id(&self) -> Option<u16> {
        self.descriptor.picture_id()
    }

    pub fn tl0_pic_idx(&self) -> Option<u8> {
        self.descriptor.tl0_pic_idx()
    }

    /// The patch that gives this packet `picture_id` and `tl0_pic_idx` on a subscriber's stream;
    /// `None` if the descriptor lacks the fields (then the packet goes out as it came). A 7-bit
    /// field gets the low 7 bits: receivers unwrap it modulo 128, so it stays continuous.
    pub fn patch(&self, picture_id: Option<u16>, tl0_pic_idx: Option<u8>) -> Option<Vp8Patch> {
        let mut builder = self.descriptor.patch();
        if let Some(p) = picture_id {
            builder = builder.picture_id(if self.short_picture_id { p & 0x7F } else { p });
        }
        if let Some(t) = tl0_pic_idx {
            builder = builder.tl0_pic_idx(t);
        }
        builder.build().ok()
    }
}

/// TID and Y from the T/K octet, if the descriptor has the T bit.
fn temporal_fields(payload: &[u8]) -> (Option<u8>, bool) {
    if payload[0] & 0x80 == 0 {
        return (None, false);
    }
    let Some(&ext) = payload.get(1) else {
        return (None, false);
    };
    if ext & 0x20 == 0 {
        return (None, false);
    }
    let mut at = 2;
    if ext & 0x80 != 0 {
        // PictureID: one octet, two when its M bit is set.
        let long = payload.get(at).is_some_and(|b| b & 0x80 != 0);
        at += if long { 2 } else { 1 };
    }
    if ext & 0x40 != 0 {
        at += 1; // TL0PICIDX
    }
    match payload.get(at) {
        Some(&tk) => (Some(tk >> 6), tk & 0x20 != 0),
        None => (None, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// X, I(15-bit), L, T: picture id 0x1234, tl0 7, tid 2, Y; then a VP8 header byte.
    fn packet(start: bool, key: bool) -> Vec<u8> {
        let s = if start { 0x10 } else { 0 };
        let vp8_header = if key { 0x00 } else { 0x01 };
        vec![
            0x80 | s,
            0xE0,
            0x80 | 0x12,
            0x34,
            7,
            (2 << 6) | 0x20,
            vp8_header,
            0,
            0,
        ]
    }

    #[test]
    fn parses_all_fields() {
        let p = Vp8Packet::parse(&packet(true, true)).unwrap();
        assert!(p.frame_start && p.keyframe);
        assert_eq!(p.picture_id(), Some(0x1234));
        assert_eq!(p.tl0_pic_idx(), Some(7));
        assert_eq!(p.temporal, Some(2));
        assert!(p.layer_sync);

        let middle = Vp8Packet::parse(&packet(false, true)).unwrap();
        assert!(
            !middle.frame_start && !middle.keyframe,
            "only the first packet starts a frame"
        );
        let delta = Vp8Packet::parse(&packet(true, false)).unwrap();
        assert!(delta.frame_start && !delta.keyframe);
    }

    #[test]
    fn minimal_descriptor_has_no_temporal_layer() {
        let p = Vp8Packet::parse(&[0x10, 0x00, 1, 2]).unwrap();
        assert!(p.frame_start && p.keyframe);
        assert_eq!((p.temporal, p.picture_id()), (None, None));
        assert!(p.patch(Some(5), None).is_none(), "no picture id to patch");
    }

    #[test]
    fn malformed_payloads_are_refused() {
        assert!(Vp8Packet::parse(&[]).is_none());
        assert!(Vp8Packet::parse(&[0x90]).is_none());
        assert!(Vp8Packet::parse(&[0x90, 0xE0, 0x80]).is_none());
    }

    #[test]
    fn short_picture_ids_get_the_low_seven_bits() {
        // X, I with a 7-bit picture id 5, then the VP8 header.
        let p = Vp8Packet::parse(&[0x90, 0x80, 5, 0x00, 0, 0]).unwrap();
        assert_eq!(p.picture_id(), Some(5));
        assert!(p.patch(Some(0x1234), None).is_some(), "written modulo 128");
        assert_eq!(p.patch(Some(0x1234), None), p.patch(Some(0x34), None));
    }

    #[test]
    fn patch_rewrites_picture_id_and_tl0() {
        let p = Vp8Packet::parse(&packet(true, true)).unwrap();
        assert!(p.patch(Some(0x0042), Some(9)).is_some());
        assert!(
            p.patch(Some(0x8000), None).is_none(),
            "picture id is 15 bits"
        );
    }
}
