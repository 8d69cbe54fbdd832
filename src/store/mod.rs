//! Durable storage for the directory, lessons and usage sessions: embedded SQLite in WAL mode.
//!
//! A [`Store`] is one connection; it is blocking, so async callers run it on `spawn_blocking` or
//! on the usage writer thread. Writes are full-state upserts of rows produced by
//! [`crate::usage::Recorder`], so writing the same snapshot twice is harmless.

mod migrations;
pub mod query;

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::directory::{Classroom, County, Directory, School, SchoolKind};
use crate::usage::event::UnixMillis;

pub use migrations::MIGRATIONS;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database schema version {found} is newer than this build knows ({known})")]
    TooNew { found: i64, known: i64 },
    #[error("stored directory is inconsistent: {0}")]
    Directory(#[from] crate::directory::DirectoryError),
}

/// A lesson as stored. `ended_at` is `None` while it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct LessonRecord {
    pub id: String,
    pub title: String,
    pub host_classroom: String,
    pub invited: Vec<String>,
    pub started_at: UnixMillis,
    pub ended_at: Option<UnixMillis>,
    pub checkpoint_at: UnixMillis,
}

/// One usage session (one classroom's presence in one lesson, reconnects included), as stored.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct SessionRecord {
    pub id: String,
    pub lesson_id: String,
    pub classroom_id: String,
    pub joined_at: UnixMillis,
    /// When it ended; while open and in its reconnect grace period, when the link dropped.
    pub left_at: Option<UnixMillis>,
    pub is_open: bool,
    pub connected_ms: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub top_ms: i64,
    pub middle_ms: i64,
    pub low_ms: i64,
    pub audio_only_ms: i64,
    pub paused_ms: i64,
    pub loss_samples: i64,
    pub loss_mean: Option<f64>,
    pub loss_p95: Option<f64>,
    pub rtt_samples: i64,
    pub rtt_mean_ms: Option<f64>,
    pub rtt_p95_ms: Option<f64>,
    pub freezes: i64,
    pub reconnects: i64,
    pub called_on: i64,
    pub hands_raised: i64,
    pub closed_by_recovery: bool,
    pub checkpoint_at: UnixMillis,
}

/// A batch of rows to upsert in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Writes {
    pub lessons: Vec<LessonRecord>,
    pub sessions: Vec<SessionRecord>,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.lessons.is_empty() && self.sessions.is_empty()
    }

    /// Appends `other`; later rows win when both name the same id (they are full snapshots).
    pub fn extend(&mut self, other: Writes) {
        self.lessons.extend(other.lessons);
        self.sessions.extend(other.sessions);
    }
}

/// What start-up recovery closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    pub sessions_closed: usize,
    pub lessons_closed: usize,
}

pub struct Store {
    conn: Connection,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store(..)")
    }
}

