//! Usage accounting end to end: a scripted lesson through the real in-process server (engine,
//! usage service, SQLite store, admin HTTP API) with in-process str0m peers publishing media,
//! in real time. Known join, leave, reconnect and call-on timings must come back from the admin
//! API as connected time within 1 s, exact counts, and roll-ups by school, county and city that
//! agree with the per-classroom rows.

mod common;
mod e2e_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{TestClient, CLASSROOM_LAYERS, TEACHER_LAYERS};
use e2e_support::*;
use serde_json::Value;
use tongbu::auth::{now_unix, AdminScope, Claims};
use tongbu::directory::Directory;
use tongbu::server::{self, ServerConfig};
use tongbu::signal::message::{ClientMessage, ServerMessage};

/// Allowed difference between a duration measured here and the one recorded.
const TOLERANCE_MS: i64 = 1000;

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// Joins and waits for `welcome`; returns the client, when the join was sent and when the
/// welcome arrived (the server stamps the join in between), and the rejoin token.
async fn join(
    http: std::net::SocketAddr,
    join: ClientMessage,
    layers: &[common::Layer],
) -> (TestClient, Instant, Option<String>) {
    let c = TestClient::connect(http, join, layers).await;
    let rejoin = c
        .wait_message("welcome", |m| match m {
            ServerMessage::Welcome { rejoin_token, .. } => Some(rejoin_token.clone()),
            ServerMessage::Error { .. } => panic!("join refused: {m:?}"),
            _ => None,
        })
        .await;
    (c, Instant::now(), rejoin)
}

async fn sleep_until(t: Instant) {
    tokio::time::sleep_until(t.into()).await;
}

