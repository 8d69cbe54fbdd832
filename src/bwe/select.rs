//! Layer selection for one (subscriber, video track), in LiveKit's vocabulary: *max* is what the
//! subscriber allows, *target* what the allocation settled on, *current* what flows.
//!
//! - Down at once: an allocation below the target becomes the target in the same update.
//! - Up with hysteresis: the allocation must stay above the target for a hold time, and the target
//!   rises to the lowest allocation seen during the hold. A higher allocation that came during the
//!   hold starts its own hold when it came, not when the first one ends, so a climb over two
//!   spatial layers takes one hold after the estimate reached the top, not two. The hold doubles
//!   for each spatial down-step (or pause) within `down_memory` (capped), so a flapping estimate
//!   settles on the lower layer; frame-rate steps are cheap and do not count.
//! - Spatial switches only on keyframes: *current* moves to a layer when a keyframe of it arrives and
//!   it lies between *current* and *target*; until then [`LayerSelector::keyframe_request`] asks.
//! - Temporal cap: a `LayerChoice` without full frame rate forwards temporal layer 0 only. Dropping
//!   upper temporal layers is safe on any frame; raising them waits for a layer-sync frame (or a
//!   keyframe), one temporal layer at a time, because upper frames may reference ones we dropped.
//! - While stepping down to a lower spatial layer, the layer being left is cut to TL0 at once: about
//!   half its rate comes off the congested link before the lower layer's keyframe arrives. While
//!   the link overflows (a collapse: most of what is sent is lost anyway), it is cut altogether,
//!   so that the queue drains and the lower layer's keyframe gets through whole.

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use super::{LayerChoice, Tuning, ALL_TEMPORAL};

/// The hold doubles at most this many times before the cap (3 s × 2⁴ is far above any sane cap).
const MAX_BACKOFF_DOUBLINGS: u32 = 4;

/// What the forwarder knows about a video frame (its first packet): no payload, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Spatial (simulcast) layer it belongs to.
    pub layer: u8,
    /// VP8 temporal layer index (TID), if the payload descriptor carries one.
    pub temporal: Option<u8>,
    /// Whether it is a keyframe.
    pub keyframe: bool,
    /// VP8 layer-sync bit (Y): the frame references temporal layer 0 only.
    pub layer_sync: bool,
}

/// Decision for one frame; apply it to every packet of that frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDecision {
    /// Forward the frame to this subscriber.
    pub forward: bool,
    /// The frame starts a new spatial layer: rebase sequence numbers and timestamps here.
    pub switched: bool,
}

impl FrameDecision {
    const DROP: Self = Self {
        forward: false,
        switched: false,
    };
}

/// A keyframe this subscriber needs; pass it to [`super::KeyframeThrottle::request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyframeRequest {
    /// Spatial layer to ask the publisher for.
    pub layer: u8,
    /// When the subscriber started waiting for it.
    pub waiting_since: Instant,
}

/// A rise in allocation being held before the target follows it.
#[derive(Debug, Clone, Copy)]
struct Rise {
    since: Instant,
    hold: Duration,
    lowest: LayerChoice,
    /// Since when the allocation has stayed above `lowest`: where the next rise starts.
    higher_since: Option<Instant>,
}

/// Layer selector for one subscriber of one video track.
#[derive(Debug, Clone)]
pub struct LayerSelector {
    up_hold: Duration,
    up_hold_max: Duration,
    down_memory: Duration,
    down_grace: Duration,
    keyframe_interval: Duration,

    max: u8,
    /// Last allocation received; `None` before the first.
    allocated: Option<Option<LayerChoice>>,
    target: Option<LayerChoice>,
    current: Option<u8>,
    /// Highest temporal layer forwarded on `current` now.
    forwarded_temporal: u8,
    /// The subscriber's send queue is backed up: temporal layer 0 only until it drains.
    backlogged: bool,
    /// The link drops most of what is sent: a layer being left is cut at once.
    overflowing: bool,

    rise: Option<Rise>,
    /// Since when the allocation has been under the target's layer while the link shows no
    /// congestion (see `Tuning::down_grace`).
    fall_since: Option<Instant>,
    recent_down_steps: u32,
    last_down_step: Option<Instant>,
    waiting_since: Option<Instant>,
    last_keyframe_request: Option<Instant>,
}

impl LayerSelector {
    /// A selector capped at `max_layer`, paused until its first allocation.
    pub fn new(max_layer: u8, tuning: &Tuning) -> Self {
        Self {
            up_hold: tuning.up_hold,
            up_hold_max: tuning.up_hold_max,
            down_memory: tuning.down_memory,
            down_grace: tuning.down_grace,
            keyframe_interval: tuning.keyframe_interval,
            max: max_layer,
            allocated: None,
            target: None,
            current: None,
            forwarded_temporal: ALL_TEMPORAL,
            backlogged: false,
            overflowing: false,
            rise: None,
            fall_since: None,
            recent_down_steps: 0,
            last_down_step: None,
            waiting_since: None,
            last_keyframe_request: None,
        }
    }

    /// The subscriber's cap (LiveKit *max*).
    pub fn max(&self) -> u8 {
        self.max
    }

    /// What the allocation settled on (LiveKit *target*); `None`: paused.
    pub fn target(&self) -> Option<LayerChoice> {
        self.target
    }

    /// What flows now (LiveKit *current*); `None`: nothing.
    pub fn current(&self) -> Option<LayerChoice> {
        self.current.map(|layer| LayerChoice {
            layer,
            temporal: self.temporal_cap(),
        })
    }

    /// Whether a switch (or a restart) waits for a keyframe; it asks for one itself.
    pub fn is_waiting(&self) -> bool {
        self.waiting_since.is_some()
    }

    /// Whether `layer` is the spatial layer flowing now.
    pub fn is_current(&self, layer: u8) -> bool {
        self.current == Some(layer)
    }

