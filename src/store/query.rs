//! Reports over the store: per-classroom aggregates rolled up to school, county and city, minutes
//! per day, lessons. Aggregation per classroom happens in SQL; roll-ups over the (in-memory,
//! bounded) directory happen in Rust, which keeps the SQL plain and portable.
//!
//! Definitions:
//! - a session belongs to the period its `joined_at` falls in; a lesson to its `started_at`;
//! - `lessons_invited` counts lessons a classroom hosted or was invited to; `lessons_attended`
//!   those of them it joined at least once; `usage_rate = attended / invited`;
//! - `quality_score` is the time-weighted received quality, 0–100: top 100, middle 75, low 50,
//!   audio-only 25, paused 0;
//! - `loss_mean` / `rtt_mean_ms` are sample-weighted means over sessions (per-session p95 is in
//!   the lesson detail; percentiles do not roll up);
//! - classrooms no longer in the directory drop out of roll-ups (their rows stay in the store).

use std::collections::{BTreeMap, HashMap};

use chrono::{NaiveDate, TimeZone};
use chrono_tz::Tz;
use rusqlite::types::Value;
use rusqlite::{params_from_iter, OptionalExtension};
use serde::Serialize;

use super::{SessionRecord, Store, StoreError};
use crate::directory::Directory;
use crate::usage::event::UnixMillis;

/// A half-open time range `[from, to)` in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: UnixMillis,
    pub to: UnixMillis,
}

impl Period {
    /// From the start of `first` to the end of `last` (both inclusive local dates in `tz`).
    pub fn from_dates(first: NaiveDate, last: NaiveDate, tz: Tz) -> Period {
        Period {
            from: local_midnight(first, tz),
            to: local_midnight(last.succ_opt().unwrap_or(last), tz),
        }
    }
}

/// The first instant of `date` in `tz` (the earliest, if midnight repeats or is skipped).
pub fn local_midnight(date: NaiveDate, tz: Tz) -> UnixMillis {
    let naive = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            t.timestamp_millis()
        }
        // Midnight skipped by a DST jump: an hour later exists.
        chrono::LocalResult::None => tz
            .from_local_datetime(&(naive + chrono::Duration::hours(1)))
            .earliest()
            .map(|t| t.timestamp_millis())
            .unwrap_or(naive.and_utc().timestamp_millis()),
    }
}

/// Which part of the directory a report covers (already intersected with the caller's rights).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub county: Option<String>,
    pub school: Option<String>,
}

impl Filter {
    pub fn admits(&self, dir: &Directory, classroom_id: &str) -> bool {
        let Some(school) = dir.school_of(classroom_id) else {
            return false;
        };
        self.county.as_ref().is_none_or(|k| &school.county == k)
            && self.school.as_ref().is_none_or(|s| &school.id == s)
    }

    /// An SQL condition on a classroom id column, with its parameters.
    fn sql(&self, column: &str) -> (String, Vec<Value>) {
        let mut cond = String::new();
        let mut params = Vec::new();
        if let Some(s) = &self.school {
            cond.push_str(&format!(
                " AND {column} IN (SELECT id FROM classroom WHERE school_id = ?)"
            ));
            params.push(Value::Text(s.clone()));
        }
        if let Some(k) = &self.county {
            cond.push_str(&format!(
                " AND {column} IN (SELECT c.id FROM classroom c JOIN school s ON s.id = c.school_id WHERE s.county_id = ?)"
            ));
            params.push(Value::Text(k.clone()));
        }
        (cond, params)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    #[default]
    Classroom,
    School,
    County,
    City,
}

/// Usage of one classroom, school, county or the city over a period.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageRow {
    /// Classroom, school or county id; the city's name for the city row.
    pub id: String,
    pub name: String,
    pub school_id: Option<String>,
    pub school_name: Option<String>,
    pub county_id: Option<String>,
    pub county_name: Option<String>,
    /// Classrooms in this row.
    pub classrooms: i64,
    pub sessions: i64,
    pub connected_seconds: i64,
    pub minutes: f64,
    pub lessons_invited: i64,
    pub lessons_attended: i64,
    pub usage_rate: Option<f64>,
    pub quality_score: Option<f64>,
    pub top_seconds: i64,
    pub middle_seconds: i64,
    pub low_seconds: i64,
    pub audio_only_seconds: i64,
    pub paused_seconds: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub loss_mean: Option<f64>,
    pub rtt_mean_ms: Option<f64>,
    pub freezes: i64,
    pub reconnects: i64,
    pub called_on: i64,
    pub hands_raised: i64,
}

