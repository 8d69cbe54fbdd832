//! End to end in real Chromium over an emulated weak link (issue 4): `tongbu serve` and the
//! teacher page in namespace A, one classroom page in namespace B behind the link emulator.
//! The teacher publishes a high-detail 1280×720 camera clip (generated with GStreamer, cached in
//! the target directory). The classroom's downlink runs 2 Mbit/s, then 300 kbit/s for 20 s, then
//! 2 Mbit/s again (30 ms one way). `tests/browser/weaklink.e2e.mjs` samples getStats() in the
//! classroom page every 50 ms and checks:
//! - before the cap the classroom gets more than the lowest layer;
//! - during the cap audio keeps arriving, no interval over 200 ms without a new audio packet;
//! - from 6 s into the cap until it lifts, video is on the lowest layer (≤ 320 px) or paused;
//! - within 22 s after the cap lifts (measured in session 6: 5.2–6.7 s), the video is back on the top layer:
//!   as wide as before the cap, and on the layer the server chose before it. At 1 Mbit/s the
//!   clip's 1280 px layer runs at 10 of 30 fps, and the server offers 640 px at 30 fps instead
//!   (`Tuning::choppy_ratio`);
//! - the server raised a teacher layer over the page's own maxBitrate on the 2 Mbit/s link
//!   (`publish_layers.max_kbps`), and the teacher sent that layer at over 1.3× it (measured:
//!   640 px at up to 1.5 Mbit/s against its own 500 kbit/s);
//! - dynacast follows what the classroom takes: during the cap the teacher is told to encode its
//!   lowest layer alone and sends nothing else, and after it a higher layer is switched back on.
//!
//! The teacher's top layer is capped at 1 Mbit/s (RTCRtpSender.setParameters) so that it fits a
//! 2 Mbit/s link: uncapped, Chromium sends ≈2.5 Mbit/s on it for this clip and a 2 Mbit/s
//! village could never take it (see loadtest/README.md, "Weak-link results").
//!
//! Needs root, Chromium, Node.js and GStreamer (scripts/test.sh installs them); never skipped
//! unless LINKEM_SKIP_NETNS=1. Samples, page logs and the server log stay in
//! `<target>/tmp/weak_link_browser/`. Bounded: about 75 s.

use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::json;
use tongbu_loadtest::browser::{camera_y4m, tail, Run};

const DROP_S: f64 = 20.0;
const RESTORE_S: f64 = 40.0;
const END_S: f64 = 64.0;

/// One test run: the link, the window measured, and what the page script checks.
struct Scenario {
    label: &'static str,
    down: String,
    up: String,
    schedule: Vec<(f64, u64)>,
    measure_from_s: f64,
    end_s: f64,
    /// The checks' config (`capChecks`, `fecChecks`), merged into the script's config.
    checks: serde_json::Value,
}

/// Runs `scenario` in real Chromium (teacher next to the server, classroom behind linkem) and
/// fails the test with the page logs and the server log's tail if a check failed. Skipped when
/// namespaces are off (LINKEM_SKIP_NETNS=1).
fn run_in_chromium(scenario: Scenario) {
    if std::env::var_os("LINKEM_SKIP_NETNS").is_some() {
        eprintln!("LINKEM_SKIP_NETNS set: skipping");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "needs root (or set LINKEM_SKIP_NETNS=1)"
    );
    // One run at a time: two teacher/classroom pairs (four Chromiums) on a 2-core machine slowed
    // setup past the measurement start in CI, and would skew each other's link figures.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let linkem = PathBuf::from(env!("CARGO_BIN_EXE_linkem"));
    // The server binary of the same profile, built by `cargo test --workspace` (or TONGBU_BIN).
    let tongbu = std::env::var_os("TONGBU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| linkem.with_file_name("tongbu"));
    assert!(
        tongbu.is_file(),
        "{} missing: build it first (cargo build --bin tongbu) or set TONGBU_BIN",
        tongbu.display()
    );
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let y4m = camera_y4m(&tmp.join("camera")).expect("camera clip");
    let work = tmp.join(scenario.label);
    let _ = std::fs::remove_dir_all(&work);
    let mut extra = json!({ "teacherMaxKbps": {"f": 1000} });
    if let (Some(extra), Some(checks)) = (extra.as_object_mut(), scenario.checks.as_object()) {
        extra.extend(checks.clone());
    }
    let run = Run {
        label: scenario.label.into(),
        down: scenario.down,
        up: scenario.up,
        schedule: scenario.schedule,
        measure_from_s: scenario.measure_from_s,
        end_s: scenario.end_s,
        // Extra `tongbu serve` flags for a one-off experiment (e.g. `--climb-probes`).
        serve_args: std::env::var("TONGBU_SERVE_ARGS")
            .map(|args| args.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        tongbu_bin: &tongbu,
        linkem_bin: &linkem,
        y4m: &y4m,
        work: work.clone(),
        mode: "test",
        extra,
    };
    let outcome = run.execute().expect("weak-link run");
    if let Some(r) = &outcome.result {
        eprintln!("figures: whole {}", r["whole"]);
        for p in r["phases"].as_array().into_iter().flatten() {
            eprintln!("phase {}", p);
        }
        eprintln!("events {}", r["events"]);
    }
    assert!(
        outcome.passed,
        "weak-link run failed:\n{}\nserver log tail:\n{}\n(samples and page logs in {})",
        outcome.output,
        tail(&outcome.server_log, 40),
        work.display()
    );
}

#[test]
fn weak_link_in_real_chromium() {
    run_in_chromium(Scenario {
        label: "weak_link_browser",
        down: format!("rate=2M,at={DROP_S}s:300k,at={RESTORE_S}s:2M,delay=30ms"),
        up: "rate=2M,delay=30ms".into(),
        schedule: vec![(0.0, 2_000_000), (DROP_S, 300_000), (RESTORE_S, 2_000_000)],
        measure_from_s: 8.0,
        end_s: END_S,
        checks: json!({
            "capChecks": {
                "dropS": DROP_S,
                "restoreS": RESTORE_S,
                "settleS": 6.0,
                "upWithinS": END_S - RESTORE_S - 2.0,
                "maxAudioGapMs": 200,
            },
        }),
    });
}

/// Video FEC end to end: a lossy link with a long round trip (2 Mbit/s, 150 ms one way, 5 %
/// random loss each way), where the server puts the classroom's video in RED and adds ULPFEC.
/// Checks that video decodes, that FEC packets were at least 3 % of the video packets Chromium
/// received, and that Chromium rebuilt lost media packets from them: its histograms
/// WebRTC.Video.ReceivedFecPacketsInPercent and RecoveredMediaPacketsInPercentOfFec, recorded
/// when the connection closes (getStats() reports neither for video). Measured over this session's
/// runs: FEC 12–16 % of the packets, 16–22 media packets rebuilt per 100 FEC packets. Bounded:
/// about 40 s.
#[test]
fn video_fec_in_real_chromium() {
    run_in_chromium(Scenario {
        label: "video_fec_browser",
        down: "rate=2M,delay=150ms,loss=5%".into(),
        up: "rate=2M,delay=150ms,loss=5%".into(),
        schedule: vec![(0.0, 2_000_000)],
        measure_from_s: 12.0,
        end_s: 32.0,
        checks: json!({ "fecChecks": { "minFecPct": 3 } }),
    });
}