    /// Change the cap. Lowering it lowers the target at once (not a congestion step, so no back-off);
    /// raising it takes effect through the next allocations, held like any rise.
    pub fn set_max(&mut self, now: Instant, max_layer: u8) {
        self.max = max_layer;
        if let Some(target) = self.target.filter(|t| t.layer > max_layer) {
            self.set_target(now, Some(self.clamp(target)));
        }
        if let Some(rise) = &mut self.rise {
            rise.lowest = clamp_to(max_layer, rise.lowest);
            if Some(rise.lowest) <= self.target {
                self.rise = None;
            }
        }
    }

    /// Whether the subscriber's send queue holds more than it can send soon (a link that just
    /// collapsed, before the estimate has caught up). While it does, only temporal layer 0 is
    /// added to it: the queue drains at twice the speed and the next keyframe waits less behind
    /// it; upper layers return at their next sync point.
    pub fn set_backlogged(&mut self, backlogged: bool) {
        self.backlogged = backlogged;
    }

    /// Whether the subscriber's link overflows now ([`super::OverflowDetector`]). While it does,
    /// a layer being stepped down from stops at once instead of flowing at TL0 until the lower
    /// layer's keyframe: its frames would mostly be lost, and they would delay that keyframe.
    pub fn set_overflowing(&mut self, overflowing: bool) {
        self.overflowing = overflowing;
        self.cut_if_overflowing();
    }

    /// The subscriber's decoder lost its references (its link carried nothing for a second or
    /// more, [`super::outage::OutageWatch`]): nothing more flows until a keyframe, asked for at
    /// once, starts the picture again, as after a pause. A paused track waits for its keyframe
    /// anyway.
    pub fn restart(&mut self, now: Instant) {
        if self.target.is_none() {
            return;
        }
        self.current = None;
        self.waiting_since = Some(now);
        self.last_keyframe_request = None;
    }

    /// Nothing flows after a cut (its next frames would miss the ones dropped): the target's
    /// keyframe starts the picture again, as after a pause.
    fn cut_if_overflowing(&mut self) {
        if self.overflowing && self.current > self.target.map(|t| t.layer) {
            self.current = None;
        }
    }

    /// Take this track's allocation from the latest [`super::allocate()`] run.
    pub fn on_allocation(&mut self, now: Instant, allocated: Option<LayerChoice>) {
        let allocated = allocated.map(|c| self.clamp(c));
        let first = self.allocated.is_none();
        self.allocated = Some(allocated);
        if first {
            self.set_target(now, allocated);
            return;
        }
        if allocated >= self.target {
            self.fall_since = None;
        }
        match allocated.cmp(&self.target) {
            Ordering::Less => {
                self.rise = None;
                // Only a spatial step down (or a pause) backs the next climb off: it is the one
                // whose undoing costs a keyframe.
                let spatial = allocated.map(|a| a.layer) < self.target.map(|t| t.layer);
                if spatial && !self.overflowing && !self.backlogged {
                    // No sign of congestion: the estimate or the costs may be wobbling around a
                    // layer's edge. Wait out the grace before paying two keyframes for it.
                    let since = *self.fall_since.get_or_insert(now);
                    if now.saturating_duration_since(since) < self.down_grace {
                        return;
                    }
                }
                self.fall_since = None;
                if spatial {
                    self.note_down_step(now);
                }
                self.set_target(now, allocated);
            }
            Ordering::Equal => self.rise = None,
            Ordering::Greater => {
                let Some(choice) = allocated else { return }; // above a target: never None
                if self.target.is_some_and(|t| t.layer == choice.layer) {
                    // More frame rate on the same layer needs no keyframe and is undone at once
                    // if the estimate was wrong: no hold, so a climb waits only for its spatial
                    // steps.
                    self.rise = None;
                    self.set_target(now, Some(choice));
                    return;
                }
                let hold = self.up_hold(now);
                let rise = self.rise.get_or_insert(Rise {
                    since: now,
                    hold,
                    lowest: choice,
                    higher_since: None,
                });
                match choice.cmp(&rise.lowest) {
                    Ordering::Less => {
                        rise.lowest = choice;
                        rise.higher_since = None;
                    }
                    Ordering::Equal => rise.higher_since = None,
                    Ordering::Greater => {
                        rise.higher_since.get_or_insert(now);
                    }
                }
                let Rise {
                    since,
                    hold,
                    lowest,
                    higher_since,
                } = *rise;
                if now.saturating_duration_since(since) >= hold {
                    self.rise = None;
                    self.set_target(now, Some(lowest));
                    if let Some(higher_since) = higher_since {
                        // The allocation went higher during this hold: that rise is held from
                        // when it came (and may already be over).
                        self.rise = Some(Rise {
                            since: higher_since,
                            hold,
                            lowest: choice,
                            higher_since: None,
                        });
                        self.on_allocation(now, allocated);
                    }
                }
            }
        }
    }