/// Raw sums per classroom (milliseconds), before roll-up.
#[derive(Debug, Clone, Default)]
struct Sums {
    sessions: i64,
    connected_ms: i64,
    q_ms: [i64; 5],
    bytes_in: i64,
    bytes_out: i64,
    loss_w: f64,
    loss_n: i64,
    rtt_w: f64,
    rtt_n: i64,
    freezes: i64,
    reconnects: i64,
    called_on: i64,
    hands: i64,
    invited: i64,
    attended: i64,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.sessions += o.sessions;
        self.connected_ms += o.connected_ms;
        for i in 0..5 {
            self.q_ms[i] += o.q_ms[i];
        }
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.loss_w += o.loss_w;
        self.loss_n += o.loss_n;
        self.rtt_w += o.rtt_w;
        self.rtt_n += o.rtt_n;
        self.freezes += o.freezes;
        self.reconnects += o.reconnects;
        self.called_on += o.called_on;
        self.hands += o.hands;
        self.invited += o.invited;
        self.attended += o.attended;
    }

    fn fill(&self, row: &mut UsageRow) {
        row.sessions = self.sessions;
        row.connected_seconds = self.connected_ms / 1000;
        row.minutes = (self.connected_ms as f64 / 60_000.0 * 10.0).round() / 10.0;
        row.lessons_invited = self.invited;
        row.lessons_attended = self.attended;
        row.usage_rate = (self.invited > 0).then(|| self.attended as f64 / self.invited as f64);
        let q_total: i64 = self.q_ms.iter().sum();
        row.quality_score = (q_total > 0).then(|| {
            let w = [100.0, 75.0, 50.0, 25.0, 0.0];
            let score: f64 = (0..5).map(|i| w[i] * self.q_ms[i] as f64).sum::<f64>();
            (score / q_total as f64 * 10.0).round() / 10.0
        });
        row.top_seconds = self.q_ms[0] / 1000;
        row.middle_seconds = self.q_ms[1] / 1000;
        row.low_seconds = self.q_ms[2] / 1000;
        row.audio_only_seconds = self.q_ms[3] / 1000;
        row.paused_seconds = self.q_ms[4] / 1000;
        row.bytes_in = self.bytes_in;
        row.bytes_out = self.bytes_out;
        row.loss_mean = (self.loss_n > 0).then(|| self.loss_w / self.loss_n as f64);
        row.rtt_mean_ms = (self.rtt_n > 0).then(|| self.rtt_w / self.rtt_n as f64);
        row.freezes = self.freezes;
        row.reconnects = self.reconnects;
        row.called_on = self.called_on;
        row.hands_raised = self.hands;
    }
}

/// One lesson in a list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LessonSummary {
    pub id: String,
    pub title: String,
    pub host_classroom: String,
    pub started_at: UnixMillis,
    pub ended_at: Option<UnixMillis>,
    pub closed_by_recovery: bool,
    /// Invited classrooms (the host not counted).
    pub invited: i64,
    /// Invited classrooms that joined at least once.
    pub attended: i64,
}

