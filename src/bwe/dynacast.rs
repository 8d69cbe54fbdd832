//! Dynacast: which simulcast layers of one published track the publisher encodes, and what the
//! allocator may choose from among them.
//!
//! A layer is encoded while some subscriber takes it (its selector's target, or what still flows
//! to it), and for [`LINGER`] after the last one left it: a subscriber that steps down for a
//! moment finds it there when it climbs back, and the encoder is not restarted every few seconds.
//! Why by what is taken and not by what subscribers allow: Chromium encodes a simulcast layer
//! below the highest active one at 0.7–0.9 of its maxBitrate, the highest one at all of it. A
//! 1 Mbit/s classroom on the 640 px layer got 480–560 kbit/s of the 580–690 asked while the
//! 1280 px layer went to nobody (weak-link bench, village 4G); a village uplink saves the layer.
//!
//! A layer switched off is still offered to the allocator at the rate it was last measured at,
//! so a subscriber whose estimate grows takes it as before; its target switches it back on. For
//! [`WAKE`] after that, it stays priced at the remembered rate: the first second of a restarted
//! layer holds its keyframe and the encoder's ramp, and a price read from them would send the
//! subscriber straight back down. A layer whose rate was never measured is never switched off.
//! One its encoder starved (`LayerRates::choppy`) is not offered while off, and is tried again
//! after [`CHOPPY_RETRY`], twice as long after each try that finds it starved again.

use std::time::{Duration, Instant};

use super::{LayerBitrate, LayerRates, MAX_LAYERS};

/// How long a layer nobody takes any more is still encoded.
pub const LINGER: Duration = Duration::from_secs(4);
/// How long a layer stopped while its encoder starved it stays off before it is tried again
/// (switched on for [`LINGER`], not offered until it measures smooth): a teacher's picture that
/// got simpler may now fit its layer's rate.
pub const CHOPPY_RETRY: Duration = Duration::from_secs(60);
/// Longest wait between tries of a layer that stays starved. A try costs the layer below: while
/// a higher layer is encoded, Chromium sends the lower one at 0.7–0.9 of its maxBitrate (village
/// 4G bench: the 640 px layer fell from ~650 to ~450 kbit/s for the 4–5 s of each try).
pub const CHOPPY_RETRY_MAX: Duration = Duration::from_secs(600);
/// How long a layer switched back on is priced at its remembered rate: a 1 s rate window that
/// no longer holds the restart's keyframe, and the time the encoder takes to start it.
pub const WAKE: Duration = Duration::from_millis(2500);

/// Dynacast state of one published track.
#[derive(Debug, Clone, Default)]
pub struct Dynacast {
    layers: [LayerState; MAX_LAYERS],
}

