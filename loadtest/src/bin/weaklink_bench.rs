//! Weak-link scenario benchmark in real Chromium (issue 4): four emulated village links, each with
//! adaptation on and with `tongbu serve --no-adaptation`, in one run. Prints per run: audio packets
//! delivered and the longest gap between them, audio heard (after RED repair: samples Chromium
//! did not conceal) and the longest silence, how long audio waited in Chromium's jitter buffer
//! (the measured window, and the first ten seconds of audio: the delay a classroom joins with),
//! video freeze (decoded-frame gaps > 200 ms), time to
//! step down after a drop and back to the top layer after recovery, link utilization; then a
//! per-second timeline of each run (received width/fps/kbps, the server's estimate, loss, RTT and
//! layer, the teacher's send-side estimate and per-layer send rates).
//!
//! Needs root, Chromium, Node.js (tests/browser: npm ci) and GStreamer. Not run in CI:
//!
//!     cargo build --release --workspace --bins
//!     target/release/weaklink_bench | tee loadtest/results/weaklink-$(date +%F).txt
//!
//! Each profile is measured after a warm-up at its first rate while the pages load and media
//! starts (10 s; 20 s at 600 ms RTT, 30 s under bursty loss, later if setup takes longer); the
//! collapse schedule's t=0 is the end of its warm-up.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::{json, Value};
use tongbu_loadtest::browser::{camera_y4m, tail, Run};

const WARMUP_S: f64 = 10.0;

#[derive(Parser, Debug)]
#[command(about = "Weak-link scenario benchmark in real Chromium (root)")]
struct Args {
    /// Profiles to run, comma-separated: village4g, collapse, bursty, satellite; also outage
    /// (a 3 s drop-out of a 2 Mbit/s link, not in the default set).
    #[arg(long, default_value = "village4g,collapse,bursty,satellite")]
    profiles: String,
    /// Modes: adapt (default server), nofec (adapt with --no-video-fec) and/or baseline
    /// (--no-adaptation).
    #[arg(long, default_value = "adapt,baseline")]
    modes: String,
    /// Seconds measured per profile (collapse always runs 75 s: its schedule needs them).
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// maxBitrate of the teacher's top simulcast layer, kbit/s (0: Chromium's own, ≈2.5 Mbit/s
    /// for 720p, which no 2 Mbit/s village link can take).
    #[arg(long, default_value_t = 1000)]
    teacher_f_kbps: u64,
    /// Extra `tongbu serve` argument for the adaptation runs (repeatable), e.g.
    /// `--serve-arg=--up-hold-max-secs=4`.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// tongbu binary (default: next to this one).
    #[arg(long)]
    tongbu: Option<PathBuf>,
    /// Work directory (samples, page and server logs per run).
    #[arg(long, default_value = "/tmp/weaklink-bench")]
    work: PathBuf,
    /// Print each run's per-second timeline.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    timeline: bool,
}

struct Profile {
    name: &'static str,
    what: &'static str,
    down: String,
    up: String,
    schedule: Vec<(f64, u64)>,
    seconds: f64,
    /// Seconds before the measurement starts (pages load and media starts over the link).
    warmup: f64,
}

fn profile(name: &str, seconds: f64) -> anyhow::Result<Profile> {
    let w = WARMUP_S;
    Ok(match name {
        "village4g" => Profile {
            name: "village4g",
            what: "1 Mbit/s, 30 ms ±10 ms one way, 1 % loss",
            down: "village4g".into(),
            up: "village4g".into(),
            schedule: vec![(0.0, 1_000_000)],
            seconds,
            warmup: w,
        },
        "collapse" => Profile {
            name: "collapse",
            what: "2 Mbit/s → 300 kbit/s at 20 s → 2 Mbit/s at 50 s, 30 ms one way",
            down: format!(
                "rate=2M,at={}s:300k,at={}s:2M,delay=30ms",
                w + 20.0,
                w + 50.0
            ),
            up: "rate=2M,delay=30ms".into(),
            schedule: vec![(0.0, 2_000_000), (w + 20.0, 300_000), (w + 50.0, 2_000_000)],
            seconds: seconds.max(75.0),
            warmup: w,
        },
        "outage" => Profile {
            name: "outage",
            what: "2 Mbit/s, 30 ms one way; both ways ~nothing (8 kbit/s) for 3 s at 30 s",
            down: format!("rate=2M,at={}s:8k,at={}s:2M,delay=30ms", w + 30.0, w + 33.0),
            up: format!("rate=2M,at={}s:8k,at={}s:2M,delay=30ms", w + 30.0, w + 33.0),
            schedule: vec![(0.0, 2_000_000), (w + 30.0, 8_000), (w + 33.0, 2_000_000)],
            seconds: seconds.max(60.0),
            warmup: w,
        },
        "bursty" => Profile {
            name: "bursty",
            what: "1 Mbit/s, 150 ms one way, Gilbert-Elliott 0.05/0.3/0.9/0.01 (≈14 % loss)",
            down: "bursty".into(),
            up: "bursty".into(),
            schedule: vec![(0.0, 1_000_000)],
            seconds,
            warmup: 30.0,
        },
        "satellite" => Profile {
            name: "satellite",
            what: "2 Mbit/s, 300 ms one way, 0.5 % loss",
            down: "satellite".into(),
            up: "satellite".into(),
            schedule: vec![(0.0, 2_000_000)],
            seconds,
            warmup: 20.0,
        },
        other => bail!("unknown profile {other}"),
    })
}

