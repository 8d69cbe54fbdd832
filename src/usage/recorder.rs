//! Usage sessions as pure logic: events and time in, session state and rows to write out.
//! No clock, no I/O; [`super::service`] drives it.
//!
//! Definitions (also in the admin API description):
//! - connected time: the sum of the intervals between `Joined` and `Left` (or the lesson's end);
//!   gaps while a classroom is reconnecting are not counted;
//! - time per quality level: each `Sample` stands for the time since the previous sample (or the
//!   join), at most [`MAX_SAMPLE_GAP_MS`], so a stalled sampler does not invent hours;
//! - a `Joined` within the grace period after a `Left` continues the session and counts a
//!   reconnect; after the grace period the session is closed at the `Left`.

use std::collections::HashMap;

use super::event::{QualityLevel, UnixMillis, UsageEvent};
use crate::store::{LessonRecord, SessionRecord, Writes};

/// A sample covers at most this long (samples come every second).
pub const MAX_SAMPLE_GAP_MS: i64 = 2_000;

/// What one event did, for live counters (Prometheus) kept next to the recorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new session started.
    SessionStarted,
    /// A session continued after a reconnect.
    Reconnected,
    /// A sample was counted as this many milliseconds at `quality`.
    Sampled {
        ms: i64,
        quality: QualityLevel,
        bytes_in: u64,
        bytes_out: u64,
    },
    /// Recorded, nothing for live counters.
    Recorded,
    /// The event named no known open session (e.g. a sample before `Joined`) and was dropped.
    Ignored,
}

/// A fixed-bucket histogram for p95 without keeping samples.
#[derive(Debug, Clone)]
struct Hist {
    bucket: f64,
    counts: Vec<u32>,
    n: i64,
    sum: f64,
}

impl Hist {
    fn new(bucket: f64, buckets: usize) -> Hist {
        Hist {
            bucket,
            counts: vec![0; buckets + 1], // +1: overflow
            n: 0,
            sum: 0.0,
        }
    }

    fn add(&mut self, v: f64) {
        if !v.is_finite() || v < 0.0 {
            return;
        }
        let i = ((v / self.bucket) as usize).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.n += 1;
        self.sum += v;
    }

    fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    /// The upper edge of the bucket holding the 95th percentile (never under-reports).
    fn p95(&self) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((self.n as f64) * 0.95).ceil() as i64;
        let mut seen = 0i64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c as i64;
            if seen >= rank {
                return Some((i + 1) as f64 * self.bucket);
            }
        }
        None
    }
}

#[derive(Debug, Clone)]
struct Session {
    rec: SessionRecord,
    /// Connected since then; `None` while in the reconnect grace period.
    connected_since: Option<UnixMillis>,
    last_sample_at: Option<UnixMillis>,
    loss: Hist,
    rtt: Hist,
}

impl Session {
    fn snapshot(&self, now: UnixMillis) -> SessionRecord {
        let mut rec = self.rec.clone();
        if let Some(since) = self.connected_since {
            rec.connected_ms += (now - since).max(0);
        }
        rec.loss_samples = self.loss.n;
        rec.loss_mean = self.loss.mean();
        rec.loss_p95 = self.loss.p95();
        rec.rtt_samples = self.rtt.n;
        rec.rtt_mean_ms = self.rtt.mean();
        rec.rtt_p95_ms = self.rtt.p95();
        rec.checkpoint_at = now;
        rec
    }

    fn disconnect(&mut self, at: UnixMillis) {
        if let Some(since) = self.connected_since.take() {
            self.rec.connected_ms += (at - since).max(0);
            self.rec.left_at = Some(at);
        }
    }

    /// Ends the session at `at` (or at its disconnect if it was already in its grace period).
    fn close(mut self, at: UnixMillis) -> SessionRecord {
        self.disconnect(at);
        let end = self.rec.left_at.unwrap_or(at);
        let mut rec = self.snapshot(end);
        rec.is_open = false;
        rec.left_at = Some(end);
        rec
    }
}

#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// A reconnect within this long continues the session.
    pub grace_ms: i64,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig { grace_ms: 60_000 }
    }
}

type Key = (String, String); // (lesson, classroom)

#[derive(Debug, Default)]
pub struct Recorder {
    cfg: RecorderConfig,
    lessons: HashMap<String, LessonRecord>,
    sessions: HashMap<Key, Session>,
    closed: Writes,
    ignored: u64,
}

impl Recorder {
    pub fn new(cfg: RecorderConfig) -> Recorder {
        Recorder {
            cfg,
            ..Default::default()
        }
    }

    /// Open sessions (connected or in their grace period).
    pub fn open_sessions(&self) -> usize {
        self.sessions.len()
    }