#[derive(Debug, Clone, Copy)]
struct LayerState {
    on: bool,
    /// When a subscriber last took the layer.
    taken_at: Option<Instant>,
    /// When the layer was last switched on after being off.
    woken_at: Option<Instant>,
    /// Its rate the last time it was measured settled.
    remembered: Option<Remembered>,
    /// How long a starved layer waits before its next try.
    retry_after: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Remembered {
    rate: LayerBitrate,
    /// Its encoder starved it (`LayerRates::choppy`): not offered while off, as it was not
    /// before.
    choppy: bool,
}

impl Default for LayerState {
    fn default() -> Self {
        Self {
            on: true, // a publisher starts with every layer on
            taken_at: None,
            woken_at: None,
            remembered: None,
            retry_after: CHOPPY_RETRY,
        }
    }
}

impl LayerState {
    fn waking(&self, now: Instant) -> bool {
        self.woken_at
            .is_some_and(|t| now.saturating_duration_since(t) < WAKE)
    }
}

impl Dynacast {
    /// Once per adaptation tick: remembers each settled layer's rate (and whether it runs
    /// under `choppy_ratio` of the lowest layer's frame rate) and decides which of `count`
    /// layers to encode, given the highest layer any subscriber takes (`None`: none beyond the
    /// lowest). Returns the layers to encode when that changed.
    pub fn update(
        &mut self,
        now: Instant,
        rates: &LayerRates,
        taken: Option<u8>,
        count: usize,
        choppy_ratio: f64,
    ) -> Option<Vec<bool>> {
        let mut changed = false;
        for (index, layer) in self.layers.iter_mut().enumerate().take(count) {
            if layer.on && !layer.waking(now) {
                if let Some(rate) = rates.layer(now, index as u8).filter(|l| l.bps > 0) {
                    let choppy = rates.choppy(now, index as u8, choppy_ratio);
                    layer.remembered = Some(Remembered { rate, choppy });
                    if !choppy {
                        layer.retry_after = CHOPPY_RETRY;
                    }
                }
            }
            // A publisher's first moments count as taken: its layers linger, and are measured,
            // before any goes off.
            if taken.is_some_and(|t| index as u8 <= t) || layer.taken_at.is_none() {
                layer.taken_at = Some(now);
            }
            // A starved layer is tried again now and then, where someone takes the one below;
            // less often each time it is still starved (a smooth measurement resets the wait).
            let retry = !layer.on
                && layer.remembered.is_some_and(|r| r.choppy)
                && taken.is_some_and(|t| index as u8 <= t.saturating_add(1))
                && layer
                    .taken_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= layer.retry_after);
            if retry {
                layer.taken_at = Some(now);
                layer.retry_after = (layer.retry_after * 2).min(CHOPPY_RETRY_MAX);
            }
            let lingering = layer
                .taken_at
                .is_some_and(|t| now.saturating_duration_since(t) < LINGER);
            // The lowest layer always: a new subscriber starts at once. An unpriced layer too:
            // switched off, it could never be offered.
            let on = index == 0 || lingering || layer.remembered.is_none();
            if on && !layer.on {
                layer.woken_at = Some(now);
            }
            changed |= on != layer.on;
            layer.on = on;
        }
        changed.then(|| self.active(count))
    }

    /// Which of `count` layers the publisher encodes.
    pub fn active(&self, count: usize) -> Vec<bool> {
        (0..count)
            .map(|i| self.layers.get(i).is_none_or(|l| l.on))
            .collect()
    }

