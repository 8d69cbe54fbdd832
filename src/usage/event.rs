//! Facts the media engine reports for usage accounting. The engine only states what happened and
//! when; sessions, grace periods, roll-ups and storage are the usage module's business, off the
//! media hot path.

/// Unix time in milliseconds (wall clock; the engine stamps it when the fact happens).
pub type UnixMillis = i64;

/// The quality a classroom receives, from best to worst.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum QualityLevel {
    Top,
    Middle,
    Low,
    AudioOnly,
    Paused,
}

impl QualityLevel {
    /// The snake_case name, as in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            QualityLevel::Top => "top",
            QualityLevel::Middle => "middle",
            QualityLevel::Low => "low",
            QualityLevel::AudioOnly => "audio_only",
            QualityLevel::Paused => "paused",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum UsageEvent {
    LessonStarted {
        lesson_id: String,
        title: String,
        host_classroom: String,
        invited: Vec<String>,
        at: UnixMillis,
    },
    LessonEnded {
        lesson_id: String,
        at: UnixMillis,
    },
    /// A classroom (or the teacher's host classroom) connected to a lesson.
    Joined {
        lesson_id: String,
        classroom_id: String,
        at: UnixMillis,
    },
    /// Its connection went away (closed, replaced, dropped, or the lesson ended).
    Left {
        lesson_id: String,
        classroom_id: String,
        at: UnixMillis,
    },
    CalledOn {
        lesson_id: String,
        classroom_id: String,
        at: UnixMillis,
    },
    HandRaised {
        lesson_id: String,
        classroom_id: String,
        at: UnixMillis,
    },
    /// Once per second per connected classroom: what flowed since the previous sample.
    Sample {
        lesson_id: String,
        classroom_id: String,
        at: UnixMillis,
        /// Media bytes the server received from this classroom since the last sample.
        bytes_in: u64,
        /// Media bytes the server sent to this classroom since the last sample.
        bytes_out: u64,
        /// The quality level received during this second.
        quality: QualityLevel,
        /// Fraction of packets lost on the way to the classroom (0..1), if known.
        loss: Option<f32>,
        /// Round-trip time in milliseconds, if known.
        rtt_ms: Option<f32>,
        /// Video freezes the classroom reported since the last sample.
        freezes: u32,
    },
}