    pub fn live_lessons(&self) -> usize {
        self.lessons.len()
    }

    /// Events dropped because they named no open session.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// Snapshot of one open session as of `now`.
    pub fn session(&self, lesson: &str, classroom: &str, now: UnixMillis) -> Option<SessionRecord> {
        self.sessions
            .get(&(lesson.to_string(), classroom.to_string()))
            .map(|s| s.snapshot(now))
    }

    pub fn handle(&mut self, ev: &UsageEvent) -> Outcome {
        match ev {
            UsageEvent::LessonStarted {
                lesson_id,
                title,
                host_classroom,
                invited,
                at,
            } => {
                let rec = LessonRecord {
                    id: lesson_id.clone(),
                    title: title.clone(),
                    host_classroom: host_classroom.clone(),
                    invited: invited.clone(),
                    started_at: *at,
                    ended_at: None,
                    checkpoint_at: *at,
                };
                // Written at once so a lesson that starts is never lost, even before a checkpoint.
                self.closed.lessons.push(rec.clone());
                self.lessons.insert(lesson_id.clone(), rec);
                Outcome::Recorded
            }
            UsageEvent::LessonEnded { lesson_id, at } => {
                let keys: Vec<Key> = self
                    .sessions
                    .keys()
                    .filter(|(l, _)| l == lesson_id)
                    .cloned()
                    .collect();
                for k in keys {
                    // The key was just listed.
                    let s = self.sessions.remove(&k).expect("listed session");
                    self.closed.sessions.push(s.close(*at));
                }
                match self.lessons.remove(lesson_id) {
                    Some(mut l) => {
                        l.ended_at = Some(*at);
                        l.checkpoint_at = *at;
                        self.closed.lessons.push(l);
                        Outcome::Recorded
                    }
                    None => {
                        self.ignored += 1;
                        Outcome::Ignored
                    }
                }
            }
            UsageEvent::Joined {
                lesson_id,
                classroom_id,
                at,
            } => {
                let key = (lesson_id.clone(), classroom_id.clone());
                // A session whose grace period ran out before this join (no tick came between)
                // is closed first; the join then starts a new one.
                let expired = self.sessions.get(&key).is_some_and(|s| {
                    s.connected_since.is_none()
                        && s.rec.left_at.is_some_and(|l| *at - l >= self.cfg.grace_ms)
                });
                if expired {
                    // Checked just above.
                    let s = self.sessions.remove(&key).expect("expired session");
                    self.closed.sessions.push(s.close(*at));
                }
                if let Some(s) = self.sessions.get_mut(&key) {
                    // A second connection while the first still counts (replaced link) is a
                    // reconnect without a gap.
                    s.disconnect(*at);
                    s.connected_since = Some(*at);
                    s.last_sample_at = None;
                    s.rec.left_at = None;
                    s.rec.reconnects += 1;
                    return Outcome::Reconnected;
                }
                let rec = SessionRecord {
                    id: uuid::Uuid::new_v4().to_string(),
                    lesson_id: lesson_id.clone(),
                    classroom_id: classroom_id.clone(),
                    joined_at: *at,
                    is_open: true,
                    checkpoint_at: *at,
                    ..Default::default()
                };
                let s = Session {
                    rec,
                    connected_since: Some(*at),
                    last_sample_at: None,
                    loss: Hist::new(0.005, 200),
                    rtt: Hist::new(5.0, 400),
                };
                // Written at once: a join survives a crash even before the first checkpoint.
                self.closed.sessions.push(s.snapshot(*at));
                self.sessions.insert(key, s);
                Outcome::SessionStarted
            }
            UsageEvent::Left {
                lesson_id,
                classroom_id,
                at,
            } => match self.session_mut(lesson_id, classroom_id) {
                Some(s) => {
                    s.disconnect(*at);
                    Outcome::Recorded
                }
                None => Outcome::Ignored,
            },
            UsageEvent::CalledOn {
                lesson_id,
                classroom_id,
                ..
            } => match self.session_mut(lesson_id, classroom_id) {
                Some(s) => {
                    s.rec.called_on += 1;
                    Outcome::Recorded
                }
                None => Outcome::Ignored,
            },
            UsageEvent::HandRaised {
                lesson_id,
                classroom_id,
                ..
            } => match self.session_mut(lesson_id, classroom_id) {
                Some(s) => {
                    s.rec.hands_raised += 1;
                    Outcome::Recorded
                }
                None => Outcome::Ignored,
            },
            UsageEvent::Sample {
                lesson_id,
                classroom_id,
                at,
                bytes_in,
                bytes_out,
                quality,
                loss,
                rtt_ms,
                freezes,
            } => {
                let Some(s) = self.session_mut(lesson_id, classroom_id) else {
                    return Outcome::Ignored;
                };
                s.rec.bytes_in = s.rec.bytes_in.saturating_add(*bytes_in as i64);
                s.rec.bytes_out = s.rec.bytes_out.saturating_add(*bytes_out as i64);
                s.rec.freezes += *freezes as i64;
                if let Some(l) = loss {
                    s.loss.add(f64::from(*l).min(1.0));
                }
                if let Some(r) = rtt_ms {
                    s.rtt.add(f64::from(*r));
                }
                let Some(since) = s.connected_since else {
                    // A late sample from a dropped link: bytes count, time does not.
                    return Outcome::Recorded;
                };
                let prev = s.last_sample_at.unwrap_or(since).max(since);
                let ms = (*at - prev).clamp(0, MAX_SAMPLE_GAP_MS);
                s.last_sample_at = Some((*at).max(prev));
                *match quality {
                    QualityLevel::Top => &mut s.rec.top_ms,
                    QualityLevel::Middle => &mut s.rec.middle_ms,
                    QualityLevel::Low => &mut s.rec.low_ms,
                    QualityLevel::AudioOnly => &mut s.rec.audio_only_ms,
                    QualityLevel::Paused => &mut s.rec.paused_ms,
                } += ms;
                Outcome::Sampled {
                    ms,
                    quality: *quality,
                    bytes_in: *bytes_in,
                    bytes_out: *bytes_out,
                }
            }
        }
    }

