//! Signaling commands: joining, the lesson workflow, and SDP exchange. Roles are enforced here.

use std::time::Instant;

use str0m::bwe::Bitrate;
use str0m::Rtc;

use crate::auth::{now_unix, Claims};
use crate::lesson::{classroom_view, LessonError};
use crate::media::peer::Peer;
use crate::signal::message::{
    ClientMessage, EndReason, ErrorCode, Role, ServerMessage, SourceKind,
};
use crate::signal::ConnId;
use crate::usage::event::UsageEvent;

use super::StartedLesson;
use super::{host_candidates, Command, Conn, Engine, EngineSnapshot, Joined, Outbound, PeerTotals};

type Refusal = (ErrorCode, String);

/// What a client hears when its SDP made str0m panic (contained; its media is dropped).
const SDP_CRASHED: &str = "the media engine failed on this SDP";

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    (code, message.into())
}

fn unix_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Engine {
    pub(crate) fn handle_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Open { conn, addr, outbox } => {
                self.conns.insert(
                    conn,
                    Conn {
                        addr,
                        outbox,
                        joined: None,
                        peer: None,
                        sampled: PeerTotals::default(),
                        latest: PeerTotals::default(),
                        dirty: false,
                    },
                );
            }
            Command::Message { conn, msg } => {
                if !self.conns.contains_key(&conn) {
                    return;
                }
                if let Err((code, message)) = self.handle_message(conn, msg, now) {
                    self.metrics
                        .signaling_errors
                        .with_label_values(&[code.as_str()])
                        .inc();
                    self.send(conn, ServerMessage::error(code, message));
                }
            }
            Command::Close { conn } => self.close_conn(conn),
            Command::StartLesson {
                host,
                title,
                invited,
                reply,
            } => {
                let result = self.start_lesson(&host, &title, &invited);
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(EngineSnapshot {
                    lessons: self.registry.len(),
                    connections: self.conns.len(),
                    peers: self.conns.values().filter(|c| c.peer.is_some()).count(),
                });
            }
        }
    }

    fn handle_message(
        &mut self,
        id: ConnId,
        msg: ClientMessage,
        now: Instant,
    ) -> Result<(), Refusal> {
        let (msg, joined) = match (msg, self.conns.get(&id).and_then(|c| c.joined.clone())) {
            (ClientMessage::Join { token, code }, None) => return self.join(id, token, code, now),
            (ClientMessage::Join { .. }, Some(_)) => {
                return Err(refuse(ErrorCode::AlreadyJoined, "already joined"))
            }
            (ClientMessage::Ping, _) => {
                self.send(id, ServerMessage::Pong);
                return Ok(());
            }
            (_, None) => return Err(refuse(ErrorCode::NotJoined, "send join first")),
            (msg, Some(joined)) => (msg, joined),
        };
        match msg {
            ClientMessage::StartLesson { title, invited } => {
                require(&joined, Role::Teacher)?;
                if self.registry.live_for_host(&joined.classroom_id).is_some() {
                    return Err(refuse(
                        ErrorCode::LessonActive,
                        "a lesson is already live here",
                    ));
                }
                let started = self
                    .start_lesson(&joined.classroom_id, &title, &invited)
                    .map_err(lesson_refusal)?;
                self.attach_teacher(id, &started.lesson_id);
                let lesson = self.lesson_view(&started.lesson_id);
                self.send(
                    id,
                    ServerMessage::LessonStarted {
                        lesson,
                        invites: started.invites,
                    },
                );
                self.lesson_changed(&started.lesson_id);
                Ok(())
            }
            ClientMessage::Offer { sdp, sources } => {
                self.on_client_offer(id, &joined, &sdp, sources, now)
            }
            ClientMessage::Answer { sdp } => {
                let peer = self
                    .conns
                    .get_mut(&id)
                    .and_then(|c| c.peer.as_mut())
                    .ok_or_else(|| refuse(ErrorCode::BadSdp, "no offer was sent to you"))?;
                match super::contained(id, || peer.accept_answer(&sdp)) {
                    Some(result) => result.map_err(|e| refuse(ErrorCode::BadSdp, e.to_string()))?,
                    None => {
                        self.crash(id);
                        return Err(refuse(ErrorCode::BadSdp, SDP_CRASHED));
                    }
                }
                self.mark_dirty(id);
                self.offer_if_needed(id);
                Ok(())
            }
            ClientMessage::CallOn { classroom_id } => {
                require(&joined, Role::Teacher)?;
                let lesson_id = lesson_of(&joined)?;
                let lesson = self.registry.get_mut(&lesson_id).ok_or_else(no_lesson)?;
                if !lesson.present.contains_key(&classroom_id) {
                    return Err(refuse(
                        ErrorCode::UnknownClassroom,
                        format!("classroom {classroom_id} is not connected"),
                    ));
                }
                lesson.called_on = Some(classroom_id.clone());
                lesson.hands.remove(&classroom_id);
                self.metrics.calls_on.inc();
                self.usage(UsageEvent::CalledOn {
                    lesson_id: lesson_id.clone(),
                    classroom_id,
                    at: unix_millis(),
                });
                self.lesson_changed(&lesson_id);
                Ok(())
            }
            ClientMessage::SendBack { classroom_id } => {
                require(&joined, Role::Teacher)?;
                let lesson_id = lesson_of(&joined)?;
                let lesson = self.registry.get_mut(&lesson_id).ok_or_else(no_lesson)?;
                if lesson.called_on.as_deref() == Some(classroom_id.as_str()) {
                    lesson.called_on = None;
                }
                self.lesson_changed(&lesson_id);
                Ok(())
            }
            ClientMessage::RaiseHand => {
                require(&joined, Role::Classroom)?;
                let lesson_id = lesson_of(&joined)?;
                let lesson = self.registry.get_mut(&lesson_id).ok_or_else(no_lesson)?;
                if lesson.hands.insert(joined.classroom_id.clone()) {
                    self.usage(UsageEvent::HandRaised {
                        lesson_id: lesson_id.clone(),
                        classroom_id: joined.classroom_id.clone(),
                        at: unix_millis(),
                    });
                    self.lesson_changed(&lesson_id);
                }
                Ok(())
            }
            ClientMessage::LowerHand { classroom_id } => {
                let lesson_id = lesson_of(&joined)?;
                let whose = match (joined.role, classroom_id) {
                    (Role::Teacher, Some(c)) => c,
                    (Role::Classroom, None) => joined.classroom_id.clone(),
                    (Role::Classroom, Some(c)) if c == joined.classroom_id => c,
                    _ => {
                        return Err(refuse(
                            ErrorCode::Forbidden,
                            "a classroom may only lower its own hand",
                        ))
                    }
                };
                let lesson = self.registry.get_mut(&lesson_id).ok_or_else(no_lesson)?;
                if lesson.hands.remove(&whose) {
                    self.lesson_changed(&lesson_id);
                }
                Ok(())
            }
            ClientMessage::SetMaxLayer { layer } => {
                if let Some(peer) = self.conns.get_mut(&id).and_then(|c| c.peer.as_mut()) {
                    peer.max_layer = layer;
                }
                self.reallocate(id, now);
                Ok(())
            }
            ClientMessage::EndLesson => {
                require(&joined, Role::Teacher)?;
                let lesson_id = lesson_of(&joined)?;
                self.end_lesson(&lesson_id, EndReason::EndedByTeacher);
                Ok(())
            }
            ClientMessage::Join { .. } | ClientMessage::Ping => Ok(()),
        }
    }

    fn join(
        &mut self,
        id: ConnId,
        token: Option<String>,
        code: Option<String>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let addr = self.conns.get(&id).map(|c| c.addr).ok_or_else(no_lesson)?;
        let (lesson_id, classroom_id, rejoin_token) = match (token, code) {
            (Some(token), None) => {
                let claims = match self.key.verify(&token, now_unix()) {
                    Ok(c) => c,
                    Err(e) => return self.refuse_join(id, ErrorCode::BadToken, e.to_string()),
                };
                match claims {
                    Claims::Teacher { classroom, .. } => return self.join_teacher(id, classroom),
                    Claims::Classroom {
                        lesson, classroom, ..
                    } => (lesson, classroom, None),
                    Claims::Admin { .. } => {
                        return self.refuse_join(
                            id,
                            ErrorCode::Forbidden,
                            "admin tokens cannot join lessons",
                        )
                    }
                }
            }
            (None, Some(code)) => {
                let (lesson, classroom) = self
                    .registry
                    .resolve_code(&code, addr, now)
                    .map_err(lesson_refusal)?;
                let token = self.registry.get(&lesson).and_then(|l| {
                    l.invited
                        .iter()
                        .find(|i| i.classroom_id == classroom)
                        .map(|i| i.token.clone())
                });
                (lesson, classroom, token)
            }
            _ => {
                return Err(refuse(
                    ErrorCode::BadMessage,
                    "join needs exactly one of token or code",
                ))
            }
        };
        let Some(lesson) = self.registry.get_mut(&lesson_id) else {
            return self.refuse_join(id, ErrorCode::NoLesson, "this lesson has ended");
        };
        if !lesson.is_invited(&classroom_id) {
            return self.refuse_join(id, ErrorCode::Forbidden, "this classroom is not invited");
        }
        let replaced = lesson.present.insert(classroom_id.clone(), id);
        if let Some(old) = replaced {
            self.replace(old);
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.joined = Some(Joined {
                role: Role::Classroom,
                classroom_id: classroom_id.clone(),
                lesson_id: Some(lesson_id.clone()),
            });
        }
        self.usage(UsageEvent::Joined {
            lesson_id: lesson_id.clone(),
            classroom_id: classroom_id.clone(),
            at: unix_millis(),
        });
        let name = self
            .dir
            .classroom(&classroom_id)
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let lesson = self.lesson_view(&lesson_id);
        self.send(
            id,
            ServerMessage::Welcome {
                role: Role::Classroom,
                classroom_id,
                classroom_name: name,
                lesson: Some(lesson),
                invitable: Vec::new(),
                invites: Vec::new(),
                rejoin_token,
            },
        );
        self.lesson_changed(&lesson_id);
        Ok(())
    }

    fn join_teacher(&mut self, id: ConnId, classroom: String) -> Result<(), Refusal> {
        let Some(room) = self.dir.classroom(&classroom) else {
            return self.refuse_join(id, ErrorCode::UnknownClassroom, "unknown host classroom");
        };
        let name = room.name.clone();
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.joined = Some(Joined {
                role: Role::Teacher,
                classroom_id: classroom.clone(),
                lesson_id: None,
            });
        }
        let live = self
            .registry
            .live_for_host(&classroom)
            .map(|l| l.id.clone());
        if let Some(lesson_id) = &live {
            self.attach_teacher(id, lesson_id);
        }
        let live_lesson = live.as_deref().and_then(|l| self.registry.get(l));
        let invitable = self
            .dir
            .default_invites(&classroom)
            .iter()
            .map(|c| classroom_view(&self.dir, c, live_lesson))
            .collect();
        let (lesson, invites) = match live.as_deref().and_then(|l| self.registry.get(l)) {
            Some(l) => (Some(l.view(&self.dir)), l.invites(&self.dir)),
            None => (None, Vec::new()),
        };
        self.send(
            id,
            ServerMessage::Welcome {
                role: Role::Teacher,
                classroom_id: classroom,
                classroom_name: name,
                lesson,
                invitable,
                invites,
                rejoin_token: None,
            },
        );
        if let Some(lesson_id) = live {
            self.lesson_changed(&lesson_id);
        }
        Ok(())
    }

    /// Makes `id` the teacher connection of the lesson, replacing an older one.
    fn attach_teacher(&mut self, id: ConnId, lesson_id: &str) {
        let Some(lesson) = self.registry.get_mut(lesson_id) else {
            return;
        };
        let old = lesson.teacher.replace(id);
        let host = lesson.host.clone();
        if let Some(old) = old.filter(|o| *o != id) {
            self.replace(old);
        }
        if let Some(joined) = self.conns.get_mut(&id).and_then(|c| c.joined.as_mut()) {
            joined.lesson_id = Some(lesson_id.to_string());
        }
        self.usage(UsageEvent::Joined {
            lesson_id: lesson_id.to_string(),
            classroom_id: host,
            at: unix_millis(),
        });
    }

    pub(crate) fn start_lesson(
        &mut self,
        host: &str,
        title: &str,
        invited: &[String],
    ) -> Result<StartedLesson, LessonError> {
        let lesson = self
            .registry
            .start(&self.dir, &self.key, host, title, invited, now_unix())?;
        let started = StartedLesson {
            lesson_id: lesson.id.clone(),
            invites: lesson.invites(&self.dir),
        };
        let event = UsageEvent::LessonStarted {
            lesson_id: lesson.id.clone(),
            title: lesson.title.clone(),
            host_classroom: lesson.host.clone(),
            invited: lesson
                .invited
                .iter()
                .map(|i| i.classroom_id.clone())
                .collect(),
            at: unix_millis(),
        };
        self.usage(event);
        self.metrics.lessons_live.set(self.registry.len() as i64);
        tracing::info!(lesson = %started.lesson_id, host, "lesson started");
        Ok(started)
    }

    pub(crate) fn end_lesson(&mut self, lesson_id: &str, reason: EndReason) {
        let Some(lesson) = self.registry.end(lesson_id) else {
            return;
        };
        let at = unix_millis();
        let members: Vec<(ConnId, String)> = lesson
            .teacher
            .map(|t| (t, lesson.host.clone()))
            .into_iter()
            .chain(lesson.present.iter().map(|(c, id)| (*id, c.clone())))
            .collect();
        for (conn, classroom_id) in members {
            self.send(conn, ServerMessage::LessonEnded { reason });
            self.usage(UsageEvent::Left {
                lesson_id: lesson_id.to_string(),
                classroom_id,
                at,
            });
            if let Some(c) = self.conns.get_mut(&conn) {
                // Detached first so closing does not touch the ended lesson.
                c.joined = None;
            }
            self.drop_peer(conn);
            if let Some(c) = self.conns.get(&conn) {
                let _ = c.outbox.try_send(Outbound::Close);
            }
        }
        self.usage(UsageEvent::LessonEnded {
            lesson_id: lesson_id.to_string(),
            at,
        });
        self.metrics.lessons_live.set(self.registry.len() as i64);
        tracing::info!(lesson = %lesson_id, "lesson ended");
    }

    /// An older connection of the same classroom (or teacher) was replaced by a newer one.
    fn replace(&mut self, old: ConnId) {
        self.send(old, ServerMessage::Replaced);
        if let Some(c) = self.conns.get_mut(&old) {
            // Its seat now belongs to the new connection; closing must not free it.
            c.joined = None;
        }
        self.drop_peer(old);
        if let Some(c) = self.conns.get(&old) {
            let _ = c.outbox.try_send(Outbound::Close);
        }
    }

    /// A join that can never succeed on this connection: a fatal error, then close.
    fn refuse_join(
        &mut self,
        id: ConnId,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Result<(), Refusal> {
        self.metrics
            .signaling_errors
            .with_label_values(&[code.as_str()])
            .inc();
        self.send(id, ServerMessage::fatal(code, message));
        if let Some(c) = self.conns.get(&id) {
            let _ = c.outbox.try_send(Outbound::Close);
        }
        Ok(())
    }

    /// Forgets a connection: leaves its lesson, drops its peer, reroutes the others.
    pub(crate) fn close_conn(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let _ = conn.outbox.try_send(Outbound::Close);
        if let Some(Joined {
            classroom_id,
            lesson_id: Some(lesson_id),
            ..
        }) = conn.joined.clone()
        {
            if let Some(lesson) = self.registry.get_mut(&lesson_id) {
                let mut left = false;
                if lesson.teacher == Some(id) {
                    lesson.teacher = None;
                    left = true;
                }
                if lesson.present.get(&classroom_id) == Some(&id) {
                    lesson.present.remove(&classroom_id);
                    lesson.hands.remove(&classroom_id);
                    if lesson.called_on.as_deref() == Some(classroom_id.as_str()) {
                        lesson.called_on = None;
                    }
                    left = true;
                }
                if left {
                    self.usage(UsageEvent::Left {
                        lesson_id: lesson_id.clone(),
                        classroom_id,
                        at: unix_millis(),
                    });
                    self.lesson_changed(&lesson_id);
                }
            }
        }
        self.drop_peer(id);
        self.conns.remove(&id);
    }

    /// Removes a connection's peer and every subscription to its tracks.
    fn drop_peer(&mut self, id: ConnId) {
        let Some(mut peer) = self.conns.get_mut(&id).and_then(|c| c.peer.take()) else {
            return;
        };
        peer.rtc.disconnect();
        self.by_remote.retain(|_, c| *c != id);
        for track in &peer.published {
            self.keyframes.forget_track(track.id);
        }
        let published: Vec<_> = peer.published.iter().map(|p| p.mid).collect();
        let others: Vec<ConnId> = self.conns.keys().copied().filter(|c| *c != id).collect();
        for other in others {
            let Some(p) = self.conns.get_mut(&other).and_then(|c| c.peer.as_mut()) else {
                continue;
            };
            for mid in &published {
                p.unsubscribe(crate::media::peer::TrackKey {
                    publisher: id,
                    mid: *mid,
                });
            }
            self.offer_if_needed(other);
        }
        self.metrics.peers.dec();
    }

    fn on_client_offer(
        &mut self,
        id: ConnId,
        joined: &Joined,
        sdp: &str,
        sources: Vec<crate::signal::message::TrackSource>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let lesson_id = lesson_of(joined)?;
        let candidates = host_candidates(&self.candidates, &self.tcp_candidates);
        // Baseline mode runs without an estimator: no probing, no padding.
        let bwe = self
            .adaptation
            .then(|| Bitrate::bps(self.initial_estimate_bps));
        let conn = self.conns.get_mut(&id).ok_or_else(no_lesson)?;
        let is_new = conn.peer.is_none();
        let peer = conn.peer.get_or_insert_with(|| {
            let mut rtc = Rtc::builder()
                .set_ice_lite(true)
                // Packets are forwarded as they come, not reassembled into frames: no wait for
                // a whole frame, payloads shared across subscribers, and the VP8 temporal-layer
                // fields reach the browsers, whose decoders then skip a lost non-reference frame.
                .set_rtp_mode(true)
                .clear_codecs()
                // RED (RFC 2198) is negotiated so every lost audio packet can be rebuilt from the
                // next ones without a round trip: village links lose packets in bursts
                // (`media::red` builds it per subscriber).
                .enable_opus(true, true)
                .enable_vp8(true)
                // ULPFEC in RED for video towards lossy, long-RTT links (`media::fec`); str0m
                // declares it only on m-lines the server sends on.
                .enable_vp8_ulpfec(true)
                .enable_bwe(bwe)
                .set_send_buffer_video(crate::media::history::video_history_packets(
                    self.tuning.max_video_bps,
                    self.tuning.retransmit_window,
                ))
                // Loss and RTT twice a second for FEC and the teacher's link lights (the collapse
                // bound reads feedback itself, at the adaptation tick).
                .set_stats_interval(Some(std::time::Duration::from_millis(500)))
                .build(now);
            for c in candidates {
                rtc.add_local_candidate(c);
            }
            Peer::new(rtc, now)
        });
        let sources: Vec<(String, SourceKind)> =
            sources.into_iter().map(|s| (s.mid, s.source)).collect();
        // The client's SDP goes into str0m's parser and negotiation: a panic there is contained
        // to this client's media, like one on its packets.
        let answer = match super::contained(id, || peer.accept_offer(sdp, sources)) {
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                if is_new {
                    conn.peer = None;
                }
                return Err(refuse(ErrorCode::BadSdp, e.to_string()));
            }
            None => {
                // Nothing may touch that `Rtc` again; a client that had media is told it was
                // lost (`crash`), and reconnects.
                if is_new {
                    conn.peer = None;
                } else {
                    self.crash(id);
                }
                return Err(refuse(ErrorCode::BadSdp, SDP_CRASHED));
            }
        };
        if is_new {
            self.metrics.peers.inc();
        }
        self.send(id, ServerMessage::Answer { sdp: answer });
        self.mark_dirty(id);
        // Tracks others publish reach this peer through a server offer.
        self.schedule_reroute(&lesson_id);
        Ok(())
    }

    /// Sends the server's offer to `id` if its subscriptions changed and no offer is pending.
    pub(crate) fn offer_if_needed(&mut self, id: ConnId) {
        let Some(peer) = self.conns.get_mut(&id).and_then(|c| c.peer.as_mut()) else {
            return;
        };
        if let Some((sdp, tracks)) = peer.create_offer() {
            self.send(id, ServerMessage::Offer { sdp, tracks });
            self.mark_dirty(id);
        }
    }

    pub(crate) fn lesson_view(&self, lesson_id: &str) -> crate::signal::message::LessonView {
        self.registry
            .get(lesson_id)
            .map(|l| l.view(&self.dir))
            .unwrap_or_else(|| crate::signal::message::LessonView {
                lesson_id: lesson_id.to_string(),
                title: String::new(),
                host_classroom_id: String::new(),
                host_name: String::new(),
                teacher_connected: false,
                classrooms: Vec::new(),
                called_on: None,
            })
    }

    /// Tells everyone in the lesson its new state and recomputes its media routes.
    pub(crate) fn lesson_changed(&mut self, lesson_id: &str) {
        let Some(lesson) = self.registry.get(lesson_id) else {
            return;
        };
        let view = lesson.view(&self.dir);
        let members: Vec<ConnId> = lesson.connections().collect();
        for m in members {
            self.send(
                m,
                ServerMessage::LessonState {
                    lesson: view.clone(),
                },
            );
        }
        self.metrics.classrooms_connected.set(
            self.registry
                .lessons()
                .map(|l| l.present.len() as i64)
                .sum(),
        );
        self.schedule_reroute(lesson_id);
    }

    pub(crate) fn schedule_reroute(&mut self, lesson_id: &str) {
        if !self.reroute.iter().any(|l| l == lesson_id) {
            self.reroute.push(lesson_id.to_string());
        }
    }
}

fn require(joined: &Joined, role: Role) -> Result<(), Refusal> {
    if joined.role == role {
        Ok(())
    } else {
        Err(refuse(
            ErrorCode::Forbidden,
            format!("only a {role:?} may do that").to_lowercase(),
        ))
    }
}

fn lesson_of(joined: &Joined) -> Result<String, Refusal> {
    joined.lesson_id.clone().ok_or_else(no_lesson)
}

fn no_lesson() -> Refusal {
    refuse(ErrorCode::NoLesson, "no live lesson")
}

fn lesson_refusal(e: LessonError) -> Refusal {
    let code = match e {
        LessonError::AlreadyLive => ErrorCode::LessonActive,
        LessonError::UnknownClassroom(_) => ErrorCode::UnknownClassroom,
        LessonError::BadInviteCount => ErrorCode::BadMessage,
        LessonError::BadCode => ErrorCode::BadCode,
        LessonError::TooManyAttempts => ErrorCode::RateLimited,
    };
    refuse(code, e.to_string())
}