fn assert_close(what: &str, recorded_ms: i64, expected_ms: i64) {
    assert!(
        (recorded_ms - expected_ms).abs() <= TOLERANCE_MS,
        "{what}: recorded {recorded_ms} ms, expected {expected_ms} ms (±{TOLERANCE_MS})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_lesson_is_recorded_exactly_and_rolls_up() {
    let test_start = Instant::now();
    let srv = server::start(ServerConfig {
        directory: Directory::from_toml(DIRECTORY).unwrap(),
        ..ServerConfig::ephemeral()
    })
    .await
    .expect("server starts");
    let demo = srv.demo.clone().expect("demo lesson");
    let http = srv.http_addr;
    let code_of = |id: &str| {
        demo.classrooms
            .iter()
            .find(|i| i.classroom_id == id)
            .unwrap_or_else(|| panic!("{id} invited"))
            .code
            .clone()
    };
    let mut invited: Vec<_> = demo
        .classrooms
        .iter()
        .map(|i| i.classroom_id.as_str())
        .collect();
    invited.sort();
    assert_eq!(invited, ["c-a", "c-b", "c-c"], "the host county's villages");

    // --- The script ------------------------------------------------------------------------
    let t0_wall = wall_ms();
    let (teacher, teacher_joined, _) = join(
        http,
        ClientMessage::Join {
            token: Some(srv.teacher_token("c-h")),
            code: None,
        },
        &TEACHER_LAYERS,
    )
    .await;
    let (a, a_joined, a_rejoin) = join(
        http,
        ClientMessage::Join {
            token: None,
            code: Some(code_of("c-a")),
        },
        &CLASSROOM_LAYERS,
    )
    .await;
    let (b, b_joined, _) = join(
        http,
        ClientMessage::Join {
            token: None,
            code: Some(code_of("c-b")),
        },
        &CLASSROOM_LAYERS,
    )
    .await;
    let a_rejoin = a_rejoin.expect("a classroom joining by code gets a rejoin token");

    // The teacher calls on A once; B raises its hand once.
    teacher.send(ClientMessage::CallOn {
        classroom_id: "c-a".into(),
    });
    b.send(ClientMessage::RaiseHand);
    teacher
        .wait_message("A called on and B's hand up", |m| match m {
            ServerMessage::LessonState { lesson }
                if lesson.called_on.as_deref() == Some("c-a")
                    && lesson
                        .classrooms
                        .iter()
                        .any(|c| c.classroom_id == "c-b" && c.hand_raised) =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    // Media really flows both ways before anybody leaves.
    teacher.wait_video_from("c-a").await;
    a.wait_video_from("c-h").await;

    // B stays ~4 s, A ~6 s, then A's link drops and it comes back 2 s later with its rejoin
    // token (well inside the 60 s grace period) and stays ~5 s.
    sleep_until(b_joined + Duration::from_secs(4)).await;
    drop(b);
    let b_left = Instant::now();
    sleep_until(a_joined + Duration::from_secs(6)).await;
    drop(a);
    let a_dropped = Instant::now();
    // The server must have seen the drop before the rejoin (else it is a replacement).
    teacher
        .wait_for("A gone from the lesson", Duration::from_secs(5), |s| {
            s.messages
                .iter()
                .rev()
                .find_map(|m| match m {
                    ServerMessage::LessonState { lesson } => Some(
                        lesson
                            .classrooms
                            .iter()
                            .any(|c| c.classroom_id == "c-a" && !c.connected),
                    ),
                    _ => None,
                })?
                .then_some(())
        })
        .await;
    sleep_until(a_dropped + Duration::from_secs(2)).await;
    let (a2, a_rejoined, _) = join(
        http,
        ClientMessage::Join {
            token: Some(a_rejoin),
            code: None,
        },
        &CLASSROOM_LAYERS,
    )
    .await;
    a2.wait_video_from("c-h").await;
    sleep_until(a_rejoined + Duration::from_secs(5)).await;
    teacher.send(ClientMessage::EndLesson);
    teacher
        .wait_message("lesson_ended", |m| {
            matches!(m, ServerMessage::LessonEnded { .. }).then_some(())
        })
        .await;
    let ended = Instant::now();
    a2.wait_message("lesson_ended at A", |m| {
        matches!(m, ServerMessage::LessonEnded { .. }).then_some(())
    })
    .await;
    srv.usage.checkpoint().await.expect("checkpoint");

    let expect_a = ms(a_dropped - a_joined) + ms(ended - a_rejoined);
    let expect_b = ms(b_left - b_joined);
    let expect_h = ms(ended - teacher_joined);

    // --- The admin API -----------------------------------------------------------------------
    let token = srv.key.sign(&Claims::Admin {
        scope: AdminScope::City,
        exp: now_unix() + 3600,
    });
    let lesson_path = format!("/api/lessons/{}", demo.lesson_id);
    // Closed rows are written as the events arrive; bounded wait for the lesson's end to land.
    let detail = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let d = get_json(http, &lesson_path, &token).await;
            if !d["lesson"]["ended_at"].is_null() {
                break d;
            }
            assert!(Instant::now() < deadline, "lesson never ended: {d}");
            srv.usage.checkpoint().await.expect("checkpoint");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let lesson = &detail["lesson"];
    assert_eq!(lesson["host_classroom"], "c-h");
    assert_eq!(lesson["closed_by_recovery"], false);
    assert_eq!((int(lesson, "invited"), int(lesson, "attended")), (3, 2));
    let started_at = int(lesson, "started_at");
    assert!(
        (t0_wall - 30_000..=t0_wall).contains(&started_at),
        "lesson started with the server"
    );

    // Per classroom, from the lesson detail (milliseconds, every session).
    let by_id: BTreeMap<String, &Value> = detail["classrooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["classroom_id"].as_str().unwrap().to_string(), c))
        .collect();
    let role_of = |id: &str| by_id[id]["role"].as_str().unwrap().to_string();
    assert_eq!(role_of("c-h"), "host");
    for id in ["c-a", "c-b", "c-c"] {
        assert_eq!(role_of(id), "invited");
    }
    assert_eq!(by_id["c-c"]["attended"], false);
    assert!(by_id["c-c"]["sessions"].as_array().unwrap().is_empty());
    let session = |id: &str| {
        let s = by_id[id]["sessions"].as_array().unwrap();
        assert_eq!(s.len(), 1, "{id}: exactly one session: {s:?}");
        s[0].clone()
    };
    let (sa, sb, sh) = (session("c-a"), session("c-b"), session("c-h"));
    // (reconnects, called_on, hands_raised): exact.
    let counts = |s: &Value| {
        (
            int(s, "reconnects"),
            int(s, "called_on"),
            int(s, "hands_raised"),
        )
    };
    assert_eq!(counts(&sa), (1, 1, 0), "A: one reconnect, called on once");
    assert_eq!(counts(&sb), (0, 0, 1), "B: one hand");
    assert_eq!(counts(&sh), (0, 0, 0), "host");
    for (id, s) in [("c-a", &sa), ("c-b", &sb), ("c-h", &sh)] {
        assert_eq!(s["is_open"], false, "{id} closed");
        assert_eq!(s["closed_by_recovery"], false, "{id}");
        assert!(int(s, "bytes_in") > 0, "{id} sent media: {s}");
        assert!(int(s, "bytes_out") > 0, "{id} received media: {s}");
        // Samples come every second; their time covers the connected time except the part
        // after the last sample of each connected stretch (< 1 s each).
        let q: i64 = [
            "top_ms",
            "middle_ms",
            "low_ms",
            "audio_only_ms",
            "paused_ms",
        ]
        .iter()
        .map(|f| int(s, f))
        .sum();
        let c = int(s, "connected_ms");
        let stretches = 1 + int(s, "reconnects");
        assert!(
            q <= c + 100 && q >= c - stretches * 1000 - 500,
            "{id}: quality time {q} ms vs connected {c} ms"
        );
    }
    eprintln!(
        "measured/recorded ms: A {expect_a}/{} (reconnects {}), B {expect_b}/{}, host {expect_h}/{}",
        int(&sa, "connected_ms"),
        int(&sa, "reconnects"),
        int(&sb, "connected_ms"),
        int(&sh, "connected_ms")
    );
    assert_close(
        "A connected (gap not counted)",
        int(&sa, "connected_ms"),
        expect_a,
    );
    assert_close("B connected", int(&sb, "connected_ms"), expect_b);
    assert_close("host connected", int(&sh, "connected_ms"), expect_h);
    // Wall-clock stamps: A's session runs from its first join to the lesson's end.
    let end_wall = wall_ms() - ms(ended.elapsed());
    let a_join_wall = wall_ms() - ms(a_joined.elapsed());
    assert_close("A joined_at", int(&sa, "joined_at"), a_join_wall);
    assert_close("A left_at", int(&sa, "left_at"), end_wall);
    assert_close("lesson ended_at", int(lesson, "ended_at"), end_wall);

    // Per classroom, from /api/usage: the same numbers, plus lessons attended vs invited.
    let rooms = usage_rows(http, &token, "classroom").await;
    assert_eq!(
        rooms.keys().collect::<Vec<_>>(),
        ["c-a", "c-b", "c-c", "c-h", "c-z"]
    );
    // (sessions, invited, attended, reconnects, called_on, hands_raised)
    let expected: [(&str, [i64; 6]); 5] = [
        ("c-a", [1, 1, 1, 1, 1, 0]),
        ("c-b", [1, 1, 1, 0, 0, 1]),
        ("c-c", [0, 1, 0, 0, 0, 0]),
        ("c-h", [1, 1, 1, 0, 0, 0]),
        ("c-z", [0, 0, 0, 0, 0, 0]),
    ];
    for (id, want) in expected {
        let r = &rooms[id];
        let got = [
            "sessions",
            "lessons_invited",
            "lessons_attended",
            "reconnects",
            "called_on",
            "hands_raised",
        ]
        .map(|f| int(r, f));
        assert_eq!(got, want, "{id}: {r}");
    }
    for (id, s) in [("c-a", &sa), ("c-b", &sb), ("c-h", &sh)] {
        let r = &rooms[id];
        assert_eq!(
            int(r, "connected_seconds"),
            int(s, "connected_ms") / 1000,
            "{id}"
        );
        assert_eq!(int(r, "bytes_in"), int(s, "bytes_in"), "{id}");
        assert_eq!(r["usage_rate"].as_f64(), Some(1.0), "{id}");
        let minutes = r["minutes"].as_f64().unwrap();
        assert!(
            (minutes - int(s, "connected_ms") as f64 / 60_000.0).abs() <= 0.05 + 1e-9,
            "{id}: {minutes} minutes"
        );
    }
    assert_close(
        "A seconds",
        int(&rooms["c-a"], "connected_seconds") * 1000,
        expect_a,
    );
    assert_close(
        "B seconds",
        int(&rooms["c-b"], "connected_seconds") * 1000,
        expect_b,
    );
    assert_eq!(rooms["c-c"]["usage_rate"].as_f64(), Some(0.0));
    assert!(rooms["c-z"]["usage_rate"].is_null(), "never invited");

    // Roll-ups: every school, county and city row is the sum of its classrooms' rows; connected
    // and quality seconds are the floor of the summed milliseconds of the sessions.
    let session_ms: BTreeMap<&str, &Value> =
        BTreeMap::from([("c-a", &sa), ("c-b", &sb), ("c-h", &sh)]);
    let members = |level: &str, id: &str| -> Vec<String> {
        rooms
            .iter()
            .filter(|(_, r)| match level {
                "school" => r["school_id"] == id,
                "county" => r["county_id"] == id,
                _ => true,
            })
            .map(|(k, _)| k.clone())
            .collect()
    };
    let mut checked = 0;
    for level in ["school", "county", "city"] {
        let rows = usage_rows(http, &token, level).await;
        let want_ids: &[&str] = match level {
            "school" => &["s1", "s2", "s3", "s4"],
            "county" => &["k1", "k2"],
            _ => &["city"],
        };
        assert_eq!(rows.keys().collect::<Vec<_>>(), want_ids, "{level} rows");
        for (id, row) in &rows {
            let ids = members(level, id);
            assert!(!ids.is_empty(), "{level} {id} has classrooms");
            for f in ADDITIVE {
                let sum: i64 = ids
                    .iter()
                    .map(|c| {
                        if f == "classrooms" {
                            1
                        } else {
                            int(&rooms[c], f)
                        }
                    })
                    .sum();
                assert_eq!(int(row, f), sum, "{level} {id}: {f}");
            }
            for (secs, field) in [
                ("connected_seconds", "connected_ms"),
                ("top_seconds", "top_ms"),
                ("middle_seconds", "middle_ms"),
                ("low_seconds", "low_ms"),
            ] {
                let total: i64 = ids
                    .iter()
                    .filter_map(|c| session_ms.get(c.as_str()))
                    .map(|s| int(s, field))
                    .sum();
                assert_eq!(int(row, secs), total / 1000, "{level} {id}: {secs}");
            }
            let (inv, att) = (int(row, "lessons_invited"), int(row, "lessons_attended"));
            match row["usage_rate"].as_f64() {
                Some(rate) => assert!((rate - att as f64 / inv as f64).abs() < 1e-9),
                None => assert_eq!(inv, 0, "{level} {id}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 4 + 2 + 1);
    // The numbers the roll-ups should show, spelled out.
    let schools = usage_rows(http, &token, "school").await;
    assert_eq!(
        (
            int(&schools["s2"], "lessons_invited"),
            int(&schools["s2"], "lessons_attended")
        ),
        (2, 1),
        "s2: c-a attended, c-c did not"
    );
    let counties = usage_rows(http, &token, "county").await;
    assert_eq!(int(&counties["k2"], "sessions"), 0);
    assert_close(
        "county k1 seconds",
        int(&counties["k1"], "connected_seconds") * 1000,
        expect_a + expect_b + expect_h,
    );

    // Minutes per day add up to the city's minutes.
    let daily = get_json(http, "/api/usage/daily", &token).await;
    let day_minutes: f64 = daily["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["minutes"].as_f64().unwrap())
        .sum();
    let city = &usage_rows(http, &token, "city").await["city"];
    assert!(
        (day_minutes - city["minutes"].as_f64().unwrap()).abs() <= 0.1 + 1e-9,
        "daily {day_minutes} vs city {}",
        city["minutes"]
    );
    // The lesson list agrees with the detail.
    let list = get_json(http, "/api/lessons", &token).await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["lessons"][0], *lesson);

    // A county admin of k2 sees none of it; no token reads nothing.
    let k2 = srv.key.sign(&Claims::Admin {
        scope: AdminScope::County("k2".into()),
        exp: now_unix() + 3600,
    });
    let k2_rooms = usage_rows(http, &k2, "classroom").await;
    assert_eq!(k2_rooms.keys().collect::<Vec<_>>(), ["c-z"]);
    assert_eq!(get(http, "/api/usage", None).await.status, 401);
    assert_eq!(
        get(http, "/api/usage?county=k1", Some(&k2)).await.status,
        403
    );

    srv.usage.shutdown().await.expect("usage shutdown");
    assert!(
        test_start.elapsed() < Duration::from_secs(40),
        "took {:?}",
        test_start.elapsed()
    );
}
