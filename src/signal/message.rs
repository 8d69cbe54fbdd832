//! The signaling protocol: every message a client and the server exchange over the WebSocket.
//!
//! These types are the single definition of the protocol. `proto/schema.json` is generated from
//! them (`tongbu schema`), and a test fails when the two drift apart.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Protocol version carried by every message. A client that sends another version gets an
/// `unsupported_version` error.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest text message the server accepts, in bytes. SDP offers with simulcast are ~6–12 KiB.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A message from a client (teacher or classroom page) to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClientEnvelope {
    /// Protocol version, always 1 for now.
    pub v: u32,
    #[serde(flatten)]
    pub msg: ClientMessage,
}

/// A message from the server to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServerEnvelope {
    /// Protocol version, always 1 for now.
    pub v: u32,
    #[serde(flatten)]
    pub msg: ServerMessage,
}

impl From<ServerMessage> for ServerEnvelope {
    fn from(msg: ServerMessage) -> Self {
        ServerEnvelope {
            v: PROTOCOL_VERSION,
            msg,
        }
    }
}

impl From<ClientMessage> for ClientEnvelope {
    fn from(msg: ClientMessage) -> Self {
        ClientEnvelope {
            v: PROTOCOL_VERSION,
            msg,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First message on a connection. Exactly one of `token` (teacher token, or a classroom's join
    /// link token) or `code` (a classroom's short numeric join code) is given.
    Join {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
    /// Teacher only: start a lesson hosted by the teacher's classroom.
    StartLesson {
        title: String,
        /// Classroom ids from the directory.
        invited: Vec<String>,
    },
    /// An SDP offer from the client describing what it publishes. `sources` labels each sending
    /// m-line by its mid.
    Offer {
        sdp: String,
        #[serde(default)]
        sources: Vec<TrackSource>,
    },
    /// The client's answer to a server offer.
    Answer { sdp: String },
    /// Teacher only: put a classroom on stage: its audio and video go to every classroom.
    CallOn { classroom_id: String },
    /// Teacher only: take the called-on classroom off stage.
    SendBack { classroom_id: String },
    /// Classroom only.
    RaiseHand,
    /// Classroom only (the teacher may lower any hand with `classroom_id`).
    LowerHand {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        classroom_id: Option<String>,
    },
    /// Which simulcast layer this client receives, for every video it receives: `auto` (the
    /// default) adapts to the link; `low`, `medium` and `high` pin that layer (no adaptation).
    SetMaxLayer { layer: LayerChoice },
    /// Teacher only: end the lesson for everybody.
    EndLesson,
    /// Keep-alive; answered with `pong`.
    Ping,
}

/// What a published m-line carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TrackSource {
    pub mid: String,
    pub source: SourceKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Microphone,
    Camera,
    /// Courseware: a shared screen or window.
    Screen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LayerChoice {
    Auto,
    /// Lowest simulcast layer (rid `q`).
    Low,
    /// Middle layer (rid `h`).
    Medium,
    /// Top layer (rid `f`).
    High,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to `join`: who the server thinks this client is.
    Welcome {
        role: Role,
        /// The classroom this connection speaks for (teacher: the host classroom).
        classroom_id: String,
        classroom_name: String,
        /// Present when the client is already in a live lesson.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lesson: Option<LessonView>,
        /// Teacher only: the classrooms this teacher may invite.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        invitable: Vec<ClassroomView>,
        /// Teacher only, while a lesson is live: its join links and codes.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        invites: Vec<Invite>,
        /// Classroom only: a token to reconnect with (after joining by code), valid while the
        /// lesson lives.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rejoin_token: Option<String>,
    },
    /// Answer to `start_lesson`: one join link and code per invited classroom.
    LessonStarted {
        lesson: LessonView,
        invites: Vec<Invite>,
    },
    /// The lesson's current state; sent to everyone in the lesson after every change.
    LessonState {
        lesson: LessonView,
    },
    /// A server offer: what the client should now receive. `tracks` names every receiving mid.
    Offer {
        sdp: String,
        tracks: Vec<TrackInfo>,
    },
    /// The server's answer to a client offer.
    Answer {
        sdp: String,
    },
    /// The lesson ended; the server closes the connection after this message.
    LessonEnded {
        reason: EndReason,
    },
    /// A newer connection for the same classroom replaced this one; the server closes it.
    Replaced,
    /// Something the client sent was refused. The connection stays open unless `fatal`.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default)]
        fatal: bool,
    },
    Pong,
    /// Dynacast: encode only these simulcast layers of the track at `mid` (rids); a layer no
    /// subscriber takes (none's bandwidth allocation settled on it) is paused a few seconds after
    /// the last one left it, so a weak uplink carries only what is watched and the highest layer
    /// taken gets the encoder's full rate. `max_kbps` (the
    /// teacher's camera only): layers whose subscribers all have room for more, and the most to
    /// encode each at (kbit/s); the client keeps its own setting as a floor and caps the raise
    /// (the teacher page: 3 × its own maxBitrate). A layer missing from it goes back to the
    /// client's own setting.
    PublishLayers {
        mid: String,
        active: Vec<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        max_kbps: BTreeMap<String, u32>,
    },
    /// What this client receives now, sent when it changes: per received video, the layer
    /// (0 = lowest) or paused for lack of bandwidth.
    Quality {
        estimate_kbps: u32,
        tracks: Vec<TrackQuality>,
    },
    /// Teacher only, every second: each connected classroom's link as the server sees it.
    LinkQuality {
        classrooms: Vec<LinkInfo>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TrackQuality {
    pub mid: String,
    /// Layer flowing now, 0 = lowest; absent while paused or starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<u8>,
    /// Video paused because the link cannot carry it; it resumes by itself.
    pub paused: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LinkInfo {
    pub classroom_id: String,
    /// Send-side bandwidth estimate towards the classroom.
    pub estimate_kbps: u32,
    /// Packet loss towards the classroom, percent.
    pub loss_pct: f64,
    pub rtt_ms: u32,
    pub level: LinkLevel,
}

/// The teacher page's traffic light.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkLevel {
    Good,
    Fair,
    Poor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Teacher,
    Classroom,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LessonView {
    pub lesson_id: String,
    pub title: String,
    pub host_classroom_id: String,
    pub host_name: String,
    pub teacher_connected: bool,
    pub classrooms: Vec<ClassroomView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub called_on: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClassroomView {
    pub classroom_id: String,
    pub name: String,
    pub school: String,
    pub connected: bool,
    pub hand_raised: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Invite {
    pub classroom_id: String,
    pub name: String,
    /// Six-digit join code, valid while the lesson lives.
    pub code: String,
    /// Path (relative to the server's origin) of the classroom page with a join token.
    pub link: String,
}

/// One received track, so the page knows where to show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TrackInfo {
    pub mid: String,
    pub kind: MediaKind,
    pub source: SourceKind,
    /// The classroom that publishes it (the host classroom for the teacher's tracks).
    pub classroom_id: String,
    pub from_teacher: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Audio,
    Video,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The teacher ended it.
    EndedByTeacher,
    /// The server is shutting down.
    ServerShutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a known message shape.
    BadMessage,
    UnsupportedVersion,
    TooLarge,
    RateLimited,
    /// The first message must be `join`, and only once.
    NotJoined,
    AlreadyJoined,
    /// Token malformed, forged or expired.
    BadToken,
    /// Join code unknown or expired.
    BadCode,
    /// The role of this connection may not do that.
    Forbidden,
    NoLesson,
    LessonActive,
    UnknownClassroom,
    /// The SDP could not be parsed or negotiated.
    BadSdp,
    /// The media connection (ICE/DTLS) was lost; the client should reconnect.
    MediaLost,
    /// The client sent nothing (not even `ping`) for too long.
    IdleTimeout,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::BadToken => "bad_token",
            ErrorCode::BadCode => "bad_code",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NoLesson => "no_lesson",
            ErrorCode::LessonActive => "lesson_active",
            ErrorCode::UnknownClassroom => "unknown_classroom",
            ErrorCode::BadSdp => "bad_sdp",
            ErrorCode::MediaLost => "media_lost",
            ErrorCode::IdleTimeout => "idle_timeout",
            ErrorCode::Internal => "internal",
        }
    }
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
            fatal: false,
        }
    }

    pub fn fatal(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
            fatal: true,
        }
    }
}

/// The JSON schema of both directions, as published in `proto/schema.json`.
pub fn schema_json() -> String {
    let schema = serde_json::json!({
        "$comment": "Generated from src/signal/message.rs by `tongbu schema`. Do not edit by hand.",
        "client_to_server": schemars::schema_for!(ClientEnvelope),
        "server_to_client": schemars::schema_for!(ServerEnvelope),
    });
    // Serializing a serde_json::Value cannot fail.
    serde_json::to_string_pretty(&schema).expect("a JSON value serializes") + "\n"
}