/// One classroom's part in a lesson.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LessonClassroom {
    pub classroom_id: String,
    pub name: Option<String>,
    pub school_id: Option<String>,
    /// `host`, `invited` or `uninvited` (joined without an invitation).
    pub role: String,
    pub attended: bool,
    pub connected_seconds: i64,
    pub sessions: Vec<SessionRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LessonDetail {
    pub lesson: LessonSummary,
    pub classrooms: Vec<LessonClassroom>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayMinutes {
    /// `YYYY-MM-DD` in the report's time zone.
    pub date: String,
    pub minutes: f64,
}

const SESSION_COLUMNS: &str = "id, lesson_id, classroom_id, joined_at, left_at, is_open,
    connected_ms, bytes_in, bytes_out, top_ms, middle_ms, low_ms, audio_only_ms, paused_ms,
    loss_samples, loss_mean, loss_p95, rtt_samples, rtt_mean_ms, rtt_p95_ms, freezes, reconnects,
    called_on, hands_raised, closed_by_recovery, checkpoint_at";

fn session_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: r.get(0)?,
        lesson_id: r.get(1)?,
        classroom_id: r.get(2)?,
        joined_at: r.get(3)?,
        left_at: r.get(4)?,
        is_open: r.get::<_, i64>(5)? != 0,
        connected_ms: r.get(6)?,
        bytes_in: r.get(7)?,
        bytes_out: r.get(8)?,
        top_ms: r.get(9)?,
        middle_ms: r.get(10)?,
        low_ms: r.get(11)?,
        audio_only_ms: r.get(12)?,
        paused_ms: r.get(13)?,
        loss_samples: r.get(14)?,
        loss_mean: r.get(15)?,
        loss_p95: r.get(16)?,
        rtt_samples: r.get(17)?,
        rtt_mean_ms: r.get(18)?,
        rtt_p95_ms: r.get(19)?,
        freezes: r.get(20)?,
        reconnects: r.get(21)?,
        called_on: r.get(22)?,
        hands_raised: r.get(23)?,
        closed_by_recovery: r.get::<_, i64>(24)? != 0,
        checkpoint_at: r.get(25)?,
    })
}