    /// When [`Self::handle_timeout`] has something to do: a hold ending, or a keyframe request due
    /// (at once after a new target, then every keyframe interval while the switch waits).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let hold_end = self.rise.map(|r| r.since + r.hold);
        let grace_end = self.fall_since.map(|since| since + self.down_grace);
        let hold_end = match (hold_end, grace_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let keyframe_due = self.waiting_since.map(|since| {
            self.last_keyframe_request
                .map_or(since, |at| at + self.keyframe_interval)
        });
        match (hold_end, keyframe_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Re-apply the last allocation at `now` (ends a hold); then poll [`Self::keyframe_request`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(allocated) = self.allocated {
            self.on_allocation(now, allocated);
        }
    }

    /// The keyframe to ask for, at most once per keyframe interval while a switch waits for one.
    pub fn keyframe_request(&mut self, now: Instant) -> Option<KeyframeRequest> {
        let waiting_since = self.waiting_since?;
        let target = self.target?;
        if self
            .last_keyframe_request
            .is_some_and(|at| now.saturating_duration_since(at) < self.keyframe_interval)
        {
            return None;
        }
        self.last_keyframe_request = Some(now);
        Some(KeyframeRequest {
            layer: target.layer,
            waiting_since,
        })
    }

    /// Decide about one frame of any layer of the track. Runs per frame per subscriber: no clock, no
    /// allocation, a few comparisons.
    pub fn on_frame(&mut self, frame: FrameInfo) -> FrameDecision {
        let Some(target) = self.target else {
            return FrameDecision::DROP;
        };
        let switched = frame.keyframe && self.moves_towards_target(target.layer, frame.layer);
        if switched {
            self.current = Some(frame.layer);
            if frame.layer == target.layer {
                self.waiting_since = None;
            }
        }
        if self.current != Some(frame.layer) {
            return FrameDecision::DROP;
        }
        let cap = self.temporal_cap();
        let temporal = frame.temporal.unwrap_or(0);
        if frame.keyframe {
            // A keyframe cuts every reference: all temporal layers up to the cap decode after it.
            self.forwarded_temporal = cap;
        } else {
            self.forwarded_temporal = self.forwarded_temporal.min(cap);
            let next_up = self.forwarded_temporal.saturating_add(1);
            if frame.layer_sync && temporal == next_up && temporal <= cap {
                self.forwarded_temporal = temporal;
            }
        }
        FrameDecision {
            forward: temporal <= self.forwarded_temporal,
            switched,
        }
    }

    /// A keyframe of `layer` is taken if it brings *current* closer to `target` without passing it;
    /// when nothing flows, any layer up to the target starts the picture sooner.
    fn moves_towards_target(&self, target: u8, layer: u8) -> bool {
        match self.current {
            None => layer <= target,
            Some(current) if current > target => (target..current).contains(&layer),
            Some(current) => current < layer && layer <= target,
        }
    }

    /// Highest temporal layer allowed on `current` now.
    fn temporal_cap(&self) -> u8 {
        if self.backlogged {
            return 0;
        }
        match (self.target, self.current) {
            (Some(target), Some(current)) if current > target.layer => 0, // leaving this layer: brake
            // Climbing from a lower layer: that one is cheaper than the target at any frame rate.
            (Some(target), Some(current)) if current < target.layer => ALL_TEMPORAL,
            (Some(target), _) => target.temporal,
            _ => ALL_TEMPORAL,
        }
    }

    fn set_target(&mut self, now: Instant, target: Option<LayerChoice>) {
        let new_layer = target.map(|t| t.layer);
        if new_layer != self.target.map(|t| t.layer) {
            // A new spatial layer means a new wait and an immediate keyframe request.
            self.waiting_since = None;
            self.last_keyframe_request = None;
        }
        self.target = target;
        match new_layer {
            // Pausing needs no keyframe: stop forwarding now.
            None => self.current = None,
            Some(layer) if self.current == Some(layer) => self.waiting_since = None,
            Some(_) => {
                self.waiting_since.get_or_insert(now);
            }
        }
        self.cut_if_overflowing();
    }

    fn note_down_step(&mut self, now: Instant) {
        self.recent_down_steps = if self.down_step_is_recent(now) {
            self.recent_down_steps + 1
        } else {
            1
        };
        self.last_down_step = Some(now);
    }

    fn down_step_is_recent(&self, now: Instant) -> bool {
        self.last_down_step
            .is_some_and(|at| now.saturating_duration_since(at) < self.down_memory)
    }

    /// `up_hold × 2^(recent down-steps)`, capped at `up_hold_max`.
    fn up_hold(&self, now: Instant) -> Duration {
        let doublings = if self.down_step_is_recent(now) {
            self.recent_down_steps
        } else {
            0
        };
        let factor = 1u32 << doublings.min(MAX_BACKOFF_DOUBLINGS);
        (self.up_hold * factor).min(self.up_hold_max.max(self.up_hold))
    }

    fn clamp(&self, choice: LayerChoice) -> LayerChoice {
        clamp_to(self.max, choice)
    }
}

fn clamp_to(max: u8, choice: LayerChoice) -> LayerChoice {
    if choice.layer > max {
        LayerChoice {
            layer: max,
            temporal: ALL_TEMPORAL,
        }
    } else {
        choice
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bwe::{allocate, KeyframeThrottle, LayerBitrate, Priority, TrackDemand};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn full(layer: u8) -> Option<LayerChoice> {
        Some(LayerChoice {
            layer,
            temporal: ALL_TEMPORAL,
        })
    }

    const TL0_ONLY: Option<LayerChoice> = Some(LayerChoice {
        layer: 0,
        temporal: 0,
    });

    fn key(layer: u8) -> FrameInfo {
        FrameInfo {
            layer,
            temporal: Some(0),
            keyframe: true,
            layer_sync: false,
        }
    }

    fn delta(layer: u8, temporal: u8) -> FrameInfo {
        FrameInfo {
            layer,
            temporal: Some(temporal),
            keyframe: false,
            layer_sync: false,
        }
    }

    fn sync(layer: u8, temporal: u8) -> FrameInfo {
        FrameInfo {
            layer_sync: true,
            ..delta(layer, temporal)
        }
    }

    /// Default tuning, but spatial steps down at once (most tests here are about what follows).
    fn no_grace() -> Tuning {
        Tuning {
            down_grace: Duration::ZERO,
            ..Tuning::default()
        }
    }

    /// When the rise being held would end.
    fn hold_end(s: &LayerSelector) -> Option<Instant> {
        s.rise.map(|r| r.since + r.hold)
    }

    /// A selector flowing on `layer` (allocation applied, keyframe seen) at `t0`.
    fn flowing(t0: Instant, layer: u8) -> LayerSelector {
        let mut s = LayerSelector::new(2, &no_grace());
        s.on_allocation(t0, full(layer));
        assert!(s.on_frame(key(layer)).switched);
        s
    }

    /// The allocation every 200 ms from `from` until `until`; returns when the target first reached
    /// `layer`.
    fn feed(
        s: &mut LayerSelector,
        from: Instant,
        until: Instant,
        alloc: Option<LayerChoice>,
        layer: u8,
    ) -> Option<Instant> {
        let mut t = from;
        let mut reached = None;
        while t < until {
            s.on_allocation(t, alloc);
            if reached.is_none() && s.target().is_some_and(|c| c.layer >= layer) {
                reached = Some(t);
            }
            t += ms(200);
        }
        reached
    }

    #[test]
    fn a_two_layer_climb_takes_one_hold_after_the_top_arrived() {
        let t0 = Instant::now();
        let hold = Tuning::default().up_hold;
        let mut s = flowing(t0, 0);
        // The estimate climbs: layer 1 fits after 1 s, layer 2 after 2 s.
        assert_eq!(feed(&mut s, t0 + ms(1000), t0 + ms(2000), full(1), 1), None);
        let top = feed(&mut s, t0 + ms(2000), t0 + ms(9000), full(2), 2);
        assert_eq!(
            top,
            Some(t0 + ms(2000) + hold),
            "one hold after layer 2 first fit"
        );
        assert_eq!(s.target(), full(2));
    }

    #[test]
    fn a_frame_rate_step_down_does_not_back_the_climb_off() {
        let t0 = Instant::now();
        let hold = Tuning::default().up_hold;
        let mut s = flowing(t0, 0);
        // Temporal layer 0 only for a moment (a backed-up queue, a dip): cheap to undo.
        s.on_allocation(t0 + ms(200), TL0_ONLY);
        s.on_allocation(t0 + ms(400), full(0));
        let up = feed(&mut s, t0 + ms(600), t0 + ms(8000), full(1), 1);
        assert_eq!(up, Some(t0 + ms(600) + hold), "no doubled hold");
        // A pause is a real step down: the next climb waits longer.
        let mut p = flowing(t0, 0);
        p.on_allocation(t0 + ms(200), None);
        p.on_allocation(t0 + ms(400), full(0));
        let up = feed(&mut p, t0 + ms(600), t0 + ms(12000), full(1), 1).expect("climbs");
        assert!(up > t0 + ms(600) + hold, "backed off after a pause");
    }

    #[test]
    fn first_allocation_applies_at_once_then_waits_for_a_keyframe() {
        let t0 = Instant::now();
        let mut s = LayerSelector::new(2, &no_grace());
        assert_eq!(
            s.on_frame(key(0)),
            FrameDecision::DROP,
            "nothing allocated yet"
        );
        s.on_allocation(t0, full(1));
        assert_eq!((s.target(), s.current()), (full(1), None));
        assert_eq!(
            s.keyframe_request(t0),
            Some(KeyframeRequest {
                layer: 1,
                waiting_since: t0
            })
        );
        assert_eq!(
            s.on_frame(delta(1, 0)),
            FrameDecision::DROP,
            "a delta frame cannot start a picture"
        );
        assert_eq!(s.on_frame(key(2)), FrameDecision::DROP, "above the target");
        assert_eq!(
            s.on_frame(key(1)),
            FrameDecision {
                forward: true,
                switched: true
            }
        );
        assert_eq!(s.current(), full(1));
        assert_eq!(
            s.keyframe_request(t0 + ms(600)),
            None,
            "nothing to wait for"
        );
        assert!(
            !s.on_frame(delta(0, 0)).forward,
            "other layers are not forwarded"
        );
    }

    #[test]
    fn step_down_is_immediate_and_brakes_the_old_layer_until_the_keyframe() {
        let t0 = Instant::now();
        let mut s = flowing(t0, 2);
        s.on_allocation(t0 + ms(100), full(0));
        assert_eq!(s.target(), full(0), "down within the same update");
        assert_eq!(
            s.current(),
            Some(LayerChoice {
                layer: 2,
                temporal: 0
            })
        );
        // The old layer keeps flowing, TL0 only, so the picture does not freeze.
        assert!(s.on_frame(delta(2, 0)).forward);
        assert!(!s.on_frame(delta(2, 1)).forward);
        assert!(!s.on_frame(delta(2, 2)).forward);
        assert_eq!(s.keyframe_request(t0 + ms(100)).map(|r| r.layer), Some(0));
        // A keyframe of h is on the way down: take it.
        assert!(s.on_frame(key(1)).switched);
        assert!(!s.on_frame(delta(2, 0)).forward);
        assert_eq!(
            s.keyframe_request(t0 + ms(200)),
            None,
            "asked less than an interval ago"
        );
        assert_eq!(
            s.keyframe_request(t0 + ms(600)).map(|r| r.layer),
            Some(0),
            "retry for the target"
        );
        assert_eq!(
            s.on_frame(key(0)),
            FrameDecision {
                forward: true,
                switched: true
            }
        );
        assert_eq!(s.current(), full(0));
        assert!(s.on_frame(delta(0, 2)).forward, "target is full frame rate");
    }

    #[test]
    fn an_overflowing_link_cuts_the_layer_being_left_altogether() {
        let t0 = Instant::now();
        let mut s = flowing(t0, 2);
        s.set_overflowing(true);
        // Still on the target: nothing changes.
        assert!(s.on_frame(delta(2, 0)).forward);
        s.on_allocation(t0 + ms(100), full(0));
        assert!(!s.on_frame(delta(2, 0)).forward, "not even TL0");
        assert_eq!(s.keyframe_request(t0 + ms(100)).map(|r| r.layer), Some(0));
        assert_eq!(
            s.on_frame(key(0)),
            FrameDecision {
                forward: true,
                switched: true
            }
        );
        assert!(s.on_frame(delta(0, 1)).forward);

        // Without the overflow, the layer being left keeps its TL0 until the keyframe.
        let mut s = flowing(t0, 2);
        s.on_allocation(t0 + ms(100), full(0));
        assert!(s.on_frame(delta(2, 0)).forward);
        // An overflow noticed meanwhile cuts it, for good: once frames are dropped, the next ones
        // would not decode, so even the overflow ending does not bring the old layer back.
        s.set_overflowing(true);
        assert!(!s.on_frame(delta(2, 0)).forward);
        s.set_overflowing(false);
        assert!(!s.on_frame(delta(2, 0)).forward);
        assert_eq!(s.current(), None);
        // The allocation returns to the old layer before the switch: it needs a keyframe now.
        s.on_allocation(t0 + ms(300), full(2));
        assert_eq!(s.target(), full(0), "a rise is held");
        assert!(!s.on_frame(key(2)).forward, "above the target");
        assert!(s.on_frame(key(0)).switched);
    }

    #[test]
    fn pause_is_immediate_and_resume_needs_hold_and_keyframe() {
        let t0 = Instant::now();
        let tuning = no_grace();
        let mut s = flowing(t0, 1);
        s.on_allocation(t0 + ms(10), None);
        assert_eq!((s.target(), s.current()), (None, None));
        assert!(!s.on_frame(key(1)).forward);
        assert_eq!(s.keyframe_request(t0 + ms(10)), None);

        let back = t0 + ms(1_000);
        s.on_allocation(back, full(0));
        let hold = (tuning.up_hold * 2).min(tuning.up_hold_max); // one recent down-step
        assert_eq!(hold_end(&s), Some(back + hold));
        s.handle_timeout(back + hold - ms(1));
        assert_eq!(s.target(), None);
        s.handle_timeout(back + hold);
        assert_eq!(s.target(), full(0));
        assert!(!s.on_frame(delta(0, 0)).forward);
        assert!(s.on_frame(key(0)).switched);
    }

    #[test]
    fn a_restart_waits_for_a_keyframe_asked_for_at_once() {
        let t0 = Instant::now();
        let mut s = LayerSelector::new(2, &no_grace());
        s.on_allocation(t0, full(1));
        // The keyframe that started the picture was asked for at t0: the next request would
        // wait out the keyframe interval.
        assert!(s.keyframe_request(t0).is_some());
        assert!(s.on_frame(key(1)).switched);
        assert!(s.on_frame(delta(1, 0)).forward);
        // The link is back from an outage: the decoder has nothing to build on.
        let back = t0 + ms(200);
        s.restart(back);
        assert_eq!((s.target(), s.current()), (full(1), None));
        assert_eq!(
            s.keyframe_request(back),
            Some(KeyframeRequest {
                layer: 1,
                waiting_since: back
            }),
            "at once, whatever was asked before"
        );
        assert!(!s.on_frame(delta(1, 0)).forward, "its deltas are of no use");
        // The lowest layer's keyframe, if it comes first, starts the picture sooner.
        assert!(s.on_frame(key(0)).switched);
        assert!(s.on_frame(delta(0, 0)).forward);
        // A paused track stays paused.
        let mut p = flowing(t0, 1);
        p.on_allocation(t0 + ms(10), None);
        p.restart(back);
        assert_eq!((p.target(), p.keyframe_request(back)), (None, None));
    }

    #[test]
    fn up_waits_for_the_hold_and_takes_the_lowest_allocation_seen() {
        let t0 = Instant::now();
        let up_hold = Tuning::default().up_hold;
        let mut s = flowing(t0, 0);
        s.on_allocation(t0 + ms(100), full(2));
        s.on_allocation(t0 + ms(1_100), full(1)); // dips but stays above the target
        s.on_allocation(t0 + ms(2_100), full(2));
        assert_eq!(s.target(), full(0));
        s.on_allocation(t0 + ms(100) + up_hold, full(2));
        assert_eq!(s.target(), full(1), "only what held for the whole hold");
        // f came back at 2.1 s: its own hold runs from then, past the first one's end.
        s.on_allocation(t0 + ms(100) + up_hold + ms(100), full(2));
        assert_eq!(s.target(), full(1));
        s.handle_timeout(t0 + ms(200) + up_hold * 2);
        assert_eq!(s.target(), full(2));
    }

    #[test]
    fn a_dip_to_the_target_restarts_the_hold() {
        let t0 = Instant::now();
        let up_hold = Tuning::default().up_hold;
        let mut s = flowing(t0, 0);
        s.on_allocation(t0, full(1));
        s.on_allocation(t0 + up_hold - ms(1), full(0));
        s.on_allocation(t0 + up_hold, full(1));
        assert_eq!(s.target(), full(0));
        assert_eq!(hold_end(&s), Some(t0 + up_hold * 2));
    }

    #[test]
    fn hold_backs_off_after_recent_down_steps_and_recovers() {
        let tuning = no_grace();
        let t0 = Instant::now();
        let mut s = flowing(t0, 2);
        let mut now = t0;
        let mut holds = Vec::new();
        for _ in 0..4 {
            now += ms(100);
            s.on_allocation(now, full(0)); // down
            now += ms(100);
            s.on_allocation(now, full(2)); // back up: how long does the climb wait?
            let hold = hold_end(&s).expect("rise held") - now;
            holds.push(hold);
            s.handle_timeout(now + hold - ms(1));
            assert_eq!(s.target(), full(0));
            now += hold;
            s.handle_timeout(now);
            assert_eq!(s.target(), full(2));
        }
        let max = tuning.up_hold_max;
        assert_eq!(holds, vec![(tuning.up_hold * 2).min(max), max, max, max]);
        // Quiet for the down memory: the next down-step counts as the first again.
        now += tuning.down_memory;
        s.on_allocation(now, full(0));
        now += ms(100);
        s.on_allocation(now, full(2));
        assert_eq!(
            hold_end(&s),
            Some(now + (tuning.up_hold * 2).min(tuning.up_hold_max))
        );
    }

    #[test]
    fn poll_timeout_covers_keyframe_requests_and_holds() {
        let t0 = Instant::now();
        let tuning = no_grace();
        let mut s = flowing(t0, 0);
        assert_eq!(s.poll_timeout(), None, "settled: nothing to wake up for");
        s.on_allocation(t0 + ms(100), full(1));
        assert_eq!(s.poll_timeout(), Some(t0 + ms(100) + tuning.up_hold));
        s.handle_timeout(t0 + ms(100) + tuning.up_hold);
        let switch_at = t0 + ms(100) + tuning.up_hold;
        assert_eq!(
            s.poll_timeout(),
            Some(switch_at),
            "request the keyframe now"
        );
        assert!(s.keyframe_request(switch_at).is_some());
        assert_eq!(
            s.poll_timeout(),
            Some(switch_at + tuning.keyframe_interval),
            "retry"
        );
        s.on_frame(key(1));
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn max_caps_the_target() {
        let t0 = Instant::now();
        let mut s = flowing(t0, 2);
        s.set_max(t0, 1);
        assert_eq!(s.target(), full(1));
        s.on_allocation(t0 + ms(10), full(2));
        assert_eq!(s.target(), full(1));
        assert_eq!(
            hold_end(&s),
            None,
            "an allocation above the cap is not a rise"
        );
        assert_eq!(s.recent_down_steps, 0, "a cap is not congestion");
        s.set_max(t0 + ms(20), 2);
        s.on_allocation(t0 + ms(20), full(2));
        assert_eq!(hold_end(&s), Some(t0 + ms(20) + Tuning::default().up_hold));
    }

    #[test]
    fn temporal_cap_forwards_tl0_only_and_climbs_back_on_layer_sync() {
        let t0 = Instant::now();
        let mut s = flowing(t0, 0);
        let pattern = [0u8, 2, 1, 2];
        let forwarded = |s: &mut LayerSelector| -> Vec<u8> {
            (0..8)
                .map(|i| pattern[i % 4])
                .filter(|&tl| s.on_frame(delta(0, tl)).forward)
                .collect()
        };
        assert_eq!(forwarded(&mut s), vec![0, 2, 1, 2, 0, 2, 1, 2]);

        s.on_allocation(t0 + ms(100), TL0_ONLY);
        assert_eq!(s.current(), TL0_ONLY);
        assert_eq!(
            forwarded(&mut s),
            vec![0, 0],
            "a quarter of the frames, half the bits"
        );
        assert_eq!(
            s.keyframe_request(t0 + ms(100)),
            None,
            "same spatial layer: no keyframe needed"
        );

        // Allocation returns to full rate: at once (same spatial layer, no hold), but the cap
        // lifts only at sync points.
        s.handle_timeout(t0 + ms(100));
        s.on_allocation(t0 + ms(200), full(0));
        assert_eq!(hold_end(&s), None);
        assert_eq!(s.target(), full(0));
        assert!(
            !s.on_frame(delta(0, 2)).forward,
            "TL2 may reference dropped TL1 frames"
        );
        assert!(
            !s.on_frame(delta(0, 1)).forward,
            "TL1 without sync may reference dropped TL1"
        );
        assert!(
            !s.on_frame(sync(0, 2)).forward,
            "one temporal layer at a time"
        );
        assert!(s.on_frame(sync(0, 1)).forward);
        assert!(s.on_frame(delta(0, 1)).forward);
        assert!(!s.on_frame(delta(0, 2)).forward);
        assert!(s.on_frame(sync(0, 2)).forward);
        assert_eq!(forwarded(&mut s), vec![0, 2, 1, 2, 0, 2, 1, 2]);

        // A keyframe restores every temporal layer at once.
        s.on_allocation(t0 + ms(99_000), TL0_ONLY);
        assert_eq!(forwarded(&mut s), vec![0, 0]);
        s.on_allocation(t0 + ms(99_100), full(0));
        assert!(!s.on_frame(delta(0, 1)).forward);
        assert!(s.on_frame(key(0)).forward);
        assert_eq!(forwarded(&mut s), vec![0, 2, 1, 2, 0, 2, 1, 2]);
    }

    #[test]
    fn frame_rate_rises_at_once_spatial_rises_after_the_hold() {
        let t0 = Instant::now();
        let half = |layer| Some(LayerChoice { layer, temporal: 1 });
        let mut s = LayerSelector::new(2, &no_grace());
        s.on_allocation(t0, TL0_ONLY);
        assert!(s.on_frame(key(0)).switched);
        s.on_allocation(t0 + ms(100), full(0));
        assert_eq!(s.target(), full(0), "same layer: no hold");
        s.on_allocation(t0 + ms(200), half(1));
        assert_eq!(s.target(), full(0), "a new spatial layer waits");
        let end = hold_end(&s).expect("holding");
        assert_eq!(end, t0 + ms(200) + Tuning::default().up_hold);
        s.handle_timeout(end);
        assert_eq!(s.target(), half(1));
        s.on_allocation(end + ms(100), full(1));
        assert_eq!(s.target(), full(1), "frame rate again at once");
    }

    #[test]
    fn a_backlog_keeps_temporal_layer_zero_only_until_it_drains() {
        let t0 = Instant::now();
        let mut s = flowing(t0, 1);
        s.set_backlogged(true);
        assert!(s.on_frame(delta(1, 0)).forward);
        assert!(!s.on_frame(delta(1, 2)).forward);
        assert!(!s.on_frame(delta(1, 1)).forward);
        assert_eq!(s.current().map(|c| c.temporal), Some(0));
        s.set_backlogged(false);
        assert!(
            !s.on_frame(delta(1, 2)).forward,
            "upper layers may reference dropped frames"
        );
        assert!(s.on_frame(sync(1, 1)).forward);
        assert!(s.on_frame(key(1)).forward);
        assert!(s.on_frame(delta(1, 2)).forward, "a keyframe restores all");
        assert_eq!(s.current(), full(1), "no spatial change");
    }

    #[test]
    fn half_frame_rate_forwards_temporal_layers_zero_and_one() {
        let t0 = Instant::now();
        let mut s = flowing(t0, 0);
        let half = Some(LayerChoice {
            layer: 0,
            temporal: 1,
        });
        s.on_allocation(t0 + ms(100), half);
        assert_eq!(s.current(), half);
        let pattern = [0u8, 2, 1, 2, 0, 2, 1, 2];
        let forwarded: Vec<u8> = pattern
            .iter()
            .copied()
            .filter(|&tl| s.on_frame(delta(0, tl)).forward)
            .collect();
        assert_eq!(forwarded, vec![0, 1, 0, 1], "half the frames");
    }

    #[test]
    fn frames_without_temporal_index_are_never_cut() {
        let t0 = Instant::now();
        let mut s = flowing(t0, 0);
        s.on_allocation(t0, TL0_ONLY);
        let plain = FrameInfo {
            layer: 0,
            temporal: None,
            keyframe: false,
            layer_sync: false,
        };
        assert!(s.on_frame(plain).forward);
    }

    // ---- Traces through allocate → select → keyframe throttle on simulated time. ----

    const CAMERA: u64 = 3;

    /// Audio with RED (64k), courseware (150k) and the teacher camera q/h/f (TL0 80k / 150k / 500k /
    /// 1.5M): 300 kbit/s pauses the camera, 700 kbit/s gives it q, 2 Mbit/s f.
    fn demands() -> Vec<TrackDemand> {
        let layer = |layer, bps, tl0_bps| LayerBitrate {
            layer,
            bps,
            tl0_bps,
            tl1_bps: None,
        };
        vec![
            TrackDemand {
                id: 1,
                priority: Priority::Audio,
                layers: vec![layer(0, 32_000, None)],
                max_layer: 0,
                redundancy: 1.0,
                partial_rates: true,
            },
            TrackDemand {
                id: 2,
                priority: Priority::Screen,
                layers: vec![layer(0, 150_000, None)],
                max_layer: 0,
                redundancy: 0.0,
                partial_rates: true,
            },
            TrackDemand {
                id: CAMERA,
                priority: Priority::TeacherCamera,
                layers: vec![
                    layer(0, 150_000, Some(80_000)),
                    layer(1, 500_000, None),
                    layer(2, 1_500_000, None),
                ],
                max_layer: 2,
                redundancy: 0.0,
                partial_rates: true,
            },
        ]
    }

    /// One subscriber of the camera over a timeline of estimates, with a publisher answering keyframe
    /// requests after `answer` and sending 30 fps on each layer.
    struct Trace {
        tuning: Tuning,
        selector: LayerSelector,
        throttle: KeyframeThrottle,
        answer: Duration,
        keyframe_due: [Option<Instant>; 3],
        /// (time, target, current) at each frame tick where target or current changed.
        log: Vec<(Instant, Option<LayerChoice>, Option<LayerChoice>)>,
        switches_on_non_keyframes: usize,
        target_changes: usize,
    }

    impl Trace {
        fn new() -> Self {
            let tuning = Tuning::default();
            Self {
                selector: LayerSelector::new(2, &tuning),
                throttle: KeyframeThrottle::new(&tuning),
                tuning,
                answer: ms(150),
                keyframe_due: [None; 3],
                log: Vec::new(),
                switches_on_non_keyframes: 0,
                target_changes: 0,
            }
        }

        /// Run from `start` for `duration` at `estimate`: an allocation every 200 ms (str0m's estimate
        /// cadence is of that order), a frame per layer every 33 ms.
        fn run(&mut self, start: Instant, duration: Duration, estimate: u64) {
            let frame_interval = ms(33);
            let mut now = start;
            let mut next_allocation = start;
            while now < start + duration {
                if now >= next_allocation {
                    let before = self.selector.target();
                    let allocation = allocate(estimate, &demands(), &self.tuning);
                    let choice = allocation
                        .tracks
                        .iter()
                        .find(|t| t.id == CAMERA)
                        .unwrap()
                        .choice;
                    self.selector.on_allocation(now, choice);
                    self.target_changes += usize::from(before != self.selector.target());
                    next_allocation += ms(200);
                }
                if let Some(request) = self.selector.keyframe_request(now) {
                    if self.throttle.request(
                        now,
                        CAMERA,
                        request.layer,
                        request.waiting_since,
                        ms(100),
                    ) {
                        self.keyframe_due[request.layer as usize].get_or_insert(now + self.answer);
                    }
                }
                for layer in 0..3u8 {
                    let keyframe = self.keyframe_due[layer as usize].is_some_and(|due| now >= due);
                    if keyframe {
                        self.keyframe_due[layer as usize] = None;
                        self.throttle.on_keyframe(now, CAMERA, layer);
                    }
                    let before = self.selector.current().map(|c| c.layer);
                    let frame = FrameInfo {
                        layer,
                        temporal: Some(0),
                        keyframe,
                        layer_sync: false,
                    };
                    let decision = self.selector.on_frame(frame);
                    let after = self.selector.current().map(|c| c.layer);
                    if before != after && after.is_some() && !keyframe {
                        self.switches_on_non_keyframes += 1;
                    }
                    assert_eq!(decision.switched, before != after && after.is_some());
                }
                let entry = (now, self.selector.target(), self.selector.current());
                if self
                    .log
                    .last()
                    .is_none_or(|last| (last.1, last.2) != (entry.1, entry.2))
                {
                    self.log.push(entry);
                }
                now += frame_interval;
            }
        }

        /// First time at or after `from` when `current` is `layer`.
        fn current_reaches(&self, from: Instant, layer: Option<LayerChoice>) -> Option<Instant> {
            self.log
                .iter()
                .find(|(t, _, current)| *t >= from && *current == layer)
                .map(|e| e.0)
        }

        fn target_reaches(&self, from: Instant, layer: Option<LayerChoice>) -> Option<Instant> {
            self.log
                .iter()
                .find(|(t, target, _)| *t >= from && *target == layer)
                .map(|e| e.0)
        }
    }

    #[test]
    fn step_down_2_mbps_to_300_kbps_and_recover() {
        let t0 = Instant::now();
        let tuning = Tuning::default();
        let mut trace = Trace::new();
        let seg = Duration::from_secs(20);
        trace.run(t0, seg, 2_000_000);
        trace.run(t0 + seg, seg, 300_000);
        trace.run(t0 + seg * 2, seg * 2, 2_000_000);

        // Expectations from the allocation itself, not a table: what does each estimate buy?
        let buys = |estimate| {
            let a = allocate(estimate, &demands(), &tuning);
            a.tracks.iter().find(|t| t.id == CAMERA).unwrap().choice
        };
        let (high, low) = (buys(2_000_000), buys(300_000));
        assert!(low < high);
        assert_eq!(
            low, None,
            "the fixture is meant to pause the camera at 300 kbit/s"
        );

        // Start: straight to the allocation, flowing after the first keyframe round trip.
        assert_eq!(trace.target_reaches(t0, high), Some(t0));
        let flowing = trace.current_reaches(t0, high).expect("started");
        assert!(
            flowing - t0 <= trace.answer + ms(66),
            "started after {:?}",
            flowing - t0
        );

        // Drop: with nothing but the estimate to go by (no overflow, no queue: those step down
        // at once), the target follows after the grace, within one allocation update (200 ms).
        let drop_at = t0 + seg;
        let down = trace.target_reaches(drop_at, low).expect("stepped down");
        let grace = tuning.down_grace;
        assert!(
            down - drop_at >= grace && down - drop_at < grace + ms(200),
            "down after {:?}",
            down - drop_at
        );
        let low_flowing = trace.current_reaches(drop_at, low).expect("switched down");
        assert!(low_flowing - drop_at <= grace + ms(200) + trace.answer + ms(66));

        // Recovery: no rise before the (backed-off) hold, and current follows only on keyframes.
        let recover_at = t0 + seg * 2;
        let up = trace.target_reaches(recover_at, high).expect("recovered");
        // One down-step, recent only if the low segment is shorter than the down memory.
        let hold = if seg >= tuning.down_memory {
            tuning.up_hold
        } else {
            (tuning.up_hold * 2).min(tuning.up_hold_max)
        };
        assert!(
            up - recover_at >= hold,
            "rose after only {:?}",
            up - recover_at
        );
        assert!(
            up - recover_at < hold + ms(200),
            "rose late: {:?}",
            up - recover_at
        );
        assert!(
            trace
                .current_reaches(recover_at, high)
                .expect("flowing high")
                >= up + trace.answer
        );
        assert_eq!(trace.switches_on_non_keyframes, 0);
        // One change down, one up (plus the start).
        assert_eq!(trace.target_changes, 3);
    }

    #[test]
    fn a_short_dip_keeps_the_layer_and_congestion_steps_down_at_once() {
        let t0 = Instant::now();
        let tuning = Tuning::default();
        let grace = tuning.down_grace;
        let mut s = LayerSelector::new(2, &tuning);
        s.on_allocation(t0, full(1));
        assert!(s.on_frame(key(1)).switched);
        // A dip shorter than the grace: nothing moves, and no back-off is noted.
        s.on_allocation(t0 + ms(200), full(0));
        assert_eq!(s.poll_timeout(), Some(t0 + ms(200) + grace));
        s.on_allocation(t0 + ms(200) + grace / 2, full(0));
        assert_eq!(s.target(), full(1));
        s.on_allocation(t0 + ms(400) + grace / 2, full(1));
        assert_eq!(s.poll_timeout(), None, "the dip is over");
        // A frame-rate step down needs no keyframe: at once.
        let t1 = t0 + Duration::from_secs(2);
        s.on_allocation(
            t1,
            Some(LayerChoice {
                layer: 1,
                temporal: 1,
            }),
        );
        assert_eq!(
            s.target(),
            Some(LayerChoice {
                layer: 1,
                temporal: 1
            })
        );
        // A drop that lasts the grace steps down when it ends (the timeout re-applies it).
        s.on_allocation(t1 + ms(200), full(0));
        assert_eq!(s.target().map(|t| t.layer), Some(1));
        s.handle_timeout(t1 + ms(200) + grace);
        assert_eq!(s.target(), full(0));
        assert_eq!(s.recent_down_steps, 1, "the dip before was not one");
        // Congestion does not wait: a backed-up queue, or an overflowing link.
        let mut backed_up = LayerSelector::new(2, &tuning);
        backed_up.on_allocation(t0, full(1));
        backed_up.set_backlogged(true);
        backed_up.on_allocation(t0 + ms(200), full(0));
        assert_eq!(backed_up.target(), full(0));
        let mut overflowing = LayerSelector::new(2, &tuning);
        overflowing.on_allocation(t0, full(2));
        overflowing.set_overflowing(true);
        overflowing.on_allocation(t0 + ms(200), None);
        assert_eq!(overflowing.target(), None);
    }

    #[test]
    fn an_oscillating_estimate_does_not_flap_layers() {
        // GCC-style sawtooth: 2 Mbit/s and 700 kbit/s alternating every 2 s for a minute.
        let t0 = Instant::now();
        let mut trace = Trace::new();
        let mut start = t0;
        for i in 0..30 {
            let estimate = if i % 2 == 0 { 2_000_000 } else { 700_000 };
            trace.run(start, Duration::from_secs(2), estimate);
            start += Duration::from_secs(2);
        }
        // Start high, go down at the first low phase, then stay: no phase lasts a hold.
        assert_eq!(
            trace.target_changes,
            2,
            "log: {:?}",
            trace.log.iter().map(|e| e.1).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_slow_oscillation_climbs_with_growing_holds() {
        // Phases longer than any hold but within the down memory, so the selector climbs each
        // time, each time later.
        let t0 = Instant::now();
        let tuning = Tuning::default();
        let mut trace = Trace::new();
        let phase = Duration::from_secs(8);
        assert!(phase > tuning.up_hold_max && phase < tuning.down_memory);
        for i in 0..8u32 {
            let estimate = if i % 2 == 0 { 2_000_000 } else { 700_000 };
            trace.run(t0 + phase * i, phase, estimate);
        }
        let high = allocate(2_000_000, &demands(), &tuning)
            .tracks
            .iter()
            .find(|t| t.id == CAMERA)
            .unwrap()
            .choice;
        let mut delays = Vec::new();
        for i in (2..8u32).step_by(2) {
            let rise_from = t0 + phase * i;
            let up = trace
                .target_reaches(rise_from, high)
                .expect("climbed in a long high phase");
            delays.push((up - rise_from).as_millis() / 200 * 200); // to the allocation cadence
        }
        let expected_hold = |h: Duration| h.as_millis().div_ceil(200) * 200;
        assert_eq!(
            delays,
            vec![
                expected_hold((tuning.up_hold * 2).min(tuning.up_hold_max)),
                expected_hold(tuning.up_hold_max),
                expected_hold(tuning.up_hold_max)
            ]
        );
    }
}
