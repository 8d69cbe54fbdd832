//! Forwarding through a real server with in-process str0m peers: routes, simulcast layer
//! switches with continuous timestamps, call on / send back, departed tracks.

mod common;

use std::time::Duration;

use common::{TestClient, CLASSROOM_LAYERS, TEACHER_LAYERS};
use tongbu::server::{self, ServerConfig};
use tongbu::signal::message::{ClientMessage, LayerChoice, ServerMessage};

async fn lesson() -> (server::RunningServer, TestClient, TestClient, TestClient) {
    let srv = server::start(ServerConfig::ephemeral())
        .await
        .expect("server starts");
    let demo = srv.demo.clone().expect("demo lesson");
    let host = "c-central-1";
    let teacher = TestClient::connect(
        srv.http_addr,
        ClientMessage::Join {
            token: Some(srv.teacher_token(host)),
            code: None,
        },
        &TEACHER_LAYERS,
    )
    .await;
    let a = TestClient::connect(
        srv.http_addr,
        ClientMessage::Join {
            token: None,
            code: Some(demo.classrooms[0].code.clone()),
        },
        &CLASSROOM_LAYERS,
    )
    .await;
    let b = TestClient::connect(
        srv.http_addr,
        ClientMessage::Join {
            token: None,
            code: Some(demo.classrooms[1].code.clone()),
        },
        &CLASSROOM_LAYERS,
    )
    .await;
    (srv, teacher, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teacher_reaches_every_classroom_and_classrooms_reach_the_teacher() {
    let (srv, teacher, a, b) = lesson().await;
    let demo = srv.demo.clone().unwrap();
    let (ida, idb) = (
        demo.classrooms[0].classroom_id.clone(),
        demo.classrooms[1].classroom_id.clone(),
    );

    let mid_a = a.wait_video_from("c-central-1").await;
    let mid_b = b.wait_video_from("c-central-1").await;
    teacher.wait_video_from(&ida).await;
    teacher.wait_video_from(&idb).await;
    // Classrooms do not see each other until one is called on.
    assert!(a.video_mid_from(&idb).is_none());

    // Received frames are decodable from the start: the first one is a keyframe.
    for (c, mid) in [(&a, mid_a), (&b, mid_b)] {
        let frames = c.frames_on(mid);
        assert!(
            frames[0].keyframe,
            "first forwarded frame must be a keyframe"
        );
    }
    // Audio flows too.
    a.wait_for("teacher audio", Duration::from_secs(5), |s| {
        let audio_mid = s
            .tracks
            .values()
            .find(|t| t.from_teacher && t.kind == tongbu::signal::message::MediaKind::Audio)?;
        (s.received
            .iter()
            .filter(|r| r.mid.to_string() == audio_mid.mid)
            .count()
            > 20)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_switch_changes_width_on_a_keyframe_with_continuous_timestamps() {
    let (_srv, _teacher, a, _b) = lesson().await;
    let mid = a.wait_video_from("c-central-1").await;

    for (choice, width) in [
        (LayerChoice::High, 1280),
        (LayerChoice::Low, 320),
        (LayerChoice::Medium, 640),
    ] {
        a.send(ClientMessage::SetMaxLayer { layer: choice });
        let seen_at = a.frames_on(mid).len();
        a.wait_for(
            &format!("keyframe of width {width}"),
            Duration::from_secs(10),
            |s| {
                s.received
                    .iter()
                    .filter(|r| r.mid == mid)
                    .skip(seen_at)
                    .find(|r| r.width == Some(width))
                    .map(|_| ())
            },
        )
        .await;
    }
    // Let the last layer run a while.
    let settled = a.frames_on(mid).len() + 20;
    a.wait_for("20 more frames", Duration::from_secs(5), |s| {
        (s.received.iter().filter(|r| r.mid == mid).count() >= settled).then_some(())
    })
    .await;
    // Across all switches the rewritten RTP time only moves forward, by about one frame.
    let frames = a.frames_on(mid);
    for w in frames.windows(2) {
        let step = w[1].rtp_time as i64 - w[0].rtp_time as i64;
        assert!(
            (1..=90_000).contains(&step),
            "RTP time step {step} between consecutive frames"
        );
    }
    // Inter frames after a switch belong to the new layer only: sizes identify layers (200/400/600 bytes).
    let last_key = frames.iter().rposition(|f| f.width == Some(640)).unwrap();
    assert!(
        frames[last_key + 1..].iter().all(|f| f.len == 400),
        "only the middle layer flows after switching to it: {:?}",
        frames[last_key..]
            .iter()
            .map(|f| (f.len, f.width))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn called_on_classroom_reaches_the_others_and_leaves_when_sent_back() {
    let (srv, teacher, a, b) = lesson().await;
    let demo = srv.demo.clone().unwrap();
    let ida = demo.classrooms[0].classroom_id.clone();
    teacher.wait_video_from(&ida).await;
    b.wait_video_from("c-central-1").await;

    teacher.send(ClientMessage::CallOn {
        classroom_id: ida.clone(),
    });
    b.wait_video_from(&ida).await;
    b.wait_message("lesson state with called_on", |m| match m {
        ServerMessage::LessonState { lesson }
            if lesson.called_on.as_deref() == Some(ida.as_str()) =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    // A does not receive itself.
    assert!(a.video_mid_from(&ida).is_none());

    teacher.send(ClientMessage::SendBack {
        classroom_id: ida.clone(),
    });
    b.wait_for("called-on tracks removed", Duration::from_secs(10), |s| {
        (!s.tracks.values().any(|t| t.classroom_id == ida)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departed_classroom_is_removed_from_the_teacher_at_once() {
    let (srv, teacher, a, _b) = lesson().await;
    let ida = srv.demo.clone().unwrap().classrooms[0].classroom_id.clone();
    teacher.wait_video_from(&ida).await;
    drop(a); // closes the client task's channel: the WebSocket and peer go away
    teacher
        .wait_for(
            "departed classroom's tracks stopped",
            Duration::from_secs(10),
            |s| (!s.tracks.values().any(|t| t.classroom_id == ida)).then_some(()),
        )
        .await;
}
