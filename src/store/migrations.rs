//! Schema migrations, applied in order; `schema_version` records the highest applied one.
//!
//! The SQL is kept to what SQLite and PostgreSQL share: TEXT ids, BIGINT Unix milliseconds,
//! INTEGER counters, DOUBLE PRECISION means, `INSERT .. ON CONFLICT .. DO UPDATE`. What would
//! differ on PostgreSQL: `PRAGMA journal_mode`/`busy_timeout` (connection setup, not migrations),
//! `?` placeholders become `$n`, and counters that may pass 2^31 (bytes) want BIGINT, which
//! SQLite treats as INTEGER anyway, so they are declared BIGINT here already.

/// Migrations by version (index + 1). Never edit a released entry; append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: directory, lessons, invitations, usage sessions.
    r#"
CREATE TABLE directory_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE county (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE school (
    id        TEXT PRIMARY KEY,
    name      TEXT NOT NULL,
    county_id TEXT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('central', 'village'))
);
CREATE INDEX school_county ON school (county_id);
CREATE TABLE classroom (
    id        TEXT PRIMARY KEY,
    name      TEXT NOT NULL,
    school_id TEXT NOT NULL
);
CREATE INDEX classroom_school ON classroom (school_id);

CREATE TABLE lesson (
    id                 TEXT PRIMARY KEY,
    title              TEXT NOT NULL,
    host_classroom     TEXT NOT NULL,
    started_at         BIGINT NOT NULL,
    ended_at           BIGINT,
    checkpoint_at      BIGINT NOT NULL,
    closed_by_recovery INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX lesson_started ON lesson (started_at);
CREATE INDEX lesson_host ON lesson (host_classroom, started_at);

-- Classrooms expected at a lesson: the host ('host') and the invited ones ('invited').
CREATE TABLE lesson_invite (
    lesson_id    TEXT NOT NULL,
    classroom_id TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('host', 'invited')),
    PRIMARY KEY (lesson_id, classroom_id)
);
CREATE INDEX lesson_invite_classroom ON lesson_invite (classroom_id, lesson_id);

-- No foreign keys to the directory on purpose: history outlives directory edits.
CREATE TABLE usage_session (
    id                  TEXT PRIMARY KEY,
    lesson_id           TEXT NOT NULL,
    classroom_id        TEXT NOT NULL,
    joined_at           BIGINT NOT NULL,
    left_at             BIGINT,
    is_open             INTEGER NOT NULL,
    connected_ms        BIGINT NOT NULL,
    bytes_in            BIGINT NOT NULL,
    bytes_out           BIGINT NOT NULL,
    top_ms              BIGINT NOT NULL,
    middle_ms           BIGINT NOT NULL,
    low_ms              BIGINT NOT NULL,
    audio_only_ms       BIGINT NOT NULL,
    paused_ms           BIGINT NOT NULL,
    loss_samples        INTEGER NOT NULL,
    loss_mean           DOUBLE PRECISION,
    loss_p95            DOUBLE PRECISION,
    rtt_samples         INTEGER NOT NULL,
    rtt_mean_ms         DOUBLE PRECISION,
    rtt_p95_ms          DOUBLE PRECISION,
    freezes             INTEGER NOT NULL,
    reconnects          INTEGER NOT NULL,
    called_on           INTEGER NOT NULL,
    hands_raised        INTEGER NOT NULL,
    closed_by_recovery  INTEGER NOT NULL DEFAULT 0,
    checkpoint_at       BIGINT NOT NULL
);
CREATE INDEX usage_session_joined ON usage_session (joined_at, classroom_id);
CREATE INDEX usage_session_lesson ON usage_session (lesson_id, classroom_id);
CREATE INDEX usage_session_open ON usage_session (is_open);
"#,
];
