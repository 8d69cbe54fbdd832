//! Layer shaping: the publisher encodes each simulcast layer of a camera at what the subscribers
//! on that layer can take, not only at the client's fixed ladder (dynacast with bitrates).
//!
//! A 2 Mbit/s village link takes the 640 px layer, which the teacher's page encodes at
//! 500 kbit/s: a third of the link carried video (weak-link bench, satellite profile). A layer whose every subscriber has room
//! left is raised to the least of those rooms, so the picture gets sharper instead. Per
//! publisher track: `room` from each subscriber's allocation in, a `max_kbps` per layer out.
//!
//! Rules:
//! - a layer is raised only when every subscriber on it has room (an unadaptive or pinned
//!   subscriber has none), and never past [`MAX_FACTOR`] × its natural rate (what the client
//!   encodes it at unshaped);
//! - a layer is raised to [`FILL`] of the room, so that the rate the allocator measures (it
//!   counts every layer at its measured rate) stays inside the budget through keyframes and
//!   encoder overshoot;
//! - a raise is at most [`STEP_UP`] × the current target per second, so the estimate and the
//!   measured rates follow it; a cut comes at once;
//! - a raise starts only at [`RAISE_FROM`] × the natural rate, but a raised layer is cut no
//!   lower than the natural rate before it is left to the publisher again (hysteresis).
//!
//! The client floors what it is told at its own setting, which the server does not know; so
//! the server never counts a layer at less than it measures.

use std::time::{Duration, Instant};

use super::MAX_LAYERS;

/// Raise a layer only when the room is this much over its natural rate: smaller raises are
/// noise in the estimate.
const RAISE_FROM: f64 = 1.15;
/// Share of the room a layer is raised to.
const FILL: f64 = 0.9;
/// Highest raise over the natural rate: 3 × 500 kbit/s for 640 px is generous for any camera.
const MAX_FACTOR: f64 = 3.0;
/// Largest raise per second.
const STEP_UP: f64 = 1.3;
/// Least time between raises.
const RAISE_INTERVAL: Duration = Duration::from_secs(1);
/// Tell the publisher only changes of more than this share (cuts to "unshaped" always go).
const REPORT_CHANGE: f64 = 0.1;
/// How long a layer must have been unshaped before its measured rate counts as natural: the
/// encoder takes about a second to come back down and the rate window another.
const SETTLE: Duration = Duration::from_secs(2);
/// How long the natural rate is learned (the highest settled rate) before the first raise: a
/// publisher's encoder ramps up with its own estimate for seconds after it starts.
const LEARN: Duration = Duration::from_secs(5);

/// What the subscribers on one layer have room for, gathered per publisher track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Room {
    /// Nobody takes the layer.
    #[default]
    Unwatched,
    /// Everybody on it could take up to this many bits per second of it.
    Upto(u64),
    /// Somebody on it cannot take more (unadaptive or pinned).
    None,
}

impl Room {
    /// Adds one subscriber's room (`None`: it has none).
    pub fn add(&mut self, bps: Option<u64>) {
        *self = match (*self, bps) {
            (Room::None, _) | (_, None) => Room::None,
            (Room::Unwatched, Some(b)) => Room::Upto(b),
            (Room::Upto(a), Some(b)) => Room::Upto(a.min(b)),
        };
    }
}

/// Shaping state of one publisher track's layers.
#[derive(Debug, Clone, Default)]
pub struct LayerShaper {
    layers: [Shaped; MAX_LAYERS],
    last_raise: Option<Instant>,
    /// What the publisher was last told, per layer (bits per second; `None`: its own setting).
    told: [Option<u64>; MAX_LAYERS],
}

#[derive(Debug, Clone, Copy, Default)]
struct Shaped {
    /// The layer's rate while unshaped.
    natural: Option<u64>,
    /// The rate asked of the publisher, if any.
    target: Option<u64>,
    /// Since when the layer has been unshaped.
    unshaped_since: Option<Instant>,
    /// When the natural rate was first measured.
    learned_since: Option<Instant>,
}

impl LayerShaper {
    /// The most `layer` may be raised to, once its natural rate is learned.
    pub fn ceiling(&self, layer: u8) -> Option<u64> {
        let l = self.layers.get(layer as usize)?;
        l.learned_since?;
        Some((l.natural? as f64 * MAX_FACTOR) as u64)
    }

    /// The rate asked of `layer`, if shaped.
    #[cfg(test)]
    pub fn target(&self, layer: u8) -> Option<u64> {
        self.layers.get(layer as usize)?.target
    }

    /// What the publisher was last told per layer (bits per second; `None`: its own setting).
    pub fn told(&self) -> &[Option<u64>; MAX_LAYERS] {
        &self.told
    }

