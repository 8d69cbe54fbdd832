//! Fan-out benchmark: one teacher publishes audio and three-layer simulcast VP8 at realistic
//! sizes; N village classrooms each receive the audio and one pinned layer. The server runs as
//! the real `tongbu serve` binary in its own process, so its CPU time and memory are read from
//! `/proc/<pid>` apart from the synthetic clients (str0m peers from `tests/common`, all in this
//! process). For each N it prints what the server says it forwarded (RTP packets/s, or frames/s
//! from a frame-mode server) and datagrams/s, server CPU, packets per server CPU-second, server
//! RSS and RSS per subscriber, added latency percentiles (publisher write → subscriber frame
//! complete, stamped in the payload with the wall clock) and frames lost.
//!
//! Run: `cargo build --release -p tongbu -p tongbu-loadtest &&
//!       $CARGO_TARGET_DIR/release/fanout_bench --subscribers 5,20,50 --secs 30`
//! (`--server-bin` defaults to `tongbu` next to this executable; `--compare-server-bin OLD`
//! runs another build side by side).

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use common::{ClientOptions, Tally, TestClient, TEACHER_LAYERS};
use str0m::media::Mid;
use tongbu::signal::message::{ClientMessage, LayerChoice, ServerMessage};

#[derive(Parser, Debug)]
#[command(about = "Fan-out benchmark: one simulcast publisher, N subscribers")]
struct Args {
    /// Subscriber counts, one fresh server each.
    #[arg(long, value_delimiter = ',', default_value = "5,20,50")]
    subscribers: Vec<usize>,
    /// Measurement window per N, seconds.
    #[arg(long, default_value_t = 30)]
    secs: u64,
    /// Seconds of traffic after every subscriber receives video, before measuring.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// The `tongbu` binary; default: next to this executable.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Side by side: each N also runs this `tongbu` binary (e.g. an older build), alternating
    /// with `--server-bin`; rows are labelled by binary.
    #[arg(long)]
    compare_server_bin: Option<PathBuf>,
    /// Layer every subscriber pins: low, medium or high.
    #[arg(long, default_value = "medium")]
    layer: String,
    /// Delta frame bytes of the q, h and f layers (30 fps: 150, 500, 1500 kbit/s).
    #[arg(long, value_delimiter = ',', default_value = "625,2083,6250")]
    layer_bytes: Vec<usize>,
    /// Keyframes are this many times a delta frame.
    #[arg(long, default_value_t = 4)]
    keyframe_scale: usize,
    /// Extra argument for `tongbu serve` (repeatable), e.g. `--server-arg=--initial-estimate-kbps=3000`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Side by side: each N also runs with these extra `tongbu serve` arguments (repeatable),
    /// e.g. `--compare-arg=--no-adaptation` (no estimator or pacer; pinned layers are the same).
    #[arg(long = "compare-arg", allow_hyphen_values = true)]
    compare_args: Vec<String>,
    /// Record a `perf` profile of the server over each window into `<PATH>-N<n>.data`.
    #[arg(long)]
    perf_out: Option<String>,
    /// Prefix the server command with this (e.g. "valgrind --tool=callgrind"), split on spaces.
    #[arg(long)]
    server_wrapper: Option<String>,
}

/// CPU ticks (user + system) and resident memory of one process.
#[derive(Clone, Copy, Debug, Default)]
struct ProcSample {
    ticks: u64,
    rss_kb: u64,
    hwm_kb: u64,
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

fn proc_sample(pid: &str) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("bad stat"))?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime); `after` starts at field 3.
    let ticks = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        ticks,
        rss_kb: kb("VmRSS:"),
        hwm_kb: kb("VmHWM:"),
    })
}