impl Store {
    fn classroom_sums(
        &self,
        period: Period,
        filter: &Filter,
    ) -> Result<HashMap<String, Sums>, StoreError> {
        let mut out: HashMap<String, Sums> = HashMap::new();
        let (cond, fparams) = filter.sql("classroom_id");
        let sql = format!(
            "SELECT classroom_id, COUNT(*), SUM(connected_ms), SUM(top_ms), SUM(middle_ms),
               SUM(low_ms), SUM(audio_only_ms), SUM(paused_ms), SUM(bytes_in), SUM(bytes_out),
               SUM(COALESCE(loss_mean, 0) * loss_samples), SUM(loss_samples),
               SUM(COALESCE(rtt_mean_ms, 0) * rtt_samples), SUM(rtt_samples),
               SUM(freezes), SUM(reconnects), SUM(called_on), SUM(hands_raised)
             FROM usage_session WHERE joined_at >= ? AND joined_at < ?{cond}
             GROUP BY classroom_id"
        );
        let mut params = vec![Value::Integer(period.from), Value::Integer(period.to)];
        params.extend(fparams.iter().cloned());
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(params))?;
        while let Some(r) = rows.next()? {
            let s = Sums {
                sessions: r.get(1)?,
                connected_ms: r.get(2)?,
                q_ms: [r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?],
                bytes_in: r.get(8)?,
                bytes_out: r.get(9)?,
                loss_w: r.get(10)?,
                loss_n: r.get(11)?,
                rtt_w: r.get(12)?,
                rtt_n: r.get(13)?,
                freezes: r.get(14)?,
                reconnects: r.get(15)?,
                called_on: r.get(16)?,
                hands: r.get(17)?,
                ..Default::default()
            };
            out.insert(r.get(0)?, s);
        }
        let (cond, fparams) = filter.sql("i.classroom_id");
        let sql = format!(
            "SELECT i.classroom_id, COUNT(*),
               SUM(CASE WHEN EXISTS (SELECT 1 FROM usage_session u
                 WHERE u.lesson_id = i.lesson_id AND u.classroom_id = i.classroom_id)
                 THEN 1 ELSE 0 END)
             FROM lesson_invite i JOIN lesson l ON l.id = i.lesson_id
             WHERE l.started_at >= ? AND l.started_at < ?{cond}
             GROUP BY i.classroom_id"
        );
        let mut params = vec![Value::Integer(period.from), Value::Integer(period.to)];
        params.extend(fparams);
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(params))?;
        while let Some(r) = rows.next()? {
            let e = out.entry(r.get(0)?).or_default();
            e.invited = r.get(1)?;
            e.attended = r.get(2)?;
        }
        Ok(out)
    }

    /// Usage per classroom, school, county or city over `period`, for every directory entry the
    /// filter admits (unused ones included, with zeros), ordered by id.
    pub fn usage(
        &self,
        dir: &Directory,
        period: Period,
        filter: &Filter,
        level: Level,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let sums = self.classroom_sums(period, filter)?;
        let county_name = |id: &str| dir.county(id).map(|c| c.name.clone());
        let mut groups: BTreeMap<String, (UsageRow, Sums)> = BTreeMap::new();
        for c in dir.classrooms.iter().filter(|c| filter.admits(dir, &c.id)) {
            // `admits` checked that the school exists.
            let school = dir
                .school(&c.school)
                .expect("admitted classroom has a school");
            let (key, template) = match level {
                Level::Classroom => (
                    c.id.clone(),
                    UsageRow {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        school_id: Some(school.id.clone()),
                        school_name: Some(school.name.clone()),
                        county_id: Some(school.county.clone()),
                        county_name: county_name(&school.county),
                        ..Default::default()
                    },
                ),
                Level::School => (
                    school.id.clone(),
                    UsageRow {
                        id: school.id.clone(),
                        name: school.name.clone(),
                        county_id: Some(school.county.clone()),
                        county_name: county_name(&school.county),
                        ..Default::default()
                    },
                ),
                Level::County => (
                    school.county.clone(),
                    UsageRow {
                        id: school.county.clone(),
                        name: county_name(&school.county).unwrap_or_default(),
                        ..Default::default()
                    },
                ),
                Level::City => (
                    String::new(),
                    UsageRow {
                        id: "city".into(),
                        name: dir.city.clone(),
                        ..Default::default()
                    },
                ),
            };
            let entry = groups.entry(key).or_insert((template, Sums::default()));
            entry.0.classrooms += 1;
            if let Some(s) = sums.get(&c.id) {
                entry.1.add(s);
            }
        }
        Ok(groups
            .into_values()
            .map(|(mut row, sums)| {
                sums.fill(&mut row);
                row
            })
            .collect())
    }

    /// Connected minutes per local day in `tz` (a session counts on the day it started), every
    /// day of the period listed.
    pub fn daily_minutes(
        &self,
        period: Period,
        filter: &Filter,
        tz: Tz,
    ) -> Result<Vec<DayMinutes>, StoreError> {
        // Hour buckets in SQL (integer division is the same on PostgreSQL), days in Rust: the
        // time zone math stays out of SQL. Exact for whole-hour offsets such as Asia/Shanghai.
        let (cond, fparams) = filter.sql("classroom_id");
        let sql = format!(
            "SELECT joined_at / 3600000 AS hour, SUM(connected_ms) FROM usage_session
             WHERE joined_at >= ? AND joined_at < ?{cond} GROUP BY joined_at / 3600000"
        );
        let mut params = vec![Value::Integer(period.from), Value::Integer(period.to)];
        params.extend(fparams);
        let mut days: BTreeMap<NaiveDate, i64> = BTreeMap::new();
        let day_of = |ms: i64| {
            tz.timestamp_millis_opt(ms)
                .single()
                .map(|t| t.date_naive())
                .unwrap_or_default()
        };
        let (first, last) = (day_of(period.from), day_of(period.to - 1));
        let mut d = first;
        // Bounded: callers limit periods, this only guards against a runaway loop.
        while d <= last && days.len() < 4000 {
            days.insert(d, 0);
            match d.succ_opt() {
                Some(next) => d = next,
                None => break,
            }
        }
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(params))?;
        while let Some(r) = rows.next()? {
            let hour: i64 = r.get(0)?;
            let ms: i64 = r.get(1)?;
            *days.entry(day_of(hour * 3_600_000)).or_default() += ms;
        }
        Ok(days
            .into_iter()
            .map(|(date, ms)| DayMinutes {
                date: date.format("%Y-%m-%d").to_string(),
                minutes: (ms as f64 / 60_000.0 * 10.0).round() / 10.0,
            })
            .collect())
    }

    /// Lessons started in `period` that involve (host or invite) a classroom the filter admits,
    /// newest first: `(total, page)`.
    /// Lessons started in `period` that invited a classroom the filter admits; with `host`, only
    /// the lessons that classroom hosted (a teacher's own lessons).
    pub fn lessons(
        &self,
        period: Period,
        filter: &Filter,
        host: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<(i64, Vec<LessonSummary>), StoreError> {
        let (cond, fparams) = filter.sql("i.classroom_id");
        let host_cond = if host.is_some() {
            " AND l.host_classroom = ?"
        } else {
            ""
        };
        let scope = format!(
            "l.started_at >= ? AND l.started_at < ?{host_cond}
             AND EXISTS (SELECT 1 FROM lesson_invite i WHERE i.lesson_id = l.id{cond})"
        );
        let mut params = vec![Value::Integer(period.from), Value::Integer(period.to)];
        if let Some(h) = host {
            params.push(Value::Text(h.to_string()));
        }
        params.extend(fparams);
        let total: i64 = self.conn().query_row(
            &format!("SELECT COUNT(*) FROM lesson l WHERE {scope}"),
            params_from_iter(params.iter()),
            |r| r.get(0),
        )?;
        let sql = format!(
            "SELECT l.id, l.title, l.host_classroom, l.started_at, l.ended_at, l.closed_by_recovery,
               (SELECT COUNT(*) FROM lesson_invite i WHERE i.lesson_id = l.id AND i.role = 'invited'),
               (SELECT COUNT(*) FROM lesson_invite i WHERE i.lesson_id = l.id AND i.role = 'invited'
                  AND EXISTS (SELECT 1 FROM usage_session u
                    WHERE u.lesson_id = i.lesson_id AND u.classroom_id = i.classroom_id))
             FROM lesson l WHERE {scope}
             ORDER BY l.started_at DESC, l.id LIMIT ? OFFSET ?"
        );
        params.push(Value::Integer(limit));
        params.push(Value::Integer(offset));
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt
            .query_map(params_from_iter(params), |r| {
                Ok(LessonSummary {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    host_classroom: r.get(2)?,
                    started_at: r.get(3)?,
                    ended_at: r.get(4)?,
                    closed_by_recovery: r.get::<_, i64>(5)? != 0,
                    invited: r.get(6)?,
                    attended: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((total, rows))
    }

    /// One lesson with every classroom's sessions; `None` if unknown. Rows are limited to
    /// classrooms the filter admits; returns `Some` with no rows if none is admitted (the caller
    /// decides whether that is "forbidden").
    pub fn lesson_detail(
        &self,
        dir: &Directory,
        lesson_id: &str,
        filter: &Filter,
    ) -> Result<Option<LessonDetail>, StoreError> {
        let summary = self
            .conn()
            .query_row(
                "SELECT l.id, l.title, l.host_classroom, l.started_at, l.ended_at, l.closed_by_recovery,
                   (SELECT COUNT(*) FROM lesson_invite i WHERE i.lesson_id = l.id AND i.role = 'invited'),
                   (SELECT COUNT(*) FROM lesson_invite i WHERE i.lesson_id = l.id AND i.role = 'invited'
                      AND EXISTS (SELECT 1 FROM usage_session u
                        WHERE u.lesson_id = i.lesson_id AND u.classroom_id = i.classroom_id))
                 FROM lesson l WHERE l.id = ?1",
                [lesson_id],
                |r| {
                    Ok(LessonSummary {
                        id: r.get(0)?,
                        title: r.get(1)?,
                        host_classroom: r.get(2)?,
                        started_at: r.get(3)?,
                        ended_at: r.get(4)?,
                        closed_by_recovery: r.get::<_, i64>(5)? != 0,
                        invited: r.get(6)?,
                        attended: r.get(7)?,
                    })
                },
            )
            .optional()?;
        let Some(lesson) = summary else {
            return Ok(None);
        };
        let mut roles: BTreeMap<String, String> = BTreeMap::new();
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT classroom_id, role FROM lesson_invite WHERE lesson_id = ?1")?;
        for r in stmt.query_map([lesson_id], |r| Ok((r.get(0)?, r.get(1)?)))? {
            let (c, role): (String, String) = r?;
            roles.insert(c, role);
        }
        let mut sessions: BTreeMap<String, Vec<SessionRecord>> = BTreeMap::new();
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {SESSION_COLUMNS} FROM usage_session WHERE lesson_id = ?1 ORDER BY joined_at"
        ))?;
        for s in stmt.query_map([lesson_id], session_from_row)? {
            let s = s?;
            sessions.entry(s.classroom_id.clone()).or_default().push(s);
        }
        for c in sessions.keys() {
            roles.entry(c.clone()).or_insert_with(|| "uninvited".into());
        }
        let classrooms = roles
            .into_iter()
            .filter(|(c, _)| filter.admits(dir, c) || *filter == Filter::default())
            .map(|(c, role)| {
                let sessions = sessions.remove(&c).unwrap_or_default();
                LessonClassroom {
                    name: dir.classroom(&c).map(|x| x.name.clone()),
                    school_id: dir.classroom(&c).map(|x| x.school.clone()),
                    role,
                    attended: !sessions.is_empty(),
                    connected_seconds: sessions.iter().map(|s| s.connected_ms).sum::<i64>() / 1000,
                    sessions,
                    classroom_id: c,
                }
            })
            .collect();
        Ok(Some(LessonDetail { lesson, classrooms }))
    }
}

/// Sorts report rows by a column name (unknown names sort by id); ties break on id.
pub fn sort_rows(rows: &mut [UsageRow], key: &str, descending: bool) {
    fn num(r: &UsageRow, key: &str) -> Option<f64> {
        Some(match key {
            "minutes" => r.minutes,
            "sessions" => r.sessions as f64,
            "lessons_invited" => r.lessons_invited as f64,
            "lessons_attended" => r.lessons_attended as f64,
            "usage_rate" => r.usage_rate.unwrap_or(-1.0),
            "quality_score" => r.quality_score.unwrap_or(-1.0),
            "reconnects" => r.reconnects as f64,
            "called_on" => r.called_on as f64,
            "hands_raised" => r.hands_raised as f64,
            "freezes" => r.freezes as f64,
            "classrooms" => r.classrooms as f64,
            "loss_mean" => r.loss_mean.unwrap_or(-1.0),
            "rtt_mean_ms" => r.rtt_mean_ms.unwrap_or(-1.0),
            _ => return None,
        })
    }
    rows.sort_by(|a, b| {
        let ord = match (num(a, key), num(b, key)) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ if key == "name" => a.name.cmp(&b.name),
            _ => std::cmp::Ordering::Equal,
        };
        let ord = if descending { ord.reverse() } else { ord };
        ord.then_with(|| a.id.cmp(&b.id))
    });
}

/// The least-used classrooms first: lowest usage rate (classrooms never invited count as 0), then
/// fewest minutes.
pub fn sort_least_used(rows: &mut [UsageRow]) {
    rows.sort_by(|a, b| {
        a.usage_rate
            .unwrap_or(0.0)
            .total_cmp(&b.usage_rate.unwrap_or(0.0))
            .then(a.minutes.total_cmp(&b.minutes))
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// The CSV columns of a usage report, in order.
pub const USAGE_CSV_HEADER: &[&str] = &[
    "id",
    "name",
    "school_id",
    "school_name",
    "county_id",
    "county_name",
    "classrooms",
    "sessions",
    "minutes",
    "lessons_invited",
    "lessons_attended",
    "usage_rate",
    "quality_score",
    "top_seconds",
    "middle_seconds",
    "low_seconds",
    "audio_only_seconds",
    "paused_seconds",
    "bytes_in",
    "bytes_out",
    "loss_mean",
    "rtt_mean_ms",
    "freezes",
    "reconnects",
    "called_on",
    "hands_raised",
];

/// Rows as CSV (header first), the same columns and values as the JSON.
pub fn usage_csv(rows: &[UsageRow]) -> String {
    use crate::usage::csv::write_record;
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_default();
    let mut out = String::new();
    write_record(&mut out, USAGE_CSV_HEADER);
    for r in rows {
        write_record(
            &mut out,
            &[
                r.id.clone(),
                r.name.clone(),
                r.school_id.clone().unwrap_or_default(),
                r.school_name.clone().unwrap_or_default(),
                r.county_id.clone().unwrap_or_default(),
                r.county_name.clone().unwrap_or_default(),
                r.classrooms.to_string(),
                r.sessions.to_string(),
                format!("{:.1}", r.minutes),
                r.lessons_invited.to_string(),
                r.lessons_attended.to_string(),
                opt(r.usage_rate),
                opt(r.quality_score),
                r.top_seconds.to_string(),
                r.middle_seconds.to_string(),
                r.low_seconds.to_string(),
                r.audio_only_seconds.to_string(),
                r.paused_seconds.to_string(),
                r.bytes_in.to_string(),
                r.bytes_out.to_string(),
                opt(r.loss_mean),
                opt(r.rtt_mean_ms),
                r.freezes.to_string(),
                r.reconnects.to_string(),
                r.called_on.to_string(),
                r.hands_raised.to_string(),
            ],
        );
    }
    out
}