    fn session_mut(&mut self, lesson: &str, classroom: &str) -> Option<&mut Session> {
        // Allocation-free lookup would need a borrowed key type; events are rare enough.
        let s = self
            .sessions
            .get_mut(&(lesson.to_string(), classroom.to_string()));
        if s.is_none() {
            self.ignored += 1;
        }
        s
    }

    /// Closes sessions whose grace period has run out by `now`, at their disconnect time.
    pub fn tick(&mut self, now: UnixMillis) {
        let grace = self.cfg.grace_ms;
        let expired: Vec<Key> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.connected_since.is_none())
            .filter(|(_, s)| s.rec.left_at.is_some_and(|l| now - l >= grace))
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            // The key was just listed.
            let s = self.sessions.remove(&k).expect("listed session");
            self.closed.sessions.push(s.close(now));
        }
    }

    /// Rows that must be written now: new lessons and sessions, closed ones.
    pub fn take_closed(&mut self) -> Writes {
        std::mem::take(&mut self.closed)
    }

    /// Everything pending plus a snapshot of every open session and live lesson as of `now`.
    pub fn checkpoint(&mut self, now: UnixMillis) -> Writes {
        self.tick(now);
        let mut w = self.take_closed();
        w.sessions
            .extend(self.sessions.values().map(|s| s.snapshot(now)));
        w.lessons
            .extend(self.lessons.values().map(|l| LessonRecord {
                checkpoint_at: now,
                ..l.clone()
            }));
        w
    }

    /// Graceful shutdown: closes every session and lesson at `now`.
    pub fn close_all(&mut self, now: UnixMillis) -> Writes {
        for (_, s) in self.sessions.drain() {
            self.closed.sessions.push(s.close(now));
        }
        for (_, mut l) in self.lessons.drain() {
            l.ended_at = Some(now);
            l.checkpoint_at = now;
            self.closed.lessons.push(l);
        }
        self.take_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: &str = "lesson-1";

    fn joined(c: &str, at: i64) -> UsageEvent {
        UsageEvent::Joined {
            lesson_id: L.into(),
            classroom_id: c.into(),
            at,
        }
    }
    fn left(c: &str, at: i64) -> UsageEvent {
        UsageEvent::Left {
            lesson_id: L.into(),
            classroom_id: c.into(),
            at,
        }
    }
    fn sample(c: &str, at: i64, q: QualityLevel, loss: f32, rtt: f32) -> UsageEvent {
        UsageEvent::Sample {
            lesson_id: L.into(),
            classroom_id: c.into(),
            at,
            bytes_in: 1000,
            bytes_out: 3000,
            quality: q,
            loss: Some(loss),
            rtt_ms: Some(rtt),
            freezes: 0,
        }
    }
    fn last_row(w: &Writes, c: &str) -> SessionRecord {
        w.sessions
            .iter()
            .rev()
            .find(|s| s.classroom_id == c)
            .cloned()
            .unwrap()
    }

    #[test]
    fn reconnect_within_grace_continues_and_after_grace_splits() {
        let mut r = Recorder::new(RecorderConfig { grace_ms: 60_000 });
        assert_eq!(r.handle(&joined("a", 0)), Outcome::SessionStarted);
        r.handle(&left("a", 100_000));
        assert_eq!(r.handle(&joined("a", 130_000)), Outcome::Reconnected);
        r.handle(&left("a", 200_000));
        r.tick(259_999);
        assert_eq!(r.open_sessions(), 1, "still inside the grace period");
        r.tick(260_000);
        assert_eq!(r.open_sessions(), 0);
        let w = r.take_closed();
        let s = last_row(&w, "a");
        assert!(!s.is_open);
        assert_eq!(s.connected_ms, 170_000, "the 30 s gap is not counted");
        assert_eq!(s.reconnects, 1);
        assert_eq!(s.left_at, Some(200_000));

        // Rejoining after the grace period is a new session, even with no tick in between.
        r.handle(&joined("b", 0));
        r.handle(&left("b", 10_000));
        assert_eq!(r.handle(&joined("b", 70_000)), Outcome::SessionStarted);
        let w = r.take_closed();
        let closed: Vec<_> = w
            .sessions
            .iter()
            .filter(|s| s.classroom_id == "b" && !s.is_open)
            .collect();
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].connected_ms, closed[0].reconnects), (10_000, 0));
        assert!(last_row(&w, "b").is_open, "and a new one is open");
        assert_eq!(r.handle(&joined("a", 300_000)), Outcome::SessionStarted);
        let w = r.close_all(310_000);
        assert_eq!(last_row(&w, "b").connected_ms, 240_000);
        let s2 = last_row(&w, "a");
        assert_ne!(s2.id, s.id);
        assert_eq!(s2.connected_ms, 10_000);
    }

    #[test]
    fn samples_fill_quality_levels_and_stats() {
        let mut r = Recorder::new(RecorderConfig::default());
        r.handle(&joined("a", 0));
        for i in 1..=10 {
            let q = if i <= 6 {
                QualityLevel::Top
            } else {
                QualityLevel::Low
            };
            r.handle(&sample(
                "a",
                i * 1000,
                q,
                if i == 10 { 0.2 } else { 0.0 },
                100.0,
            ));
        }
        // A 30 s stall counts as one capped sample.
        r.handle(&sample("a", 40_000, QualityLevel::Paused, 0.0, 300.0));
        let s = r.session(L, "a", 40_000).unwrap();
        assert_eq!(s.top_ms, 6_000);
        assert_eq!(s.low_ms, 4_000);
        assert_eq!(s.paused_ms, MAX_SAMPLE_GAP_MS);
        assert_eq!(s.connected_ms, 40_000);
        assert_eq!(s.bytes_in, 11_000);
        assert_eq!(s.bytes_out, 33_000);
        assert!((s.loss_mean.unwrap() - 0.2 / 11.0).abs() < 1e-6);
        assert_eq!(s.loss_samples, 11);
        assert!(s.loss_p95.unwrap() > 0.19, "{:?}", s.loss_p95);
        assert!((s.rtt_mean_ms.unwrap() - 1300.0 / 11.0).abs() < 1e-3);
        assert_eq!(s.rtt_p95_ms, Some(305.0));
    }

    #[test]
    fn lesson_end_closes_sessions_and_unknown_events_are_ignored() {
        let mut r = Recorder::new(RecorderConfig::default());
        r.handle(&UsageEvent::LessonStarted {
            lesson_id: L.into(),
            title: "语文".into(),
            host_classroom: "h".into(),
            invited: vec!["a".into(), "b".into()],
            at: 0,
        });
        r.handle(&joined("h", 0));
        r.handle(&joined("a", 5_000));
        r.handle(&left("a", 20_000));
        r.handle(&UsageEvent::CalledOn {
            lesson_id: L.into(),
            classroom_id: "h".into(),
            at: 6_000,
        });
        assert_eq!(
            r.handle(&sample("zzz", 1_000, QualityLevel::Top, 0.0, 1.0)),
            Outcome::Ignored
        );
        assert_eq!(r.ignored(), 1);
        let cp = r.checkpoint(30_000);
        assert_eq!(cp.lessons.last().unwrap().checkpoint_at, 30_000);
        assert_eq!(
            last_row(&cp, "a").left_at,
            Some(20_000),
            "in grace: drop time kept"
        );
        assert!(last_row(&cp, "a").is_open);
        r.handle(&UsageEvent::LessonEnded {
            lesson_id: L.into(),
            at: 45_000,
        });
        let w = r.take_closed();
        assert_eq!(w.lessons[0].ended_at, Some(45_000));
        let h = last_row(&w, "h");
        assert_eq!((h.connected_ms, h.called_on, h.is_open), (45_000, 1, false));
        let a = last_row(&w, "a");
        assert_eq!((a.connected_ms, a.left_at), (15_000, Some(20_000)));
        assert_eq!(r.open_sessions() + r.live_lessons(), 0);
    }
}