/// A directory with one central-school classroom and `n` village classrooms in one county: the
/// demo lesson `tongbu serve` starts invites all of them.
fn directory_toml(n: usize) -> String {
    let mut s = String::from(
        "city = \"基准市\"\n\n[[county]]\nid = \"k-bench\"\nname = \"基准县\"\n\n\
         [[school]]\nid = \"s-central\"\nname = \"中心校\"\ncounty = \"k-bench\"\nkind = \"central\"\n\n\
         [[classroom]]\nid = \"c-central-1\"\nname = \"中心校 录播一室\"\nschool = \"s-central\"\n",
    );
    for i in 1..=n {
        s.push_str(&format!(
            "\n[[school]]\nid = \"s-v{i}\"\nname = \"村小{i}\"\ncounty = \"k-bench\"\nkind = \"village\"\n\n\
             [[classroom]]\nid = \"c-v{i}\"\nname = \"村小{i} 教室\"\nschool = \"s-v{i}\"\n"
        ));
    }
    s
}

struct Server {
    child: Child,
    pid: String,
    http: SocketAddr,
    teacher_token: String,
    codes: Vec<String>,
    dir: PathBuf,
}

impl Server {
    async fn start(
        bin: &Path,
        wrapper: Option<&str>,
        extra: &[String],
        n: usize,
    ) -> anyhow::Result<Server> {
        let dir = std::env::temp_dir().join(format!("fanout-bench-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let dir_file = dir.join("directory.toml");
        std::fs::write(&dir_file, directory_toml(n))?;
        let log = std::fs::File::create(dir.join("server.log"))?;
        let mut argv: Vec<String> = wrapper
            .map(|w| w.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        argv.push(bin.display().to_string());
        argv.extend(
            [
                "serve",
                "--http",
                "127.0.0.1:0",
                "--udp",
                "127.0.0.1:0",
                "--data-dir",
            ]
            .map(String::from),
        );
        argv.push(dir.join("data").display().to_string());
        argv.push("--directory".into());
        argv.push(dir_file.display().to_string());
        argv.extend(extra.iter().cloned());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .env("RUST_LOG", "tongbu=warn,str0m=error")
            .kill_on_drop(true);
        // SAFETY: prctl only; the server dies with this process even if it is killed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", argv[0]))?;
        let pid = child.id().ok_or_else(|| anyhow!("no pid"))?.to_string();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(json) = line.strip_prefix("TONGBU_READY ") {
                    return Ok::<_, anyhow::Error>(serde_json::from_str::<serde_json::Value>(
                        json,
                    )?);
                }
            }
            bail!("server exited before it was ready")
        })
        .await
        .context("server not ready within 60 s")
        .and_then(|r| r)
        .map_err(|e| {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            let _ = std::fs::remove_dir_all(&dir);
            e.context(log.lines().next().unwrap_or_default().to_string())
        })?;
        // Keep draining stdout so the server never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let http: SocketAddr = ready["http"]
            .as_str()
            .and_then(|h| h.strip_prefix("http://"))
            .ok_or_else(|| anyhow!("no http in {ready}"))?
            .parse()?;
        let teacher_token = ready["teacher_url"]
            .as_str()
            .and_then(|u| u.split_once("token="))
            .map(|(_, t)| t.to_string())
            .ok_or_else(|| anyhow!("no teacher token"))?;
        let codes: Vec<String> = ready["classrooms"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["code"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if codes.len() != n {
            bail!("expected {n} invited classrooms, got {}", codes.len());
        }
        Ok(Server {
            child,
            pid,
            http,
            teacher_token,
            codes,
            dir,
        })
    }

    async fn metrics(&self) -> anyhow::Result<HashMap<String, f64>> {
        let mut s = tokio::net::TcpStream::connect(self.http).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
            .await?;
        let mut body = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body)).await??;
        Ok(body
            .lines()
            .filter(|l| l.starts_with("tongbu_"))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect())
    }

