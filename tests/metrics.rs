//! `/metrics` during a real lesson: Prometheus naming, live values, and no label that grows with
//! lessons, sessions, peers or addresses.

mod common;
mod e2e_support;

use std::time::Duration;

use common::{TestClient, CLASSROOM_LAYERS, TEACHER_LAYERS};
use tongbu::server::{self, ServerConfig};

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_conventions_and_move_with_the_lesson() {
    let srv = server::start(ServerConfig::ephemeral()).await.unwrap();
    let demo = srv.demo.clone().unwrap();
    let teacher = TestClient::connect(
        srv.http_addr,
        common::join_as_teacher(&srv),
        &TEACHER_LAYERS,
    )
    .await;
    let a = TestClient::connect(
        srv.http_addr,
        common::join_by_code(&srv, 0),
        &CLASSROOM_LAYERS,
    )
    .await;
    a.wait_video_from("c-central-1").await;
    teacher
        .wait_video_from(&demo.classrooms[0].classroom_id)
        .await;
    // Let a few usage samples and stats reports happen.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let r = e2e_support::get(srv.http_addr, "/metrics", None).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert_eq!(value(&text, "tongbu_lessons_live"), 1.0, "{text}");
    assert_eq!(value(&text, "tongbu_classrooms_connected"), 1.0);
    assert!(value(&text, "tongbu_media_packets_forwarded_total") > 30.0);
    assert!(value(&text, "tongbu_egress_estimate_bps_count") > 0.0);
    assert!(value(&text, "tongbu_received_quality_seconds_total") >= 1.0);
    assert!(
        value(
            &text,
            "tongbu_classroom_connected_seconds_total{classroom=\"c-shangcun-1\""
        ) >= 1.0
    );

    for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        assert!(
            name.starts_with("tongbu_"),
            "{name} lacks the tongbu_ prefix"
        );
        if kind == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
        }
    }
    // Only bounded labels: classroom and school ids from the directory, levels, codes, directions.
    let allowed = [
        "classroom",
        "school",
        "level",
        "code",
        "direction",
        "le",
        "quantile",
    ];
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('{'))
    {
        let labels = &line[line.find('{').unwrap() + 1..line.find('}').unwrap()];
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let key = pair.split('=').next().unwrap();
            assert!(allowed.contains(&key), "unbounded label {key:?} in {line}");
        }
        assert!(
            !line.contains(&demo.lesson_id),
            "a lesson id leaked into {line}"
        );
        assert!(!line.contains("127.0.0.1"), "an address leaked into {line}");
    }
}