    /// The layers the allocator may choose from, ascending: those measured now, and those
    /// switched off (or waking) at their remembered rate; none that runs under `choppy_ratio`
    /// of the lowest layer's frame rate (a layer that restarts is judged by its memory, not by
    /// its first frames).
    pub fn offered(
        &self,
        now: Instant,
        rates: &LayerRates,
        choppy_ratio: f64,
    ) -> Vec<LayerBitrate> {
        (0..MAX_LAYERS)
            .filter_map(|index| {
                let state = &self.layers[index];
                match state.remembered {
                    Some(r) if !state.on || state.waking(now) => (!r.choppy).then_some(r.rate),
                    _ => rates
                        .layer(now, index as u8)
                        .filter(|_| !rates.choppy(now, index as u8, choppy_ratio)),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bwe::Tuning;

    const FRAME: Duration = Duration::from_millis(33);

    /// Frames of `bytes` on `layer` every 33 ms over `span`, from `from`.
    fn send(rates: &mut LayerRates, from: Instant, span: Duration, layer: u8, bytes: usize) {
        send_every(rates, from, span, layer, bytes, FRAME);
    }

    /// The top layer as its encoder starves it: a third of the frame rate at three times the
    /// frame size.
    fn send_starved(rates: &mut LayerRates, from: Instant, span: Duration) {
        send_every(rates, from, span, 2, SIZES[2] * 3, FRAME * 3);
    }

    fn send_every(
        rates: &mut LayerRates,
        from: Instant,
        span: Duration,
        layer: u8,
        bytes: usize,
        every: Duration,
    ) {
        let mut t = from;
        while t < from + span {
            rates.on_media(t, layer, None, bytes);
            rates.on_frame_end(t, layer);
            t += every;
        }
    }

    /// ~50, ~500 and ~1000 kbit/s on the three layers.
    const SIZES: [usize; 3] = [200, 2000, 4000];

    /// What the allocator is offered `layer` at.
    fn price(dynacast: &Dynacast, now: Instant, rates: &LayerRates, layer: u8) -> u64 {
        let offered = dynacast.offered(now, rates, 0.6);
        offered
            .iter()
            .find(|l| l.layer == layer)
            .expect("offered")
            .bps
    }

    fn all_layers(rates: &mut LayerRates, from: Instant, span: Duration) {
        for (layer, bytes) in SIZES.iter().enumerate() {
            send(rates, from, span, layer as u8, *bytes);
        }
    }

    #[test]
    fn a_layer_nobody_takes_is_switched_off_after_the_linger_and_offered_at_its_last_rate() {
        let t0 = Instant::now();
        let mut rates = LayerRates::new(&Tuning::default());
        let mut dynacast = Dynacast::default();
        all_layers(&mut rates, t0, Duration::from_secs(3));
        let now = t0 + Duration::from_secs(3);
        // Taken up to 640 px: the top layer is remembered but stays on through the linger.
        assert_eq!(dynacast.update(now, &rates, Some(1), 3, 0.6), None);
        let top = price(&dynacast, now, &rates, 2);
        assert!((900_000..1_100_000).contains(&top), "{top}");
        assert_eq!(
            dynacast.update(now + LINGER / 2, &rates, Some(1), 3, 0.6),
            None
        );
        let off = now + LINGER + Duration::from_millis(200);
        all_layers(&mut rates, now, off - now); // still encoded while it lingered
        assert_eq!(
            dynacast.update(off, &rates, Some(1), 3, 0.6),
            Some(vec![true, true, false])
        );
        // Off: nothing more of it arrives, and the lower ones go on.
        send(&mut rates, off, Duration::from_secs(5), 0, SIZES[0]);
        send(&mut rates, off, Duration::from_secs(5), 1, SIZES[1]);
        let later = off + Duration::from_secs(5);
        assert_eq!(dynacast.update(later, &rates, Some(1), 3, 0.6), None);
        assert!(rates.layer(later, 2).is_none(), "the meter forgot it");
        let offered = dynacast.offered(later, &rates, 0.6);
        assert_eq!(offered.len(), 3);
        assert_eq!(offered[2].bps, top, "priced at its last measured rate");
    }

    #[test]
    fn the_lowest_layer_and_a_layer_never_measured_stay_on() {
        let t0 = Instant::now();
        let mut rates = LayerRates::new(&Tuning::default());
        let mut dynacast = Dynacast::default();
        // Only the lowest layer ever arrives (a weak publisher uplink): nothing to price the
        // others by, so they are not switched off, and not offered.
        send(&mut rates, t0, Duration::from_secs(10), 0, SIZES[0]);
        let now = t0 + Duration::from_secs(10);
        for s in 0..10 {
            let at = now + Duration::from_secs(s);
            assert_eq!(dynacast.update(at, &rates, None, 3, 0.6), None);
        }
        assert_eq!(dynacast.active(3), vec![true, true, true]);
        assert_eq!(dynacast.offered(now, &rates, 0.6).len(), 1);
    }

    #[test]
    fn a_layer_taken_again_is_switched_on_at_once_and_priced_from_memory_while_it_wakes() {
        let t0 = Instant::now();
        let mut rates = LayerRates::new(&Tuning::default());
        let mut dynacast = Dynacast::default();
        all_layers(&mut rates, t0, Duration::from_secs(2));
        let mut now = t0 + Duration::from_secs(2);
        dynacast.update(now, &rates, Some(0), 3, 0.6);
        let remembered = price(&dynacast, now, &rates, 1);
        now += LINGER + Duration::from_secs(1);
        send(
            &mut rates,
            t0 + Duration::from_secs(2),
            now - t0 - Duration::from_secs(2),
            0,
            SIZES[0],
        );
        assert_eq!(
            dynacast.update(now, &rates, Some(0), 3, 0.6),
            Some(vec![true, false, false])
        );
        // The subscriber's target rises to the 640 px layer: on at the next tick.
        now += Duration::from_secs(1);
        assert_eq!(
            dynacast.update(now, &rates, Some(1), 3, 0.6),
            Some(vec![true, true, false])
        );
        // It restarts, and a subscriber's keyframe request comes 300 ms later: a keyframe 20
        // times the size of its frames. The measured rate jumps; the price does not.
        let restart = Duration::from_millis(300);
        send(&mut rates, now, restart, 1, SIZES[1]);
        let keyframe_at = now + restart;
        rates.on_media(keyframe_at, 1, None, 40_000);
        rates.on_frame_end(keyframe_at, 1);
        let in_wake = now + Duration::from_secs(1);
        send(
            &mut rates,
            keyframe_at + FRAME,
            in_wake - keyframe_at - FRAME,
            1,
            SIZES[1],
        );
        let measured = rates.layer(in_wake, 1).unwrap().bps;
        assert!(
            measured > remembered * 13 / 10,
            "{measured} vs {remembered}"
        );
        dynacast.update(in_wake, &rates, Some(1), 3, 0.6);
        assert_eq!(price(&dynacast, in_wake, &rates, 1), remembered);
        // After the wake, the layer is priced as measured again (and remembered afresh).
        let awake = now + WAKE + Duration::from_millis(100);
        send(
            &mut rates,
            in_wake + FRAME,
            awake - in_wake - FRAME,
            1,
            SIZES[1] * 2,
        );
        dynacast.update(awake, &rates, Some(1), 3, 0.6);
        let priced = price(&dynacast, awake, &rates, 1);
        assert!(priced > remembered * 3 / 2, "{priced} vs {remembered}");
    }

    #[test]
    fn a_layer_its_encoder_starved_is_not_offered_while_off() {
        let t0 = Instant::now();
        let mut rates = LayerRates::new(&Tuning::default());
        let mut dynacast = Dynacast::default();
        let span = Duration::from_secs(3);
        send(&mut rates, t0, span, 0, SIZES[0]);
        send(&mut rates, t0, span, 1, SIZES[1]);
        send_starved(&mut rates, t0, span);
        let now = t0 + span;
        dynacast.update(now, &rates, Some(1), 3, 0.6);
        let layers = |d: &Dynacast, at, r: &LayerRates| -> Vec<u8> {
            d.offered(at, r, 0.6).iter().map(|l| l.layer).collect()
        };
        assert_eq!(layers(&dynacast, now, &rates), vec![0, 1]);
        assert_eq!(
            dynacast.offered(now, &rates, 0.0).len(),
            3,
            "0 turns the rule off"
        );
        let off = now + LINGER + Duration::from_millis(100);
        send(&mut rates, now, off - now, 0, SIZES[0]);
        send(&mut rates, now, off - now, 1, SIZES[1]);
        assert_eq!(
            dynacast.update(off, &rates, Some(1), 3, 0.6),
            Some(vec![true, true, false])
        );
        assert_eq!(layers(&dynacast, off, &rates), vec![0, 1]);
        // A minute on, it is tried again: on, but offered only once it measures smooth.
        let retry = now + CHOPPY_RETRY;
        send(&mut rates, off, retry - off, 0, SIZES[0]);
        send(&mut rates, off, retry - off, 1, SIZES[1]);
        assert_eq!(
            dynacast.update(retry - FRAME, &rates, Some(1), 3, 0.6),
            None
        );
        assert_eq!(
            dynacast.update(retry, &rates, Some(1), 3, 0.6),
            Some(vec![true, true, true])
        );
        assert_eq!(layers(&dynacast, retry, &rates), vec![0, 1]);
        let smooth = retry + WAKE + Duration::from_millis(100);
        for layer in 0..3 {
            send(
                &mut rates,
                retry,
                smooth - retry,
                layer,
                SIZES[layer as usize],
            );
        }
        dynacast.update(smooth, &rates, Some(1), 3, 0.6);
        assert_eq!(layers(&dynacast, smooth, &rates), vec![0, 1, 2]);
    }

    #[test]
    fn a_layer_starved_at_every_try_is_tried_half_as_often_each_time() {
        let t0 = Instant::now();
        let mut rates = LayerRates::new(&Tuning::default());
        let mut dynacast = Dynacast::default();
        let step = Duration::from_millis(200);
        let mut tries = Vec::new();
        let mut t = t0;
        while t < t0 + Duration::from_secs(60 + 120 + 240 + 30) {
            send(&mut rates, t, step, 0, SIZES[0]);
            send(&mut rates, t, step, 1, SIZES[1]);
            if dynacast.active(3)[2] {
                send_starved(&mut rates, t, step);
            }
            t += step;
            if dynacast
                .update(t, &rates, Some(1), 3, 0.6)
                .is_some_and(|active| active[2])
            {
                tries.push(t - t0);
            }
        }
        let secs: Vec<u64> = tries.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs.len(), 3, "tries at {secs:?} s");
        let gaps: Vec<u64> = secs.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps, vec![120, 240], "tries at {secs:?} s");
        assert!(secs[0] >= CHOPPY_RETRY.as_secs(), "tries at {secs:?} s");
    }
}
