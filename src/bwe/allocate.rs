//! Priority allocation of one subscriber's estimate across its tracks.
//!
//! The shape of mediasoup's `DistributeAvailableOutgoingBitrate` with LiveKit's names: `prepare` turns
//! each track into a ladder of steps, the rounds in [`allocate`] climb the ladders (round robin by
//! priority), `commit` reports the result. Rules:
//! - audio is always allocated, even above the budget: silence is worse than any congestion it adds;
//! - round 0 gives each video track its lowest step (TL0 of its lowest layer when the layer carries
//!   temporal layers), round 1 the full frame rate of that layer; in these base rounds priority is
//!   strict: when a track's step does not fit, lower-priority tracks do not take that step either,
//!   so lower-priority video pauses (or drops to TL0) first;
//! - higher layers (rounds 2 and up) start only once every video track has its lowest layer at full
//!   frame rate; then each round offers every track its next layer, and a layer that does not fit
//!   ends that track's climb while cheaper steps of other tracks may still fit (mediasoup).

use super::Tuning;

/// Priority class of a track; declaration order is allocation order, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Any audio track (teacher or classroom).
    Audio,
    /// Courseware: the teacher's screen share.
    Screen,
    /// The teacher's camera.
    TeacherCamera,
    /// The camera of the classroom that is called on.
    CalledOn,
    /// Any other classroom camera.
    Classroom,
}

/// Measured bitrate of one simulcast layer as the publisher sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerBitrate {
    /// Spatial layer index, 0 = lowest.
    pub layer: u8,
    /// Bits per second at full frame rate.
    pub bps: u64,
    /// Bits per second of temporal layer 0 alone, when the layer carries higher temporal layers.
    pub tl0_bps: Option<u64>,
    /// Bits per second of temporal layers 0 and 1, when the layer carries three.
    pub tl1_bps: Option<u64>,
}

impl LayerBitrate {
    /// A layer without temporal layers (audio, or video that carries none).
    pub fn plain(layer: u8, bps: u64) -> Self {
        Self {
            layer,
            bps,
            tl0_bps: None,
            tl1_bps: None,
        }
    }
}

/// One track this subscriber receives, as the allocator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackDemand {
    /// Opaque track id, echoed in the result.
    pub id: u64,
    /// Priority class.
    pub priority: Priority,
    /// Layers the publisher sends now, ascending; audio has one.
    pub layers: Vec<LayerBitrate>,
    /// Highest spatial layer the subscriber wants (its tile size).
    pub max_layer: u8,
    /// Repair traffic on top of the media as a fraction of it (audio RED at distance 1: about 1.0;
    /// video RTX under loss: about the loss rate). Counted inside the allocation.
    pub redundancy: f64,
    /// Whether a higher layer may be taken at part of its frame rate (TL0+TL1 of three temporal
    /// layers). Not on a link that loses packets faster than NACK repairs them: half of a
    /// half-rate stream's frames are base-layer frames, each of which every later frame needs,
    /// so each loss freezes the picture until it is repaired; at the full rate three frames in
    /// four can be lost alone.
    pub partial_rates: bool,
}

/// The highest temporal layer of "every temporal layer": full frame rate.
pub const ALL_TEMPORAL: u8 = u8::MAX;

/// A spatial layer and the highest temporal layer sent of it.
/// Orders from cheapest to dearest: `(0, TL0) < (0, all) < (1, TL1) < (1, all) < …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LayerChoice {
    /// Spatial layer index.
    pub layer: u8,
    /// Highest temporal layer forwarded: 0 is a quarter of the frame rate of three temporal
    /// layers (about half the bitrate), 1 half of it, [`ALL_TEMPORAL`] all of it.
    pub temporal: u8,
}

impl LayerChoice {
    /// `layer` at its full frame rate.
    pub fn full(layer: u8) -> Self {
        Self {
            layer,
            temporal: ALL_TEMPORAL,
        }
    }

    pub fn full_frame_rate(&self) -> bool {
        self.temporal == ALL_TEMPORAL
    }
}