impl Store {
    /// Opens (creating if needed) the database file, switches it to WAL and migrates it.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        Self::setup(conn)
    }

    /// A private in-memory database (tests, benchmarks).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(conn: Connection) -> Result<Store, StoreError> {
        // WAL: readers (admin queries) never block the usage writer. NORMAL sync is durable
        // against process crashes (SIGKILL), which is the failure the checkpoints are for.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Store { conn };
        store.migrate()?;
        Ok(store)
    }

    /// The schema version now in force.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| {
                r.get::<_, Option<i64>>(0)
            })?
            .unwrap_or(0))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
            [],
        )?;
        let current = self.schema_version()?;
        let known = MIGRATIONS.len() as i64;
        if current > known {
            return Err(StoreError::TooNew {
                found: current,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
                params![i as i64 + 1, crate::auth::now_unix() * 1000],
            )?;
            tx.commit()?;
        }
        Ok(())
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Upserts a batch in one transaction: all of it is durable, or none.
    pub fn apply(&mut self, writes: &Writes) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut lesson = tx.prepare_cached(
                "INSERT INTO lesson (id, title, host_classroom, started_at, ended_at, checkpoint_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET title = excluded.title,
                   host_classroom = excluded.host_classroom, started_at = excluded.started_at,
                   ended_at = excluded.ended_at, checkpoint_at = excluded.checkpoint_at,
                   closed_by_recovery = 0",
            )?;
            let mut invite = tx.prepare_cached(
                "INSERT INTO lesson_invite (lesson_id, classroom_id, role) VALUES (?1, ?2, ?3)
                 ON CONFLICT (lesson_id, classroom_id) DO NOTHING",
            )?;
            for l in &writes.lessons {
                lesson.execute(params![
                    l.id,
                    l.title,
                    l.host_classroom,
                    l.started_at,
                    l.ended_at,
                    l.checkpoint_at
                ])?;
                invite.execute(params![l.id, l.host_classroom, "host"])?;
                for c in &l.invited {
                    invite.execute(params![l.id, c, "invited"])?;
                }
            }
            let mut session = tx.prepare_cached(
                "INSERT INTO usage_session (id, lesson_id, classroom_id, joined_at, left_at, is_open,
                   connected_ms, bytes_in, bytes_out, top_ms, middle_ms, low_ms, audio_only_ms,
                   paused_ms, loss_samples, loss_mean, loss_p95, rtt_samples, rtt_mean_ms, rtt_p95_ms,
                   freezes, reconnects, called_on, hands_raised, closed_by_recovery, checkpoint_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                   ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)
                 ON CONFLICT (id) DO UPDATE SET left_at = excluded.left_at,
                   is_open = excluded.is_open, connected_ms = excluded.connected_ms,
                   bytes_in = excluded.bytes_in, bytes_out = excluded.bytes_out,
                   top_ms = excluded.top_ms, middle_ms = excluded.middle_ms, low_ms = excluded.low_ms,
                   audio_only_ms = excluded.audio_only_ms, paused_ms = excluded.paused_ms,
                   loss_samples = excluded.loss_samples, loss_mean = excluded.loss_mean,
                   loss_p95 = excluded.loss_p95, rtt_samples = excluded.rtt_samples,
                   rtt_mean_ms = excluded.rtt_mean_ms, rtt_p95_ms = excluded.rtt_p95_ms,
                   freezes = excluded.freezes, reconnects = excluded.reconnects,
                   called_on = excluded.called_on, hands_raised = excluded.hands_raised,
                   closed_by_recovery = excluded.closed_by_recovery,
                   checkpoint_at = excluded.checkpoint_at",
            )?;
            for s in &writes.sessions {
                session.execute(params![
                    s.id,
                    s.lesson_id,
                    s.classroom_id,
                    s.joined_at,
                    s.left_at,
                    s.is_open as i64,
                    s.connected_ms,
                    s.bytes_in,
                    s.bytes_out,
                    s.top_ms,
                    s.middle_ms,
                    s.low_ms,
                    s.audio_only_ms,
                    s.paused_ms,
                    s.loss_samples,
                    s.loss_mean,
                    s.loss_p95,
                    s.rtt_samples,
                    s.rtt_mean_ms,
                    s.rtt_p95_ms,
                    s.freezes,
                    s.reconnects,
                    s.called_on,
                    s.hands_raised,
                    s.closed_by_recovery as i64,
                    s.checkpoint_at
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Closes what a crash left open: each open session ends when its link dropped (if it was in
    /// its grace period) or else at its last checkpoint, and is marked `closed_by_recovery`; each
    /// running lesson ends at its last checkpoint. Run once at start-up, before new events.
    pub fn recover(&mut self) -> Result<Recovery, StoreError> {
        let tx = self.conn.transaction()?;
        let sessions_closed = tx.execute(
            "UPDATE usage_session SET is_open = 0, closed_by_recovery = 1,
               left_at = COALESCE(left_at, checkpoint_at)
             WHERE is_open = 1",
            [],
        )?;
        let lessons_closed = tx.execute(
            "UPDATE lesson SET ended_at = checkpoint_at, closed_by_recovery = 1
             WHERE ended_at IS NULL",
            [],
        )?;
        tx.commit()?;
        Ok(Recovery {
            sessions_closed,
            lessons_closed,
        })
    }

    /// The stored directory; `None` when none was ever saved.
    pub fn load_directory(&self) -> Result<Option<Directory>, StoreError> {
        let city: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM directory_meta WHERE key = 'city'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let Some(city) = city else {
            return Ok(None);
        };
        let mut stmt = self
            .conn
            .prepare("SELECT id, name FROM county ORDER BY id")?;
        let counties = stmt
            .query_map([], |r| {
                Ok(County {
                    id: r.get(0)?,
                    name: r.get(1)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = self
            .conn
            .prepare("SELECT id, name, county_id, kind FROM school ORDER BY id")?;
        let schools = stmt
            .query_map([], |r| {
                let kind: String = r.get(3)?;
                Ok(School {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    county: r.get(2)?,
                    kind: if kind == "central" {
                        SchoolKind::Central
                    } else {
                        SchoolKind::Village
                    },
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = self
            .conn
            .prepare("SELECT id, name, school_id FROM classroom ORDER BY id")?;
        let classrooms = stmt
            .query_map([], |r| {
                Ok(Classroom {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    school: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Directory::from_parts(
            city, counties, schools, classrooms,
        )?))
    }

    /// Replaces the stored directory with `dir` in one transaction.
    pub fn save_directory(&mut self, dir: &Directory) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute_batch("DELETE FROM classroom; DELETE FROM school; DELETE FROM county;")?;
        tx.execute(
            "INSERT INTO directory_meta (key, value) VALUES ('city', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![dir.city],
        )?;
        {
            let mut st = tx.prepare("INSERT INTO county (id, name) VALUES (?1, ?2)")?;
            for c in &dir.counties {
                st.execute(params![c.id, c.name])?;
            }
            let mut st = tx.prepare(
                "INSERT INTO school (id, name, county_id, kind) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for s in &dir.schools {
                let kind = match s.kind {
                    SchoolKind::Central => "central",
                    SchoolKind::Village => "village",
                };
                st.execute(params![s.id, s.name, s.county, kind])?;
            }
            let mut st =
                tx.prepare("INSERT INTO classroom (id, name, school_id) VALUES (?1, ?2, ?3)")?;
            for c in &dir.classrooms {
                st.execute(params![c.id, c.name, c.school])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Loads the stored directory, or stores and returns `initial` when there is none yet.
    pub fn directory_or_seed(&mut self, initial: &Directory) -> Result<Directory, StoreError> {
        if let Some(dir) = self.load_directory()? {
            return Ok(dir);
        }
        self.save_directory(initial)?;
        Ok(initial.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_round_trips_the_directory() {
        let mut store = Store::open_in_memory().unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        store.migrate().unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert!(store.load_directory().unwrap().is_none());
        let demo = Directory::demo();
        let got = store.directory_or_seed(&demo).unwrap();
        assert_eq!(got, demo);
        let loaded = store.load_directory().unwrap().unwrap();
        assert_eq!(loaded.city, demo.city);
        assert_eq!(loaded.classrooms.len(), demo.classrooms.len());
        assert!(loaded.classroom("c-xiacun-1").is_some());
    }

    #[test]
    fn recovery_closes_open_rows_at_their_checkpoint() {
        let mut store = Store::open_in_memory().unwrap();
        let lesson = LessonRecord {
            id: "L".into(),
            title: "t".into(),
            host_classroom: "h".into(),
            invited: vec!["a".into(), "b".into()],
            started_at: 1_000,
            ended_at: None,
            checkpoint_at: 9_000,
        };
        let open = SessionRecord {
            id: "s1".into(),
            lesson_id: "L".into(),
            classroom_id: "a".into(),
            joined_at: 1_000,
            is_open: true,
            connected_ms: 8_000,
            checkpoint_at: 9_000,
            ..Default::default()
        };
        let dropped = SessionRecord {
            id: "s2".into(),
            classroom_id: "b".into(),
            left_at: Some(5_000),
            ..open.clone()
        };
        let closed = SessionRecord {
            id: "s3".into(),
            classroom_id: "h".into(),
            left_at: Some(7_000),
            is_open: false,
            ..open.clone()
        };
        store
            .apply(&Writes {
                lessons: vec![lesson],
                sessions: vec![open, dropped, closed],
            })
            .unwrap();
        let r = store.recover().unwrap();
        assert_eq!(
            r,
            Recovery {
                sessions_closed: 2,
                lessons_closed: 1
            }
        );
        let rows: Vec<(String, i64, i64, i64)> = store
            .conn
            .prepare(
                "SELECT id, left_at, is_open, closed_by_recovery FROM usage_session ORDER BY id",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                ("s1".into(), 9_000, 0, 1),
                ("s2".into(), 5_000, 0, 1),
                ("s3".into(), 7_000, 0, 0)
            ]
        );
        assert_eq!(store.recover().unwrap(), Recovery::default());
    }
}