fn f(v: &Value, suffix: &str) -> String {
    match v {
        Value::Null => "–".into(),
        Value::Number(n) => format!("{n}{suffix}"),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (network namespaces, TUN devices)");
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("exe dir")?;
    let tongbu = args.tongbu.clone().unwrap_or_else(|| dir.join("tongbu"));
    let linkem = dir.join("linkem");
    for b in [&tongbu, &linkem] {
        if !b.is_file() {
            bail!(
                "{} missing: cargo build --release --workspace --bins",
                b.display()
            );
        }
    }
    let y4m = camera_y4m(&dir.join("weaklink-camera"))?;
    println!(
        "# weaklink_bench: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!(
        "# server {}; camera {} (high detail); teacher top layer maxBitrate {}; warm-up {WARMUP_S} s (bursty 30 s, satellite 20 s)",
        tongbu.display(),
        y4m.display(),
        if args.teacher_f_kbps > 0 {
            format!("{} kbit/s", args.teacher_f_kbps)
        } else {
            "Chromium default".into()
        }
    );
    let mut rows = Vec::new();
    let mut timelines = Vec::new();
    let mut links = Vec::new();
    for name in args.profiles.split(',').filter(|s| !s.is_empty()) {
        let p = profile(name.trim(), args.seconds)?;
        for mode in args.modes.split(',').filter(|s| !s.is_empty()) {
            let (serve_args, mode_label) = match mode.trim() {
                "adapt" => (args.serve_args.clone(), "adapt"),
                "nofec" => {
                    let mut a = args.serve_args.clone();
                    a.push("--no-video-fec".into());
                    (a, "no-fec")
                }
                "baseline" => (vec!["--no-adaptation".to_string()], "no-adapt"),
                other => bail!("unknown mode {other}"),
            };
            let label = format!("{}-{}", p.name, mode_label);
            eprintln!("== {label}: {} ({} s)", p.what, p.seconds);
            let extra = if args.teacher_f_kbps > 0 {
                json!({"teacherMaxKbps": {"f": args.teacher_f_kbps}})
            } else {
                json!({})
            };
            let run = Run {
                label: label.clone(),
                down: p.down.clone(),
                up: p.up.clone(),
                schedule: p.schedule.clone(),
                measure_from_s: p.warmup,
                end_s: p.warmup + p.seconds,
                serve_args,
                tongbu_bin: &tongbu,
                linkem_bin: &linkem,
                y4m: &y4m,
                work: args.work.join(&label),
                mode: "bench",
                extra,
            };
            let out = run.execute()?;
            let Some(r) = out.result else {
                eprintln!(
                    "{label}: no result\n{}\nserver log:\n{}",
                    out.output,
                    tail(&out.server_log, 20)
                );
                rows.push((label, p.what, None));
                continue;
            };
            timelines.push((label.clone(), r["timeline"].clone()));
            links.push((label.clone(), out.link));
            rows.push((label, p.what, Some(r)));
        }
    }

    println!();
    println!(
        "{:<20} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>11} {:>7} {:>6} {:>6} {:>6} {:>9}",
        "run",
        "audio%",
        "aGapMs",
        "heard%",
        "silMs",
        "aBufMs",
        "aBuf0Ms",
        "freeze%",
        "vGapMs",
        "fps",
        "nacks",
        "down s",
        "up s",
        "util%",
        "rxKbps",
        "top",
        "fec/rec"
    );
    for (label, _, r) in &rows {
        let Some(r) = r else {
            println!("{label:<20} (no result)");
            continue;
        };
        let w = &r["whole"];
        let events = r["events"].as_array().cloned().unwrap_or_default();
        let down = events
            .iter()
            .find(|e| e["kind"] == "down")
            .map(|e| format!("{}/{}", f(&e["firstStepS"], ""), f(&e["lowestS"], "")))
            .unwrap_or_else(|| "n/a".into());
        let up = events
            .iter()
            .find(|e| e["kind"] == "up")
            .map(|e| f(&e["topS"], ""))
            .unwrap_or_else(|| "n/a".into());
        println!(
            "{:<20} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>11} {:>7} {:>6} {:>6} {:>6} {:>9}",
            label,
            f(&w["audioDeliveredPct"], ""),
            f(&w["longestAudioGapMs"], ""),
            f(&w["audioHeardPct"], ""),
            f(&w["longestSilenceMs"], ""),
            f(&w["audioBufferMs"], ""),
            f(&r["startAudioBufferMs"], ""),
            f(&w["videoFreezePct"], ""),
            f(&w["longestVideoGapMs"], ""),
            f(&w["fps"], ""),
            f(&w["videoNacks"], ""),
            down,
            up,
            f(&w["utilizationPct"], ""),
            f(&w["receivedKbps"], ""),
            f(&r["topWidth"], ""),
            // Chromium's FEC histograms: FEC % of video packets / media rebuilt per 100 FEC.
            format!(
                "{}/{}",
                f(&r["fecHistograms"]["fecPctOfPackets"], ""),
                f(&r["fecHistograms"]["recoveredPctOfFec"], "")
            ),
        );
    }
    println!();
    println!("Per phase (link rate changes):");
    for (label, what, r) in &rows {
        let Some(r) = r else { continue };
        println!("{label}: {what}");
        for p in r["phases"].as_array().into_iter().flatten() {
            println!(
                "  {:>5}-{:<5} {:>5} kbit/s: audio {}% gap {} ms (heard {}%, silence {} ms), freeze {}% (paused {}%), fps {}, rx {} kbit/s, util {}%",
                f(&p["fromS"], ""),
                f(&p["toS"], "s"),
                p["bps"].as_f64().unwrap_or(0.0) / 1000.0,
                f(&p["audioDeliveredPct"], ""),
                f(&p["longestAudioGapMs"], ""),
                f(&p["audioHeardPct"], ""),
                f(&p["longestSilenceMs"], ""),
                f(&p["videoFreezePct"], ""),
                f(&p["videoPausedFreezePct"], ""),
                f(&p["fps"], ""),
                f(&p["receivedKbps"], ""),
                f(&p["utilizationPct"], ""),
            );
        }
        for e in r["events"].as_array().into_iter().flatten() {
            println!("  event {e}");
        }
    }
    println!();
    println!("Link toward the classroom, whole run (the emulator's counters): packets in, dropped at the full queue, lost at random, delivered; deepest queue");
    for (label, link) in &links {
        match link {
            Some(l) => {
                let d = &l.down;
                println!(
                    "  {label:<20} {:>7} in, {:>5} queue drops ({:.2} %), {:>5} random losses ({:.2} %), {:>7} delivered; queue up to {} bytes",
                    d.packets_in,
                    d.queue_drops,
                    100.0 * d.queue_drops as f64 / d.packets_in.max(1) as f64,
                    d.lost,
                    100.0 * d.lost as f64 / d.packets_in.max(1) as f64,
                    d.delivered,
                    d.max_queue_bytes
                );
            }
            None => println!("  {label:<20} (the emulator did not report)"),
        }
    }
    if args.timeline {
        println!();
        println!("Timelines (every 2 s; s = seconds on the link's clock): link kbit/s | received width, fps, kbit/s, audio packets | server estimate, loss %, RTT, layer (P = paused) | teacher send-side estimate, per-rid send kbit/s | video jitter buffer: ms held per frame / its target");
        for (label, tl) in &timelines {
            println!("-- {label}");
            for t in tl.as_array().into_iter().flatten().step_by(2) {
                println!(
                    "  {:>3} {:>5} | {:>4} {:>2} {:>5} {:>3} | {:>5} {:>5} {:>4} {:>2} | {:>5} {} | {}",
                    f(&t["s"], ""),
                    f(&t["link"], ""),
                    f(&t["w"], ""),
                    f(&t["fps"], ""),
                    f(&t["kbps"], ""),
                    f(&t["aPkts"], ""),
                    f(&t["est"], ""),
                    f(&t["loss"], ""),
                    f(&t["rtt"], ""),
                    f(&t["layer"], ""),
                    f(&t["pubEst"], ""),
                    t["pub"],
                    f(&t["jb"], ""),
                );
            }
        }
    }
    Ok(())
}