/// The allocator's decision for one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackAllocation {
    /// The track's id from its [`TrackDemand`].
    pub id: u64,
    /// Layer to send, or `None`: paused.
    pub choice: Option<LayerChoice>,
    /// Bitrate counted for it, redundancy included.
    pub bps: u64,
}

/// Result of one allocation for one subscriber.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    /// One entry per input track, in input order.
    pub tracks: Vec<TrackAllocation>,
    /// What was handed out: the estimate × `Tuning::headroom`.
    pub budget_bps: u64,
    /// Sum of the tracks' bitrates; above the budget only when audio alone exceeds it.
    pub allocated_bps: u64,
    /// Estimate at which every track would get its top layer: str0m's desired bitrate for probing.
    pub desired_bps: u64,
    /// Estimate at which the next step that did not fit would fit: str0m's minimum, if wanted.
    pub next_step_bps: Option<u64>,
}

/// Rounds 0 and 1 give every video track its lowest layer (TL0, then full frame rate).
const BASE_ROUNDS: usize = 2;

/// Split `available_bps × tuning.headroom` across `tracks`.
pub fn allocate(available_bps: u64, tracks: &[TrackDemand], tuning: &Tuning) -> Allocation {
    let budget = (available_bps as f64 * tuning.headroom) as u64;
    let mut ladders = prepare(tracks, tuning);
    let mut used: u64 = 0;
    let mut first_blocked_cost = None;

    for ladder in ladders.iter_mut().filter(|l| l.is_audio) {
        used += ladder.climb_to(1);
    }
    for round in 0.. {
        let in_base = round < BASE_ROUNDS;
        let base_complete = ladders
            .iter()
            .all(|l| l.is_audio || l.taken >= BASE_ROUNDS.min(l.steps.len()));
        if !in_base && !base_complete {
            break; // every video track gets its lowest layer before any gets a higher one
        }
        let mut blocked_below: Option<Priority> = None;
        let mut progressed = false;
        for ladder in ladders
            .iter_mut()
            .filter(|l| !l.is_audio && l.taken == round)
        {
            if blocked_below.is_some_and(|p| ladder.priority > p) {
                continue;
            }
            let Some(cost) = ladder.cost_of_step(round) else {
                continue;
            };
            if used + cost <= budget {
                used += ladder.climb_to(round + 1);
                progressed = true;
            } else {
                first_blocked_cost.get_or_insert(cost);
                if in_base {
                    blocked_below = Some(ladder.priority);
                }
            }
        }
        if !progressed {
            break;
        }
    }
    commit(
        tracks,
        &ladders,
        budget,
        used,
        first_blocked_cost,
        tuning.headroom,
    )
}

/// One step of a ladder: a layer choice and its total cost for the track, redundancy included.
#[derive(Debug, Clone, Copy)]
struct Step {
    choice: LayerChoice,
    bps: u64,
}

/// A track's steps from cheapest to dearest and how many it has taken (0: paused).
#[derive(Debug)]
struct Ladder {
    input_index: usize,
    priority: Priority,
    is_audio: bool,
    steps: Vec<Step>,
    taken: usize,
}

impl Ladder {
    fn bps(&self) -> u64 {
        self.taken.checked_sub(1).map_or(0, |i| self.steps[i].bps)
    }

    fn cost_of_step(&self, index: usize) -> Option<u64> {
        self.steps
            .get(index)
            .map(|s| s.bps.saturating_sub(self.bps()))
    }

    /// Take steps up to `count` and return the added bitrate.
    fn climb_to(&mut self, count: usize) -> u64 {
        let before = self.bps();
        self.taken = count.min(self.steps.len());
        self.bps() - before
    }
}