    /// Feeds the measured rate per layer (`None`: not sent now) and the room per layer; returns
    /// the targets to tell the publisher when they changed enough (`None` per layer: its own
    /// setting).
    pub fn update(
        &mut self,
        now: Instant,
        measured: &[Option<u64>],
        rooms: &[Room],
    ) -> Option<[Option<u64>; MAX_LAYERS]> {
        let may_raise = self
            .last_raise
            .is_none_or(|t| now.saturating_duration_since(t) >= RAISE_INTERVAL);
        let mut raised = false;
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let measured = measured.get(i).copied().flatten();
            let room = rooms.get(i).copied().unwrap_or_default();
            if layer.target.is_none() {
                let since = *layer.unshaped_since.get_or_insert(now);
                // At its own setting for a while: what it measures is its natural rate. The
                // highest seen: a rate still ramping up (stream start) is not its own setting.
                if now.saturating_duration_since(since) >= SETTLE {
                    if let Some(m) = measured {
                        layer.natural = Some(layer.natural.map_or(m, |n| n.max(m)));
                        layer.learned_since.get_or_insert(now);
                    }
                }
            }
            let learned = layer
                .learned_since
                .is_some_and(|t| now.saturating_duration_since(t) >= LEARN);
            let Some(natural) = layer.natural.filter(|n| *n > 0 && learned) else {
                continue;
            };
            // A raise starts only above RAISE_FROM × natural but holds down to the natural
            // rate: a room near the threshold (the 320 px layer on a 300 kbit/s link) turned
            // shaping on and off every second, and each change reconfigures the encoder.
            let least = if layer.target.is_some() {
                1.0
            } else {
                RAISE_FROM
            };
            let wanted = match room {
                Room::Upto(room) if room as f64 * FILL >= natural as f64 * least => {
                    Some(((room as f64 * FILL) as u64).min((natural as f64 * MAX_FACTOR) as u64))
                }
                // A layer nobody takes keeps its target until someone does, or it stops.
                Room::Unwatched if measured.is_some() => layer.target,
                _ => None,
            };
            let next = match (layer.target, wanted) {
                (_, None) => None,
                (current, Some(w)) => {
                    let from = current.unwrap_or(natural);
                    if w <= from {
                        Some(w) // cuts at once
                    } else if may_raise {
                        raised = true;
                        Some(w.min((from as f64 * STEP_UP) as u64))
                    } else {
                        current
                    }
                }
            };
            // A target that falls back to the natural rate is no target.
            let next = next.filter(|t| *t as f64 >= natural as f64 * least);
            if next.is_none() && layer.target.is_some() {
                layer.unshaped_since = Some(now);
            }
            layer.target = next;
        }
        if raised {
            self.last_raise = Some(now);
        }
        let targets: [Option<u64>; MAX_LAYERS] = std::array::from_fn(|i| self.layers[i].target);
        let changed = targets
            .iter()
            .zip(&self.told)
            .any(|(t, told)| match (t, told) {
                (Some(t), Some(told)) => {
                    (*t as f64 - *told as f64).abs() > *told as f64 * REPORT_CHANGE
                }
                (None, None) => false,
                _ => true,
            });
        if !changed {
            return None;
        }
        self.told = targets;
        Some(targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 500_000;
    /// Natural rates are learned for SETTLE + LEARN before the first raise.
    const FIRST_RAISE: Duration = Duration::from_secs(7);

    /// One update per 200 ms over `[from, from + secs)`, layer 1 measured at what it was last
    /// told (the encoder follows at once), room fixed; returns the messages sent.
    fn run(
        shaper: &mut LayerShaper,
        start: Instant,
        from: u64,
        secs: u64,
        room: Room,
    ) -> Vec<(Duration, Option<u64>)> {
        let mut sent = Vec::new();
        for tick in from * 5..(from + secs) * 5 {
            let at = Duration::from_millis(200 * tick);
            let measured = shaper.told[1].unwrap_or(H);
            let rooms = [Room::None, room, Room::Unwatched];
            let layers = [Some(150_000), Some(measured), None];
            if let Some(t) = shaper.update(start + at, &layers, &rooms) {
                sent.push((at, t[1]));
            }
        }
        sent
    }

    #[test]
    fn a_raised_layer_holds_down_to_its_natural_rate() {
        let start = Instant::now();
        let mut shaper = LayerShaper::default();
        let raised = run(&mut shaper, start, 0, 10, Room::Upto(1_000_000));
        // 500k → 650k → 845k → 900k (0.9 × the room; too small a change to report).
        assert_eq!(
            raised.last(),
            Some(&(Duration::from_secs(8), Some(845_000)))
        );
        // The room shrinks to just over the natural rate: cut to what fits, still raised (a
        // raise would not start there).
        let held = run(&mut shaper, start, 10, 5, Room::Upto(600_000));
        assert_eq!(held, vec![(Duration::from_secs(10), Some(540_000))]);
        // Under it: back to the publisher's own rate.
        let off = run(&mut shaper, start, 15, 2, Room::Upto(500_000));
        assert_eq!(off, vec![(Duration::from_secs(15), None)]);
    }

    #[test]
    fn a_layer_with_room_climbs_to_it_step_by_step() {
        let start = Instant::now();
        let mut shaper = LayerShaper::default();
        let sent = run(&mut shaper, start, 0, 12, Room::Upto(1_200_000));
        let targets: Vec<u64> = sent.iter().map(|(_, t)| t.unwrap()).collect();
        // 1.3× per second from 500 kbit/s: 650, 845, then 0.9 of the room.
        assert_eq!(targets, vec![650_000, 845_000, 1_080_000], "{sent:?}");
        assert_eq!(
            sent[0].0, FIRST_RAISE,
            "nothing before the natural rate is learned"
        );
        assert!(sent.windows(2).all(|w| w[1].0 - w[0].0 >= RAISE_INTERVAL));
        assert_eq!(shaper.target(1), Some(1_080_000));
        // A change under a tenth is kept, not told.
        let quiet = run(&mut shaper, start, 12, 3, Room::Upto(1_250_000));
        assert!(quiet.is_empty(), "{quiet:?}");
        assert_eq!(shaper.target(1), Some(1_125_000));
        assert_eq!(
            shaper.target(0),
            None,
            "layer 0 has a subscriber without room"
        );
    }

    #[test]
    fn a_raise_is_capped_and_small_rooms_leave_the_layer_alone() {
        let start = Instant::now();
        let mut shaper = LayerShaper::default();
        run(&mut shaper, start, 0, 20, Room::Upto(10_000_000));
        assert_eq!(shaper.target(1), Some((H as f64 * MAX_FACTOR) as u64));

        let mut shaper = LayerShaper::default();
        assert!(run(&mut shaper, start, 0, 12, Room::Upto(H * 11 / 10)).is_empty());
        assert!(run(&mut shaper, start, 12, 10, Room::None).is_empty());
    }

    #[test]
    fn a_shrinking_room_cuts_at_once_and_a_lost_one_ends_shaping() {
        let start = Instant::now();
        let mut shaper = LayerShaper::default();
        run(&mut shaper, start, 0, 12, Room::Upto(1_000_000));
        let later = start + Duration::from_secs(12);
        // The link dips: the target follows in the same tick, with no wait for a second.
        let t = shaper
            .update(
                later,
                &[Some(150_000), Some(900_000), None],
                &[Room::None, Room::Upto(700_000), Room::Unwatched],
            )
            .expect("cut reported");
        assert_eq!(t[1], Some(630_000));
        // A subscriber joins without room (pinned): back to the client's own setting.
        let t = shaper
            .update(
                later + Duration::from_millis(200),
                &[Some(150_000), Some(630_000), None],
                &[Room::None, Room::None, Room::Unwatched],
            )
            .expect("end reported");
        assert_eq!(t[1], None);
        assert_eq!(shaper.target(1), None);
    }

    #[test]
    fn the_natural_rate_is_read_only_once_the_encoder_settled() {
        let start = Instant::now();
        let mut shaper = LayerShaper::default();
        // The publisher's encoder ramps up at first: 200, then 500 kbit/s from 3 s.
        for tick in 0..40u64 {
            let at = start + Duration::from_millis(200 * tick);
            let h = if tick < 15 { 200_000 } else { H };
            shaper.update(
                at,
                &[None, Some(h), None],
                &[Room::None, Room::None, Room::Unwatched],
            );
        }
        run(&mut shaper, start, 8, 10, Room::Upto(1_000_000));
        let mut at = start + Duration::from_secs(18);
        shaper.update(
            at,
            &[None, Some(900_000), None],
            &[Room::None, Room::None, Room::Unwatched],
        );
        // Still measured high for a while after the end: not taken as natural.
        at += Duration::from_secs(1);
        shaper.update(
            at,
            &[None, Some(800_000), None],
            &[Room::None, Room::None, Room::Unwatched],
        );
        let t = shaper.update(
            at + Duration::from_millis(200),
            &[None, Some(800_000), None],
            &[Room::None, Room::Upto(1_000_000), Room::Unwatched],
        );
        // From the natural 500 kbit/s (not 200 of the ramp, not 800 of the end): 1.3× of it.
        assert_eq!(t.map(|t| t[1]), Some(Some(650_000)));
    }

    #[test]
    fn rooms_combine_to_the_least() {
        let mut room = Room::default();
        room.add(Some(900));
        room.add(Some(700));
        assert_eq!(room, Room::Upto(700));
        room.add(None);
        room.add(Some(800));
        assert_eq!(room, Room::None);
    }
}