    async fn stop(mut self) {
        if let Ok(pid) = self.pid.parse::<i32>() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

struct Snapshot {
    at: Instant,
    server: ProcSample,
    me: ProcSample,
    metrics: HashMap<String, f64>,
    tallies: Vec<HashMap<Mid, Tally>>,
    datagrams: u64,
    video_sent: u64,
    audio_sent: u64,
}

async fn snapshot(srv: &Server, teacher: &TestClient, subs: &[TestClient]) -> Snapshot {
    let metrics = srv.metrics().await.unwrap_or_default();
    let mut tallies = Vec::with_capacity(subs.len());
    let mut datagrams = 0;
    for s in subs {
        let st = s.state.lock().unwrap();
        tallies.push(st.tallies.clone());
        datagrams += st.datagrams_in;
    }
    let (video_sent, audio_sent) = {
        let t = teacher.state.lock().unwrap();
        (t.video_frames_sent, t.audio_frames_sent)
    };
    Snapshot {
        at: Instant::now(),
        server: proc_sample(&srv.pid).unwrap_or_default(),
        me: proc_sample("self").unwrap_or_default(),
        metrics,
        tallies,
        datagrams,
        video_sent,
        audio_sent,
    }
}

#[derive(Debug)]
struct Row {
    variant: String,
    n: usize,
    receiving: usize,
    fwd_s: f64,
    /// What `fwd_s` counts: "RTP" (packets) or "frames" (a frame-mode server).
    fwd_unit: &'static str,
    pkts_s: f64,
    mbit_s: f64,
    cpu_pct: f64,
    pkts_per_cpu_s: f64,
    client_cpu_pct: f64,
    rss_idle_mb: f64,
    rss_base_mb: f64,
    rss_mb: f64,
    hwm_mb: f64,
    kb_per_sub: f64,
    video_lat: [f64; 3],
    audio_lat: [f64; 3],
    video_lost: u64,
    video_expected: u64,
    audio_lost: u64,
    audio_expected: u64,
}

async fn run_one(
    args: &Args,
    bin: &Path,
    variant: &str,
    server_args: &[String],
    n: usize,
) -> anyhow::Result<Row> {
    let layer = match args.layer.as_str() {
        "low" => LayerChoice::Low,
        "medium" => LayerChoice::Medium,
        "high" => LayerChoice::High,
        other => bail!("unknown layer {other}"),
    };
    let srv = Server::start(bin, args.server_wrapper.as_deref(), server_args, n).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = proc_sample(&srv.pid)?;

    let opts = ClientOptions {
        layer_bytes: args.layer_bytes.clone(),
        keyframe_scale: args.keyframe_scale,
        frame_interval: Duration::from_micros(33_333),
        keyframe_every: 90,
        audio_bytes: 80,
        audio_interval: Some(Duration::from_millis(20)),
        stamp: true,
        light: true,
        ..Default::default()
    };
    let teacher = TestClient::connect_with(
        srv.http,
        ClientMessage::Join {
            token: Some(srv.teacher_token.clone()),
            code: None,
        },
        &TEACHER_LAYERS,
        opts.clone(),
    )
    .await;
    let welcomed = |s: &common::ClientState| {
        s.messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Welcome { .. }))
            .then_some(())
    };
    teacher
        .wait_for("teacher welcome", Duration::from_secs(30), welcomed)
        .await;
    // Memory per subscriber is counted from here: the lesson with its publisher running.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base = proc_sample(&srv.pid)?;
    let mut subs = Vec::with_capacity(n);
    for code in &srv.codes {
        subs.push(
            TestClient::connect_with(
                srv.http,
                ClientMessage::Join {
                    token: None,
                    code: Some(code.clone()),
                },
                &[],
                opts.clone(),
            )
            .await,
        );
    }
    for s in &subs {
        s.wait_for("welcome", Duration::from_secs(30), welcomed)
            .await;
        s.send(ClientMessage::SetMaxLayer { layer });
    }
    // Every subscriber receives video (or the deadline passes).
    let deadline = Instant::now() + Duration::from_secs(30 + n as u64 / 2);
    let receiving = |subs: &[TestClient]| {
        subs.iter()
            .filter(|s| {
                s.state
                    .lock()
                    .unwrap()
                    .tallies
                    .values()
                    .any(|t| t.video && t.frames >= 10)
            })
            .count()
    };
    while receiving(&subs) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let connected = receiving(&subs);
    if connected < n {
        eprintln!("N={n}: only {connected} subscribers receive video");
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;

    let a = snapshot(&srv, &teacher, &subs).await;
    for s in &subs {
        s.state.lock().unwrap().latencies_us.clear();
    }
    let perf = match &args.perf_out {
        Some(out) => Some(
            Command::new("perf")
                .args(["record", "-F", "999", "-g", "-o"])
                .arg(format!("{out}-N{n}.data"))
                .args(["-p", &srv.pid, "--", "sleep"])
                .arg(args.secs.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("starting perf")?,
        ),
        None => None,
    };
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    let b = snapshot(&srv, &teacher, &subs).await;
    let mut video_lat = Vec::new();
    let mut audio_lat = Vec::new();
    for s in &subs {
        for (video, us) in s.state.lock().unwrap().latencies_us.drain(..) {
            if video {
                video_lat.push(us)
            } else {
                audio_lat.push(us)
            }
        }
    }
    if let Some(mut p) = perf {
        let _ = tokio::time::timeout(Duration::from_secs(30), p.wait()).await;
    }
    drop(subs);
    drop(teacher);
    srv.stop().await;

    let secs = b.at.duration_since(a.at).as_secs_f64();
    let m = |s: &Snapshot, k: &str| s.metrics.get(k).copied().unwrap_or(0.0);
    // Frame-mode servers count frames, RTP-mode servers packets: report whichever is exposed
    // (not comparable across the two; the datagram counts and CPU below are).
    let (fwd_unit, fwd_key) = if b
        .metrics
        .contains_key("tongbu_media_packets_forwarded_total")
    {
        ("RTP", "tongbu_media_packets_forwarded_total")
    } else {
        ("frames", "tongbu_media_frames_forwarded_total")
    };
    let fwd = m(&b, fwd_key) - m(&a, fwd_key);
    let bytes =
        m(&b, "tongbu_media_forwarded_bytes_total") - m(&a, "tongbu_media_forwarded_bytes_total");
    let pkts = (b.datagrams - a.datagrams) as f64;
    let cpu_s = (b.server.ticks - a.server.ticks) as f64 / clk_tck();
    let me_s = (b.me.ticks - a.me.ticks) as f64 / clk_tck();
    // Lost frames in the window: stamped sequence numbers that advanced but never arrived.
    let (mut video_lost, mut video_expected, mut audio_lost, mut audio_expected) = (0, 0, 0, 0);
    for (ta, tb) in a.tallies.iter().zip(&b.tallies) {
        for (mid, t1) in tb {
            let t0 = ta.get(mid).copied().unwrap_or_default();
            let (Some(_), Some(_)) = (t0.first_seq, t1.first_seq) else {
                continue;
            };
            let expected = (t1.last_seq - t0.last_seq) as u64;
            let got = t1.frames - t0.frames;
            let lost = expected.saturating_sub(got);
            if t1.video {
                video_lost += lost;
                video_expected += expected;
            } else {
                audio_lost += lost;
                audio_expected += expected;
            }
        }
    }
    // Subscribers that stopped receiving video altogether count every frame the teacher sent.
    let stalled = a
        .tallies
        .iter()
        .zip(&b.tallies)
        .filter(|(ta, tb)| {
            !tb.iter()
                .any(|(mid, t)| t.video && ta.get(mid).is_some_and(|t0| t.frames > t0.frames))
        })
        .count() as u64;
    video_lost += stalled * (b.video_sent - a.video_sent);
    video_expected += stalled * (b.video_sent - a.video_sent);
    let _ = (a.audio_sent, b.audio_sent);
    video_lat.sort_unstable();
    audio_lat.sort_unstable();
    let pct = |v: &[u32]| {
        [
            percentile(v, 0.50),
            percentile(v, 0.95),
            percentile(v, 0.99),
        ]
    };
    let mb = |kb: u64| kb as f64 / 1024.0;
    Ok(Row {
        variant: variant.to_string(),
        n,
        receiving: connected,
        fwd_s: fwd / secs,
        fwd_unit,
        pkts_s: pkts / secs,
        mbit_s: bytes * 8.0 / secs / 1e6,
        cpu_pct: cpu_s / secs * 100.0,
        pkts_per_cpu_s: if cpu_s > 0.0 { pkts / cpu_s } else { f64::NAN },
        client_cpu_pct: me_s / secs * 100.0,
        rss_idle_mb: mb(idle.rss_kb),
        rss_base_mb: mb(base.rss_kb),
        rss_mb: mb(b.server.rss_kb),
        hwm_mb: mb(b.server.hwm_kb),
        kb_per_sub: (b.server.rss_kb as f64 - base.rss_kb as f64) / n as f64,
        video_lat: pct(&video_lat),
        audio_lat: pct(&audio_lat),
        video_lost,
        video_expected,
        audio_lost,
        audio_expected,
    })
}

fn server_bin(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(b) = &args.server_bin {
        return Ok(b.clone());
    }
    let me = std::env::current_exe()?;
    let sibling = me.with_file_name("tongbu");
    if sibling.exists() {
        return Ok(sibling);
    }
    bail!(
        "no {}: build it with `cargo build --release -p tongbu` or pass --server-bin",
        sibling.display()
    )
}

/// File names, or whole paths when two binaries share a file name.
fn bin_labels(bins: &[PathBuf]) -> Vec<String> {
    let names: Vec<String> = bins
        .iter()
        .map(|b| {
            b.file_name()
                .map_or_else(|| b.display().to_string(), |f| f.to_string_lossy().into())
        })
        .collect();
    let distinct = names.iter().collect::<std::collections::HashSet<_>>().len() == names.len();
    if distinct {
        names
    } else {
        bins.iter().map(|b| b.display().to_string()).collect()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = server_bin(&args)?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "fanout_bench: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let compare = args
        .compare_server_bin
        .as_ref()
        .map(|c| format!(" | compared with {}", c.display()))
        .unwrap_or_default();
    println!(
        "server: {}{compare} | cores: {} | loadavg at start: {}",
        bin.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.trim()
    );
    println!(
        "publisher: audio 80 B / 20 ms + VP8 simulcast q/h/f delta frames {:?} B at 30 fps, \
         keyframes x{} every 3 s; subscribers pin layer {}; window {} s after {} s warm-up",
        args.layer_bytes, args.keyframe_scale, args.layer, args.secs, args.warmup
    );
    println!(
        "packets = datagrams counted at the subscribers' sockets (RTP + RTCP); CPU % of one core; \
         latency = publisher write -> subscriber frame complete, ms; \
         kB/sub = (RSS at the end - RSS with the publisher alone) / N"
    );
    let mut arg_sets = vec![("default".to_string(), args.server_args.clone())];
    if !args.compare_args.is_empty() {
        let mut with = args.server_args.clone();
        with.extend(args.compare_args.iter().cloned());
        arg_sets.push((args.compare_args.join(" "), with));
    }
    let bins: Vec<PathBuf> = std::iter::once(bin)
        .chain(args.compare_server_bin.clone())
        .collect();
    let bin_labels = bin_labels(&bins);
    let mut variants = Vec::new();
    for (bin, bin_label) in bins.iter().zip(&bin_labels) {
        for (arg_label, server_args) in &arg_sets {
            let label = match (bins.len() > 1, arg_sets.len() > 1) {
                (true, true) => format!("{bin_label} {arg_label}"),
                (true, false) => bin_label.clone(),
                _ => arg_label.clone(),
            };
            variants.push((label, bin, server_args));
        }
    }
    let mut rows = Vec::new();
    // Variants alternate within each N, so both see the same machine load.
    for &n in &args.subscribers {
        for (variant, bin, server_args) in &variants {
            match run_one(&args, bin, variant, server_args, n).await {
                Ok(row) => {
                    println!(
                        "[{}] N={:<3} receiving {:>3} | fwd {:>7.0} {}/s {:>7.0} pkts/s {:>6.1} Mbit/s | \
                     server CPU {:>5.1}% -> {:>6.0} pkts/CPU-s | clients CPU {:>5.1}% | \
                     RSS idle {:.1} MB, publisher only {:.1} MB, loaded {:.1} MB (peak {:.1}), {:.0} kB/sub | \
                     video p50/p95/p99 {:.2}/{:.2}/{:.2} ms, audio {:.2}/{:.2}/{:.2} ms | \
                     lost video {}/{}, audio {}/{}",
                    row.variant,
                    row.n,
                    row.receiving,
                    row.fwd_s,
                    row.fwd_unit,
                    row.pkts_s,
                    row.mbit_s,
                    row.cpu_pct,
                    row.pkts_per_cpu_s,
                    row.client_cpu_pct,
                    row.rss_idle_mb,
                    row.rss_base_mb,
                    row.rss_mb,
                    row.hwm_mb,
                    row.kb_per_sub,
                    row.video_lat[0],
                    row.video_lat[1],
                    row.video_lat[2],
                    row.audio_lat[0],
                    row.audio_lat[1],
                    row.audio_lat[2],
                    row.video_lost,
                    row.video_expected,
                    row.audio_lost,
                    row.audio_expected,
                );
                    rows.push(row);
                }
                Err(e) => println!("[{variant}] N={n}: failed: {e:#}"),
            }
        }
    }
    println!();
    println!(
        "| server | N | fwd/s (server metric) | fwd pkts/s | Mbit/s | server CPU % | pkts per CPU-s | clients CPU % \
         | RSS MB | kB per sub | video p50/p95/p99 ms | audio p50/p95/p99 ms | lost video | lost audio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} {} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.0} | {:.2} / {:.2} / {:.2} \
             | {:.2} / {:.2} / {:.2} | {} / {} | {} / {} |",
            r.variant,
            r.n,
            r.fwd_s,
            r.fwd_unit,
            r.pkts_s,
            r.mbit_s,
            r.cpu_pct,
            r.pkts_per_cpu_s,
            r.client_cpu_pct,
            r.rss_mb,
            r.kb_per_sub,
            r.video_lat[0],
            r.video_lat[1],
            r.video_lat[2],
            r.audio_lat[0],
            r.audio_lat[1],
            r.audio_lat[2],
            r.video_lost,
            r.video_expected,
            r.audio_lost,
            r.audio_expected,
        );
    }
    // CPU per packet against the first variant of the same N (same machine load).
    for &n in &args.subscribers {
        let same_n: Vec<&Row> = rows.iter().filter(|r| r.n == n).collect();
        let Some((first, others)) = same_n.split_first() else {
            continue;
        };
        for r in others {
            println!(
                "N={n}: server CPU per packet [{}] {:.1} us / [{}] {:.1} us = {:.2}",
                r.variant,
                1e6 / r.pkts_per_cpu_s,
                first.variant,
                1e6 / first.pkts_per_cpu_s,
                first.pkts_per_cpu_s / r.pkts_per_cpu_s
            );
        }
    }
    for (variant, _, _) in &variants {
        let mine: Vec<&Row> = rows.iter().filter(|r| &r.variant == variant).collect();
        let (Some(first), Some(last)) = (mine.first(), mine.last()) else {
            continue;
        };
        if last.n <= first.n {
            continue;
        }
        println!(
            "[{variant}] RSS slope between N={} and N={}: {:.0} kB per added subscriber",
            first.n,
            last.n,
            (last.rss_mb - first.rss_mb) * 1024.0 / (last.n - first.n) as f64
        );
        // The fixed cost (publisher ingest, timers, HTTP) cancels out between two rows.
        let cpu = (last.cpu_pct - first.cpu_pct) / 100.0;
        let pkts = last.pkts_s - first.pkts_s;
        if cpu > 0.0 && pkts > 0.0 {
            println!(
                "[{variant}] marginal server cost between N={} and N={}: {:.1} us CPU per forwarded \
                 packet ({:.0} pkts per CPU-s; linear extrapolation to one full core: ~{:.0} \
                 subscribers at this layer)",
                first.n,
                last.n,
                cpu * 1e6 / pkts,
                pkts / cpu,
                pkts / cpu / (last.pkts_s / last.n as f64)
            );
        }
    }
    Ok(())
}