/// Build ladders sorted by priority (stable, so equal priorities keep input order).
/// Video steps: `[lowest TL0, lowest full, next layer at TL1, next layer full, …]` up to the cap; a
/// lowest layer without temporal layers repeats its full-rate step at no cost so that the base
/// rounds stay aligned across tracks.
fn prepare(tracks: &[TrackDemand], tuning: &Tuning) -> Vec<Ladder> {
    let mut ladders: Vec<Ladder> = tracks
        .iter()
        .enumerate()
        .map(|(input_index, track)| {
            let is_audio = track.priority == Priority::Audio;
            let floor = if is_audio {
                0
            } else {
                tuning.min_video_layer_bps
            };
            let with_repair = |bps: u64| (bps.max(floor) as f64 * (1.0 + track.redundancy)) as u64;
            let mut usable: Vec<&LayerBitrate> = track
                .layers
                .iter()
                .filter(|l| l.layer <= track.max_layer)
                .collect();
            if usable.is_empty() {
                // A cap below every layer sent still gets the lowest one: a big picture beats none.
                usable.extend(track.layers.first());
            }
            let mut steps = Vec::with_capacity(usable.len() + 1);
            if is_audio {
                steps.extend(usable.last().map(|l| Step {
                    choice: full(l.layer),
                    bps: with_repair(l.bps),
                }));
            } else if let Some(lowest) = usable.first() {
                // The lowest layer's first step is its TL0 alone: base rounds stay two steps.
                match lowest.tl0_bps {
                    Some(tl0_bps) => steps.push(Step {
                        choice: LayerChoice {
                            layer: lowest.layer,
                            temporal: 0,
                        },
                        bps: with_repair(tl0_bps),
                    }),
                    None => steps.push(Step {
                        choice: full(lowest.layer),
                        bps: with_repair(lowest.bps),
                    }),
                }
                for (i, layer) in usable.iter().enumerate() {
                    let last = steps.last().map_or(0, |s| s.bps);
                    // Higher layers at half their frame rate fill the gap below their full rate
                    // (a 2 Mbit/s link takes 1280 px at 15 fps rather than 640 px at 30): TL0+TL1
                    // of three temporal layers, or TL0 of two.
                    let half = layer
                        .tl1_bps
                        .map(|bps| (1, bps))
                        .or(layer.tl0_bps.map(|bps| (0, bps)));
                    let half = half.filter(|_| i > 0 && track.partial_rates);
                    if let Some((temporal, partial_bps)) = half {
                        let bps = with_repair(partial_bps);
                        if bps > last {
                            steps.push(Step {
                                choice: LayerChoice {
                                    layer: layer.layer,
                                    temporal,
                                },
                                bps,
                            });
                        }
                    }
                    let last = steps.last().map_or(0, |s| s.bps);
                    steps.push(Step {
                        choice: full(layer.layer),
                        bps: with_repair(layer.bps).max(last),
                    });
                }
            }
            Ladder {
                input_index,
                priority: track.priority,
                is_audio,
                steps,
                taken: 0,
            }
        })
        .collect();
    ladders.sort_by_key(|l| l.priority);
    ladders
}

fn full(layer: u8) -> LayerChoice {
    LayerChoice::full(layer)
}

/// Report each track's step in input order, and the estimates that would buy more.
fn commit(
    tracks: &[TrackDemand],
    ladders: &[Ladder],
    budget: u64,
    used: u64,
    first_blocked_cost: Option<u64>,
    headroom: f64,
) -> Allocation {
    let mut out: Vec<TrackAllocation> = tracks
        .iter()
        .map(|t| TrackAllocation {
            id: t.id,
            choice: None,
            bps: 0,
        })
        .collect();
    for ladder in ladders {
        let slot = &mut out[ladder.input_index];
        slot.choice = ladder.taken.checked_sub(1).map(|i| ladder.steps[i].choice);
        slot.bps = ladder.bps();
    }
    let at_max: u64 = ladders
        .iter()
        .filter_map(|l| l.steps.last())
        .map(|s| s.bps)
        .sum();
    let estimate_for = |bps: u64| (bps as f64 / headroom).ceil() as u64;
    Allocation {
        tracks: out,
        budget_bps: budget,
        allocated_bps: used,
        desired_bps: estimate_for(at_max),
        next_step_bps: first_blocked_cost.map(|cost| estimate_for(used + cost)),
    }
}

