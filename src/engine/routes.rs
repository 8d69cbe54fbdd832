//! Media routes of a lesson: who receives which published track.
//!
//! - the teacher's tracks go to every classroom;
//! - every classroom's tracks go to the teacher;
//! - the called-on classroom's tracks also go to every other classroom.
//!
//! Routes are recomputed from the lesson state after every change (join, leave, call on, a new
//! published track) and applied as a diff: new subscriptions are offered, stale ones stopped at
//! once, so a departed track never lingers until ICE times out.

use std::time::Instant;

use crate::media::peer::{OutState, Subscribed, TrackKey, VideoOut};
use crate::media::rewrite::SeqRewriter;
use crate::signal::message::{MediaKind, SourceKind};
use crate::signal::ConnId;

use super::Engine;

/// First sequence number of an outgoing stream: low, so the stream starts without SRTP rollover.
const FIRST_OUT_SEQ: u64 = 1;

/// A published track and where it comes from.
#[derive(Debug, Clone)]
pub(crate) struct Offered {
    pub key: TrackKey,
    pub track_id: u64,
    pub kind: MediaKind,
    pub source: SourceKind,
    pub classroom_id: String,
    pub from_teacher: bool,
    pub layer_count: usize,
}

/// Whether a subscriber in the lesson receives a track. Pure: the rule table above.
pub(crate) fn receives(
    subscriber_is_teacher: bool,
    subscriber_classroom: &str,
    track: &Offered,
    called_on: Option<&str>,
) -> bool {
    if track.classroom_id == subscriber_classroom {
        return false;
    }
    if subscriber_is_teacher {
        return !track.from_teacher;
    }
    track.from_teacher || called_on == Some(track.classroom_id.as_str())
}

impl Engine {
    /// Recomputes and applies the routes of one lesson.
    pub(crate) fn apply_routes(&mut self, lesson_id: &str, now: Instant) {
        let Some(lesson) = self.registry.get(lesson_id) else {
            return;
        };
        let called_on = lesson.called_on.clone();
        let members: Vec<(ConnId, bool, String)> = lesson
            .teacher
            .map(|t| (t, true, lesson.host.clone()))
            .into_iter()
            .chain(lesson.present.iter().map(|(c, id)| (*id, false, c.clone())))
            .collect();

        let offered: Vec<Offered> = members
            .iter()
            .filter_map(|(id, is_teacher, classroom)| {
                let peer = self.conns.get(id)?.peer.as_ref()?;
                Some(peer.published.iter().map(move |p| Offered {
                    key: TrackKey {
                        publisher: *id,
                        mid: p.mid,
                    },
                    track_id: p.id,
                    kind: p.kind,
                    source: p.source,
                    classroom_id: classroom.clone(),
                    from_teacher: *is_teacher,
                    layer_count: p.layers.len(),
                }))
            })
            .flatten()
            .collect();

        for (id, is_teacher, classroom) in &members {
            let Some(peer) = self.conns.get_mut(id).and_then(|c| c.peer.as_mut()) else {
                continue;
            };
            let wanted: Vec<&Offered> = offered
                .iter()
                .filter(|t| receives(*is_teacher, classroom, t, called_on.as_deref()))
                .collect();
            let stale: Vec<TrackKey> = peer
                .subscribed
                .iter()
                .map(|s| s.key)
                .filter(|k| !wanted.iter().any(|w| w.key == *k))
                .collect();
            for key in stale {
                peer.unsubscribe(key);
            }
            for track in wanted {
                if peer.is_subscribed(track.key) {
                    continue;
                }
                let top = track.layer_count.saturating_sub(1) as u8;
                peer.subscribed.push(Subscribed {
                    key: track.key,
                    track_id: track.track_id,
                    kind: track.kind,
                    source: track.source,
                    classroom_id: track.classroom_id.clone(),
                    from_teacher: track.from_teacher,
                    state: OutState::ToOpen,
                    video: (track.kind == MediaKind::Video)
                        .then(|| VideoOut::new(top, &self.tuning)),
                    seq: SeqRewriter::new(FIRST_OUT_SEQ),
                    pts: None,
                    layer_count: track.layer_count,
                });
            }
            self.offer_if_needed(*id);
        }
        for (id, _, _) in &members {
            self.reallocate(*id, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::media::Mid;

    fn track(classroom: &str, from_teacher: bool) -> Offered {
        Offered {
            key: TrackKey {
                publisher: ConnId(1),
                mid: Mid::from("0"),
            },
            track_id: 1,
            kind: MediaKind::Video,
            source: SourceKind::Camera,
            classroom_id: classroom.into(),
            from_teacher,
            layer_count: 3,
        }
    }

    #[test]
    fn route_table() {
        let teacher = track("host", true);
        let a = track("a", false);
        let b = track("b", false);
        // (subscriber is teacher, subscriber classroom, track, called on, expected)
        let rows = [
            (false, "a", &teacher, None, true),
            (false, "a", &b, None, false),
            (false, "a", &b, Some("b"), true),
            (false, "a", &a, Some("a"), false),
            (true, "host", &a, None, true),
            (true, "host", &teacher, None, false),
            (true, "host", &b, Some("b"), true),
        ];
        for (is_teacher, sub, t, called, expected) in rows {
            assert_eq!(
                receives(is_teacher, sub, t, called),
                expected,
                "{sub} receiving {} (called on {called:?})",
                t.classroom_id
            );
        }
    }
}
