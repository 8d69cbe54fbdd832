//! Crash recovery through the real binary: `tongbu serve` on a temporary data directory, a lesson
//! whose sessions close cleanly, a second lesson whose sessions stay open past a checkpoint,
//! then SIGKILL. After a restart on the same directory no closed session has changed, and the
//! open ones are closed at their last checkpoint and marked `closed_by_recovery`; the admin API
//! shows the same.

mod common;
mod e2e_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{TestClient, CLASSROOM_LAYERS, TEACHER_LAYERS};
use e2e_support::*;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use tongbu::signal::message::{ClientMessage, ServerMessage};

/// The service's checkpoint interval (`UsageConfig::default`).
const CHECKPOINT_MS: i64 = 5_000;

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

type Row = BTreeMap<String, Value>;

/// Every row of `table` keyed by id, read through a read-only connection.
fn rows(db: &Path, table: &str) -> BTreeMap<String, Row> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open usage.db read-only");
    let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
    let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    let mut out = BTreeMap::new();
    let mut q = stmt.query([]).unwrap();
    while let Some(r) = q.next().unwrap() {
        let mut row = Row::new();
        for (i, n) in names.iter().enumerate() {
            let v = match r.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Null => Value::Null,
                rusqlite::types::ValueRef::Integer(x) => Value::from(x),
                rusqlite::types::ValueRef::Real(x) => Value::from(x),
                rusqlite::types::ValueRef::Text(t) => {
                    Value::from(String::from_utf8_lossy(t).to_string())
                }
                rusqlite::types::ValueRef::Blob(_) => Value::from("<blob>"),
            };
            row.insert(n.clone(), v);
        }
        out.insert(row["id"].as_str().unwrap().to_string(), row);
    }
    out
}

fn int(r: &Row, k: &str) -> i64 {
    r[k].as_i64()
        .unwrap_or_else(|| panic!("{k} not an integer in {r:?}"))
}

fn session_of<'a>(
    sessions: &'a BTreeMap<String, Row>,
    lesson: &str,
    classroom: &str,
) -> Option<&'a Row> {
    sessions
        .values()
        .find(|s| s["lesson_id"] == lesson && s["classroom_id"] == classroom)
}