impl Allocation {
    /// The rate str0m should keep the link busy at, with padding where media falls short (its
    /// `minimum`; str0m never pads above its estimate): what is allocated, or, while a video track
    /// is paused, what resuming it needs. A paused subscriber sends audio alone, and an estimator
    /// learns nothing above the rate it sees acknowledged: without padding the estimate stayed
    /// under the lowest layer for 16 s of a collapse's 30 s after the link had settled.
    pub fn sustain_bps(&self) -> u64 {
        let paused = self.tracks.iter().any(|t| t.choice.is_none());
        match self.next_step_bps {
            Some(resume) if paused => resume.max(self.allocated_bps),
            _ => self.allocated_bps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIO: u64 = 1;
    const SCREEN: u64 = 2;
    const CAMERA: u64 = 3;
    const CALLED_ON: u64 = 4;

    fn video(
        id: u64,
        priority: Priority,
        layers: &[(u64, Option<u64>)],
        max_layer: u8,
    ) -> TrackDemand {
        TrackDemand {
            id,
            priority,
            layers: layers
                .iter()
                .enumerate()
                .map(|(i, &(bps, tl0_bps))| LayerBitrate {
                    layer: i as u8,
                    bps,
                    tl0_bps,
                    tl1_bps: None,
                })
                .collect(),
            max_layer,
            redundancy: 0.0,
            partial_rates: true,
        }
    }

    fn audio(id: u64, bps: u64, redundancy: f64) -> TrackDemand {
        TrackDemand {
            id,
            priority: Priority::Audio,
            layers: vec![LayerBitrate::plain(0, bps)],
            max_layer: 0,
            redundancy,
            partial_rates: true,
        }
    }

    /// A lesson as a village sees it: teacher audio with RED, courseware in one layer, the teacher
    /// camera in q/h/f with temporal layers, and the called-on classroom in q/h.
    fn lesson() -> Vec<TrackDemand> {
        vec![
            // Listed out of priority order on purpose: the allocator must sort.
            video(
                CALLED_ON,
                Priority::CalledOn,
                &[(120_000, Some(65_000)), (450_000, None)],
                1,
            ),
            audio(AUDIO, 32_000, 1.0),
            video(
                CAMERA,
                Priority::TeacherCamera,
                &[(150_000, Some(80_000)), (500_000, None), (1_500_000, None)],
                2,
            ),
            video(SCREEN, Priority::Screen, &[(150_000, None)], 0),
        ]
    }

    fn choice_of(allocation: &Allocation, id: u64) -> Option<LayerChoice> {
        allocation
            .tracks
            .iter()
            .find(|t| t.id == id)
            .expect("track in result")
            .choice
    }

    fn demand_of(tracks: &[TrackDemand], id: u64) -> &TrackDemand {
        tracks.iter().find(|t| t.id == id).expect("track in input")
    }

    /// Expected `(layer, full_frame_rate)`, or `None`: paused.
    type Expect = Option<(u8, bool)>;
    const TL0: Expect = Some((0, false));
    fn layer(l: u8) -> Expect {
        Some((l, true))
    }

    #[test]
    fn a_higher_layer_at_half_frame_rate_fills_the_gap_below_its_full_rate() {
        let tuning = Tuning::default();
        let camera = |tl1: Option<u64>| {
            let mut v = video(
                CAMERA,
                Priority::TeacherCamera,
                &[(150_000, Some(60_000)), (500_000, None), (1_000_000, None)],
                2,
            );
            v.layers[2].tl1_bps = tl1;
            vec![audio(AUDIO, 32_000, 1.0), v]
        };
        // 800 kbit/s × 0.95 headroom − 64 kbit/s of audio: the top layer's 600 kbit/s TL0+TL1 fits,
        // its full rate does not.
        let with_tl1 = allocate(800_000, &camera(Some(600_000)), &tuning);
        assert_eq!(
            choice_of(&with_tl1, CAMERA),
            Some(LayerChoice {
                layer: 2,
                temporal: 1
            })
        );
        assert_eq!(with_tl1.allocated_bps, 664_000);
        let without = allocate(800_000, &camera(None), &tuning);
        assert_eq!(choice_of(&without, CAMERA), Some(LayerChoice::full(1)));
        // A lossy link with a long round trip is offered full frame rates only.
        let mut lossy = camera(Some(600_000));
        lossy[1].partial_rates = false;
        let lossy = allocate(800_000, &lossy, &tuning);
        assert_eq!(choice_of(&lossy, CAMERA), Some(LayerChoice::full(1)));
        // A TL1 rate no dearer than the layer below is no step at all.
        let cheap = allocate(800_000, &camera(Some(400_000)), &tuning);
        assert_eq!(choice_of(&cheap, CAMERA), Some(LayerChoice::full(1)));
        // Two temporal layers: TL0 alone is the half-rate step.
        let mut two_layers = camera(None);
        two_layers[1].layers[2].tl0_bps = Some(600_000);
        assert_eq!(
            choice_of(&allocate(800_000, &two_layers, &tuning), CAMERA),
            Some(LayerChoice {
                layer: 2,
                temporal: 0
            })
        );
        // Enough for everything: the full rate.
        let rich = allocate(2_000_000, &camera(Some(600_000)), &tuning);
        assert_eq!(choice_of(&rich, CAMERA), Some(LayerChoice::full(2)));
    }

    #[test]
    fn a_paused_track_keeps_the_link_busy_at_what_resuming_it_needs() {
        let tuning = Tuning::default();
        let camera = video(
            CAMERA,
            Priority::TeacherCamera,
            &[(150_000, Some(60_000)), (500_000, None)],
            1,
        );
        let tracks = vec![audio(AUDIO, 32_000, 1.0), camera];
        // 100 kbit/s × 0.95 headroom: audio with RED (64 kbit/s) fits, the camera's TL0 does not.
        let paused = allocate(100_000, &tracks, &tuning);
        assert_eq!(choice_of(&paused, CAMERA), None);
        assert_eq!(paused.allocated_bps, 64_000);
        let resume = paused.next_step_bps.expect("a step did not fit");
        assert_eq!(paused.sustain_bps(), resume);
        assert!(allocate(resume, &tracks, &tuning)
            .tracks
            .iter()
            .all(|t| t.choice.is_some()));
        // Flowing, with a higher step blocked: only what is allocated (padding up to the next
        // step would fill every weak link to its estimate for a layer it may never take).
        let flowing = allocate(300_000, &tracks, &tuning);
        assert!(choice_of(&flowing, CAMERA).is_some());
        assert!(flowing.next_step_bps.is_some());
        assert_eq!(flowing.sustain_bps(), flowing.allocated_bps);
    }

    #[test]
    fn lesson_table_from_100_kbps_to_5_mbps() {
        // Expected rows follow from the fixture by hand: audio 64k (RED doubles 32k); screen base 150k;
        // camera TL0 80k, q 150k, h 500k, f 1.5M; called-on TL0 65k, q 120k, h 450k; budget = 0.95 × estimate.
        let rows: &[(u64, Expect, Expect, Expect)] = &[
            // estimate,  screen,   camera,   called-on
            (100_000, None, None, None),        // budget 95k: audio only
            (250_000, layer(0), None, None),    // 214k ≤ 237.5k
            (350_000, layer(0), TL0, None),     // +80k = 294k ≤ 332.5k
            (450_000, layer(0), TL0, TL0),      // +65k = 359k ≤ 427.5k
            (500_000, layer(0), layer(0), TL0), // +70k = 429k ≤ 475k
            (600_000, layer(0), layer(0), layer(0)), // +55k = 484k ≤ 570k
            (1_000_000, layer(0), layer(1), layer(0)), // +350k = 834k ≤ 950k
            (1_200_000, layer(0), layer(1), layer(0)), // called-on h would need 1164k > 1140k
            (1_500_000, layer(0), layer(1), layer(1)), // 1164k ≤ 1425k
            (3_000_000, layer(0), layer(2), layer(1)), // 2164k ≤ 2850k
            (5_000_000, layer(0), layer(2), layer(1)), // caps: called-on max h, screen one layer
        ];
        let tuning = Tuning::default();
        for &(estimate, screen, camera, called_on) in rows {
            let a = allocate(estimate, &lesson(), &tuning);
            let got = |id| choice_of(&a, id).map(|c| (c.layer, c.full_frame_rate()));
            assert_eq!(got(AUDIO), layer(0), "audio at {estimate}");
            assert_eq!(
                (got(SCREEN), got(CAMERA), got(CALLED_ON)),
                (screen, camera, called_on),
                "estimate {estimate}"
            );
        }
    }

    /// Invariants over a fine sweep; each is the rule it names, checked against the input, not a table.
    #[test]
    fn sweep_keeps_the_rules() {
        let tuning = Tuning::default();
        let tracks = lesson();
        let step_bps = |t: &TrackDemand, c: LayerChoice| {
            let l = t.layers.iter().find(|l| l.layer == c.layer).unwrap();
            let raw = if c.full_frame_rate() {
                l.bps
            } else {
                l.tl0_bps.unwrap()
            };
            (raw.max(tuning.min_video_layer_bps) as f64 * (1.0 + t.redundancy)) as u64
        };
        let mut previous_total = 0;
        for estimate in (100_000..=5_000_000).step_by(25_000) {
            let a = allocate(estimate, &tracks, &tuning);
            let budget = (estimate as f64 * tuning.headroom) as u64;
            let videos: Vec<(&TrackDemand, Option<LayerChoice>)> = tracks
                .iter()
                .filter(|t| t.priority != Priority::Audio)
                .map(|t| (t, choice_of(&a, t.id)))
                .collect();

            // Audio is always allocated.
            assert!(
                choice_of(&a, AUDIO).is_some(),
                "audio starved at {estimate}"
            );
            // The total is the sum of the parts and fits the budget unless audio alone does not.
            assert_eq!(a.allocated_bps, a.tracks.iter().map(|t| t.bps).sum::<u64>());
            let video_bps: u64 = a
                .tracks
                .iter()
                .filter(|t| t.id != AUDIO)
                .map(|t| t.bps)
                .sum();
            assert!(
                a.allocated_bps <= budget || video_bps == 0,
                "over budget at {estimate}"
            );
            assert!(
                a.allocated_bps >= previous_total,
                "less allocated with more estimate at {estimate}"
            );
            previous_total = a.allocated_bps;
            for (track, choice) in &videos {
                // Caps are honoured.
                assert!(
                    choice.is_none_or(|c| c.layer <= track.max_layer),
                    "cap broken at {estimate}"
                );
                // Lower priority degrades first: a paused track means every lower one is paused.
                if choice.is_none() {
                    for (other, other_choice) in &videos {
                        if other.priority > track.priority {
                            assert!(other_choice.is_none(), "priority inverted at {estimate}");
                        }
                    }
                }
            }
            // Lowest layer first: a track above its lowest layer means every track has its lowest at full rate.
            let lowest_full =
                |c: &Option<LayerChoice>| c.is_some_and(|c| c.layer > 0 || c.full_frame_rate());
            if videos.iter().any(|(_, c)| c.is_some_and(|c| c.layer > 0)) {
                assert!(
                    videos.iter().all(|(_, c)| lowest_full(c)),
                    "upgrade before base at {estimate}"
                );
            }
            // Nothing is left on the table once every track has its base: no next layer would fit.
            if videos.iter().all(|(_, c)| lowest_full(c)) {
                for (track, choice) in &videos {
                    let next = track
                        .layers
                        .iter()
                        .find(|l| l.layer > choice.unwrap().layer && l.layer <= track.max_layer);
                    if let Some(next) = next {
                        let cost = step_bps(
                            track,
                            LayerChoice {
                                layer: next.layer,
                                temporal: ALL_TEMPORAL,
                            },
                        ) - step_bps(track, choice.unwrap());
                        assert!(
                            a.allocated_bps + cost > budget,
                            "unused room for track {} at {estimate}",
                            track.id
                        );
                    }
                }
            }
            // The advertised next step does buy something.
            if let Some(next) = a.next_step_bps {
                assert!(next > estimate);
                assert!(
                    allocate(next, &tracks, &tuning).allocated_bps > a.allocated_bps,
                    "at {estimate}"
                );
            }
        }
    }

    #[test]
    fn desired_is_every_track_at_its_max_over_headroom() {
        let tuning = Tuning::default();
        let tracks = lesson();
        let at_max: u64 = tracks
            .iter()
            .map(|t| {
                let top = t
                    .layers
                    .iter()
                    .filter(|l| l.layer <= t.max_layer)
                    .map(|l| l.bps)
                    .max()
                    .unwrap();
                (top as f64 * (1.0 + t.redundancy)) as u64
            })
            .sum();
        let a = allocate(300_000, &tracks, &tuning);
        assert_eq!(
            a.desired_bps,
            (at_max as f64 / tuning.headroom).ceil() as u64
        );
        let rich = allocate(a.desired_bps, &tracks, &tuning);
        assert!(rich.tracks.iter().all(|t| {
            let demand = demand_of(&tracks, t.id);
            t.choice.map(|c| c.layer)
                == demand
                    .layers
                    .iter()
                    .map(|l| l.layer)
                    .filter(|&l| l <= demand.max_layer)
                    .max()
        }));
        assert_eq!(rich.next_step_bps, None);
    }

    #[test]
    fn audio_is_allocated_even_above_the_estimate() {
        let a = allocate(20_000, &lesson(), &Tuning::default());
        assert_eq!(choice_of(&a, AUDIO), Some(full(0)));
        assert_eq!(a.allocated_bps, 64_000);
        assert!(a
            .tracks
            .iter()
            .filter(|t| t.id != AUDIO)
            .all(|t| t.choice.is_none()));
    }

    #[test]
    fn redundancy_is_counted_inside_the_allocation() {
        // Budget 189k: plain audio 32k + screen 150k fits, audio with RED (64k) does not.
        let tuning = Tuning::default();
        let with = |redundancy| {
            let tracks = vec![
                audio(AUDIO, 32_000, redundancy),
                video(SCREEN, Priority::Screen, &[(150_000, None)], 0),
            ];
            allocate(210_000, &tracks, &tuning)
        };
        assert_eq!(choice_of(&with(0.0), SCREEN), Some(full(0)));
        assert_eq!(choice_of(&with(1.0), SCREEN), None);
        assert_eq!(with(1.0).allocated_bps, 64_000);
    }

    #[test]
    fn headroom_scales_the_budget() {
        let tracks = vec![
            audio(AUDIO, 32_000, 0.0),
            video(SCREEN, Priority::Screen, &[(150_000, None)], 0),
        ];
        let at = |headroom| {
            allocate(
                190_000,
                &tracks,
                &Tuning {
                    headroom,
                    ..Tuning::default()
                },
            )
        };
        assert_eq!(choice_of(&at(1.0), SCREEN), Some(full(0)));
        assert_eq!(choice_of(&at(0.9), SCREEN), None); // 182k > 171k
    }

    #[test]
    fn a_near_zero_layer_is_costed_at_the_floor() {
        // A static slide measures 5k: 37k would fit a 54k budget; at the 30k floor it is 62k.
        let tracks = vec![
            audio(AUDIO, 32_000, 0.0),
            video(SCREEN, Priority::Screen, &[(5_000, None)], 0),
        ];
        let tuning = Tuning::default();
        assert_eq!(choice_of(&allocate(60_000, &tracks, &tuning), SCREEN), None);
        let no_floor = Tuning {
            min_video_layer_bps: 0,
            ..Tuning::default()
        };
        assert_eq!(
            choice_of(&allocate(60_000, &tracks, &no_floor), SCREEN),
            Some(full(0))
        );
        assert_eq!(
            choice_of(&allocate(70_000, &tracks, &tuning), SCREEN),
            Some(full(0))
        );
    }

    #[test]
    fn equal_priorities_take_what_fits_in_input_order() {
        // Two plain classrooms: the first's base does not fit, the second's does; neither is "lower".
        let tracks = vec![
            audio(AUDIO, 32_000, 0.0),
            video(10, Priority::Classroom, &[(300_000, None)], 0),
            video(11, Priority::Classroom, &[(100_000, None)], 0),
        ];
        let a = allocate(200_000, &tracks, &Tuning::default());
        assert_eq!(
            (choice_of(&a, 10), choice_of(&a, 11)),
            (None, Some(full(0)))
        );
    }

    #[test]
    fn a_dear_upgrade_does_not_block_a_cheap_one_of_lower_priority() {
        // After bases (32k + 100k + 100k) the camera's h costs 400k, the classroom's 50k; budget 300k.
        let tracks = vec![
            audio(AUDIO, 32_000, 0.0),
            video(
                CAMERA,
                Priority::TeacherCamera,
                &[(100_000, None), (500_000, None)],
                1,
            ),
            video(
                CALLED_ON,
                Priority::CalledOn,
                &[(100_000, None), (150_000, None)],
                1,
            ),
        ];
        let tuning = Tuning {
            headroom: 0.9,
            ..Tuning::default()
        };
        let a = allocate(333_334, &tracks, &tuning);
        assert_eq!(
            (choice_of(&a, CAMERA), choice_of(&a, CALLED_ON)),
            (Some(full(0)), Some(full(1)))
        );
        assert_eq!(
            a.next_step_bps,
            Some(((282_000 + 400_000) as f64 / tuning.headroom).ceil() as u64)
        );
    }

    #[test]
    fn no_higher_layer_while_a_track_lacks_its_lowest_at_full_rate() {
        // Courseware's h costs only 20k more, the camera's full rate 70k; 50k is left after the TL0s.
        let tracks = vec![
            audio(AUDIO, 32_000, 0.0),
            video(
                SCREEN,
                Priority::Screen,
                &[(100_000, None), (120_000, None)],
                1,
            ),
            video(
                CAMERA,
                Priority::TeacherCamera,
                &[(150_000, Some(80_000))],
                0,
            ),
        ];
        let budget = 32_000 + 100_000 + 80_000 + 50_000;
        let tuning = Tuning::default();
        let a = allocate(
            (budget as f64 / tuning.headroom).ceil() as u64,
            &tracks,
            &tuning,
        );
        assert_eq!(
            choice_of(&a, CAMERA),
            Some(LayerChoice {
                layer: 0,
                temporal: 0
            })
        );
        assert_eq!(
            choice_of(&a, SCREEN),
            Some(full(0)),
            "h would come before the camera's base"
        );
    }

    #[test]
    fn caps_and_missing_layers() {
        let tuning = Tuning::default();
        let mut tracks = lesson();
        tracks
            .iter_mut()
            .find(|t| t.id == CAMERA)
            .unwrap()
            .max_layer = 1;
        let a = allocate(5_000_000, &tracks, &tuning);
        assert_eq!(choice_of(&a, CAMERA), Some(full(1)));

        // Publisher stopped sending q/h (its uplink dropped them): a cap of q still gets f, not nothing.
        let only_top = TrackDemand {
            layers: vec![LayerBitrate {
                layer: 2,
                bps: 400_000,
                tl0_bps: None,
                tl1_bps: None,
            }],
            ..video(CAMERA, Priority::TeacherCamera, &[], 0)
        };
        let a = allocate(1_000_000, &[audio(AUDIO, 32_000, 0.0), only_top], &tuning);
        assert_eq!(choice_of(&a, CAMERA), Some(full(2)));

        // A track with no layer at all (publisher not sending) is paused and costs nothing.
        let silent = video(CAMERA, Priority::TeacherCamera, &[], 2);
        let a = allocate(1_000_000, &[audio(AUDIO, 32_000, 0.0), silent], &tuning);
        assert_eq!(choice_of(&a, CAMERA), None);
        assert_eq!(a.allocated_bps, 32_000);
    }
}