async fn welcome(c: &TestClient) {
    c.wait_message("welcome", |m| match m {
        ServerMessage::Welcome { .. } => Some(()),
        ServerMessage::Error { .. } => panic!("refused: {m:?}"),
        _ => None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_closed_session_and_recovers_open_ones_at_their_checkpoint() {
    let test_start = Instant::now();
    let data = fresh_dir("crash");
    let db = data.join("usage.db");
    let mut srv = tokio::task::spawn_blocking({
        let data = data.clone();
        move || ServerProcess::start(&data)
    })
    .await
    .unwrap();
    let http = srv.http;
    let lesson1 = srv.ready["lesson_id"].as_str().unwrap().to_string();
    let host = "c-central-1";
    let teacher_token = srv.teacher_token();

    // Lesson 1 (the demo lesson): teacher and c-shangcun-1 join, then the teacher ends it, so
    // both sessions are closed.
    let teacher = TestClient::connect(
        http,
        ClientMessage::Join {
            token: Some(teacher_token.clone()),
            code: None,
        },
        &TEACHER_LAYERS,
    )
    .await;
    welcome(&teacher).await;
    let a = TestClient::connect(
        http,
        ClientMessage::Join {
            token: None,
            code: Some(srv.code_of("c-shangcun-1")),
        },
        &CLASSROOM_LAYERS,
    )
    .await;
    welcome(&a).await;
    teacher.send(ClientMessage::CallOn {
        classroom_id: "c-shangcun-1".into(),
    });
    a.send(ClientMessage::RaiseHand);
    teacher.wait_video_from("c-shangcun-1").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    teacher.send(ClientMessage::EndLesson);
    teacher
        .wait_message("lesson 1 ended", |m| {
            matches!(m, ServerMessage::LessonEnded { .. }).then_some(())
        })
        .await;
    drop((teacher, a));

    // Lesson 2: the teacher comes back and starts another lesson; c-xiacun-1 joins and both
    // stay connected past a checkpoint.
    let teacher = TestClient::connect(
        http,
        ClientMessage::Join {
            token: Some(teacher_token),
            code: None,
        },
        &TEACHER_LAYERS,
    )
    .await;
    welcome(&teacher).await;
    teacher.send(ClientMessage::StartLesson {
        title: "第二节".into(),
        invited: vec!["c-xiacun-1".into()],
    });
    let (lesson2, code) = teacher
        .wait_message("lesson 2 started", |m| match m {
            ServerMessage::LessonStarted { lesson, invites } => {
                Some((lesson.lesson_id.clone(), invites[0].code.clone()))
            }
            _ => None,
        })
        .await;
    let b = TestClient::connect(
        http,
        ClientMessage::Join {
            token: None,
            code: Some(code),
        },
        &CLASSROOM_LAYERS,
    )
    .await;
    welcome(&b).await;
    teacher.wait_video_from("c-xiacun-1").await;

    // Wait (bounded) until B has been connected > 5 s and a periodic checkpoint has stored it.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let sessions = rows(&db, "usage_session");
        if let Some(s) = session_of(&sessions, &lesson2, "c-xiacun-1") {
            let joined = int(s, "joined_at");
            if int(s, "checkpoint_at") > joined && wall_ms() - joined > CHECKPOINT_MS + 500 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no checkpoint of B within 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Somewhere inside the next interval.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let killed_at = wall_ms();
    srv.kill9();
    drop((teacher, b));

    // What the dead server left on disk.
    let before_sessions = rows(&db, "usage_session");
    let before_lessons = rows(&db, "lesson");
    let closed_before: Vec<&Row> = before_sessions
        .values()
        .filter(|s| s["lesson_id"] == lesson1.as_str())
        .collect();
    assert_eq!(
        closed_before.len(),
        2,
        "lesson 1: host and c-shangcun-1: {closed_before:?}"
    );
    for s in &closed_before {
        assert_eq!(int(s, "is_open"), 0, "lesson 1 sessions are closed: {s:?}");
    }
    assert!(!before_lessons[&lesson1]["ended_at"].is_null());
    let open_before: Vec<&Row> = before_sessions
        .values()
        .filter(|s| s["lesson_id"] == lesson2.as_str())
        .collect();
    assert_eq!(open_before.len(), 2, "lesson 2: host and c-xiacun-1");
    for s in &open_before {
        assert_eq!(int(s, "is_open"), 1, "lesson 2 sessions are open: {s:?}");
        let cp = int(s, "checkpoint_at");
        assert!(
            killed_at - cp <= CHECKPOINT_MS + 1000,
            "at most one interval lost: checkpoint {} ms before the kill",
            killed_at - cp
        );
        assert!(cp > int(s, "joined_at"), "checkpointed after the join");
        eprintln!(
            "open session of {}: joined {} ms before the kill, last checkpoint {} ms before it, {} ms connected as checkpointed",
            s["classroom_id"],
            killed_at - int(s, "joined_at"),
            killed_at - cp,
            int(s, "connected_ms")
        );
        // The checkpointed connected time runs from the join to the checkpoint.
        let span = cp - int(s, "joined_at");
        assert!(
            (int(s, "connected_ms") - span).abs() <= 1000,
            "connected {} ms over a {span} ms span",
            int(s, "connected_ms")
        );
    }

    // Restart on the same data directory.
    let srv2 = tokio::task::spawn_blocking({
        let data = data.clone();
        move || ServerProcess::start(&data)
    })
    .await
    .unwrap();
    let after_sessions = rows(&db, "usage_session");
    let after_lessons = rows(&db, "lesson");
    for s in &closed_before {
        let id = s["id"].as_str().unwrap();
        assert_eq!(
            &&after_sessions[id], s,
            "a closed session is unchanged by the crash and the restart"
        );
    }
    assert_eq!(after_lessons[&lesson1], before_lessons[&lesson1]);
    for s in &open_before {
        let id = s["id"].as_str().unwrap();
        let mut want = (*s).clone();
        want.insert("is_open".into(), 0.into());
        want.insert("closed_by_recovery".into(), 1.into());
        want.insert("left_at".into(), s["checkpoint_at"].clone());
        assert_eq!(
            after_sessions[id], want,
            "an open session is closed at its last checkpoint, everything else as checkpointed"
        );
    }
    let l2 = &after_lessons[&lesson2];
    assert_eq!(int(l2, "closed_by_recovery"), 1);
    assert_eq!(l2["ended_at"], before_lessons[&lesson2]["checkpoint_at"]);
    assert!(int(l2, "checkpoint_at") > int(l2, "started_at"));

    // Through the admin API of the restarted server, with a token from the CLI.
    let token = admin_token(&data, &["--city"]);
    let d1 = get_json(srv2.http, &format!("/api/lessons/{lesson1}"), &token).await;
    assert_eq!(d1["lesson"]["closed_by_recovery"], false);
    let a1 = d1["classrooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["classroom_id"] == "c-shangcun-1")
        .expect("c-shangcun-1 in lesson 1");
    let s1 = &a1["sessions"][0];
    assert_eq!(
        (&s1["called_on"], &s1["hands_raised"], &s1["is_open"]),
        (&Value::from(1), &Value::from(1), &Value::from(false))
    );
    let d2 = get_json(srv2.http, &format!("/api/lessons/{lesson2}"), &token).await;
    assert_eq!(d2["lesson"]["closed_by_recovery"], true);
    assert_eq!(d2["lesson"]["ended_at"], l2["ended_at"]);
    for c in d2["classrooms"].as_array().unwrap() {
        for s in c["sessions"].as_array().unwrap() {
            assert_eq!(s["closed_by_recovery"], true, "{s}");
            assert_eq!(s["left_at"], s["checkpoint_at"], "{s}");
        }
    }
    let rooms = usage_rows(srv2.http, &token, "classroom").await;
    let b_row = session_of(&after_sessions, &lesson2, "c-xiacun-1").unwrap();
    assert_eq!(
        rooms["c-xiacun-1"]["connected_seconds"],
        Value::from(int(b_row, "connected_ms") / 1000)
    );
    let host_row = &rooms[host];
    assert_eq!(
        [
            &host_row["sessions"],
            &host_row["lessons_invited"],
            &host_row["lessons_attended"]
        ],
        [&Value::from(2), &Value::from(3), &Value::from(2)],
        "hosted lessons 1 and 2, and the restarted server's demo lesson (not joined)"
    );

    drop(srv2);
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_file(data.with_extension("log"));
    assert!(test_start.elapsed() < Duration::from_secs(60));
}
