//! Real-Chromium weak-link runs: `tongbu serve` and a teacher Chromium in namespace A, a
//! classroom Chromium in namespace B behind the link emulator, driven by
//! `tests/browser/weaklink.e2e.mjs` (playwright-core). Used by `tests/weak_link_browser.rs` and
//! the `weaklink_bench` binary.
//!
//! Everything started here is stopped on drop (also on panic): the node driver (SIGTERM first,
//! so Playwright closes its browsers), the server, and as a last resort every process still
//! inside the run's namespaces; the [`LinkPair`] then deletes the namespaces.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::linkem::relay::RelayStats;
use crate::netns::LinkPair;

/// Width, height and length of the generated camera clip (TESTBED.md: a high-detail source, not
/// Chromium's trivially compressible default fake camera).
pub const CAMERA_W: u32 = 1280;
pub const CAMERA_H: u32 = 720;
pub const CAMERA_FRAMES: u32 = 150;

/// Debian packages the runs need beyond Chromium and Node.js.
pub const APT_PACKAGES: &str =
    "gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good";

/// The repository root (the workspace, one above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loadtest lives inside the repository")
        .to_path_buf()
}

/// The high-detail camera clip (SMPTE bars moving 3 px/frame under 12 % snow, 1280×720@30,
/// 150 frames, ≈200 MB), made with GStreamer on first use and cached in `dir`. Never committed.
pub fn camera_y4m(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("camera-{CAMERA_W}x{CAMERA_H}-{CAMERA_FRAMES}f.y4m"));
    let expected = 40 + u64::from(CAMERA_FRAMES) * (6 + u64::from(CAMERA_W * CAMERA_H) * 3 / 2);
    // Tests in one binary ask for the clip at once on a clean checkout: one makes it, the others
    // wait and then find it. The per-process part name keeps separate processes apart too.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _making = MAKING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if std::fs::metadata(&path).is_ok_and(|m| m.len() >= expected) {
        return Ok(path);
    }
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("y4m.{}.part", std::process::id()));
    let caps = format!("video/x-raw,format=I420,width={CAMERA_W},height={CAMERA_H},framerate=30/1");
    let n = CAMERA_FRAMES.to_string();
    let out = Command::new("gst-launch-1.0")
        .arg("-q")
        .args([
            "compositor",
            "name=c",
            "sink_1::alpha=0.12",
            "!",
            &caps,
            "!",
            "y4menc",
        ])
        .args(["!", "filesink", &format!("location={}", tmp.display())])
        .args(["videotestsrc", &format!("num-buffers={n}"), "pattern=smpte"])
        .args(["horizontal-speed=3", "!", &caps, "!", "c.sink_0"])
        .args(["videotestsrc", &format!("num-buffers={n}"), "pattern=snow"])
        .args(["!", &caps, "!", "c.sink_1"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!("cannot run gst-launch-1.0 — install it: apt-get install -y {APT_PACKAGES}")
        })?;
    if !out.status.success() {
        bail!(
            "gst-launch-1.0 failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let len = std::fs::metadata(&tmp)?.len();
    if len < expected {
        bail!("the generated camera clip has {len} bytes, expected {expected}");
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// A shell script that runs Chromium inside namespace `ns` (Playwright's `executablePath`).
pub fn chromium_wrapper(dir: &Path, ns: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let chromium = std::env::var("TONGBU_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        bail!("Chromium not found at {chromium} — install it: apt-get install -y chromium");
    }
    let path = dir.join(format!("chromium-{ns}"));
    std::fs::write(
        &path,
        format!("#!/bin/sh\nexec ip netns exec {ns} {chromium} \"$@\"\n"),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// Makes sure `tests/browser/node_modules` has playwright-core (`npm ci` otherwise).
pub fn ensure_node_modules() -> anyhow::Result<PathBuf> {
    let dir = repo_root().join("tests/browser");
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        bail!("node not found — install it: apt-get install -y nodejs npm");
    }
    if !dir.join("node_modules/playwright-core").exists() {
        let st = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .context("npm ci")?;
        if !st.success() {
            bail!("npm ci in {} failed", dir.display());
        }
    }
    Ok(dir)
}

/// Kills a child on drop: SIGTERM, a grace period, then SIGKILL.
pub struct Guarded {
    child: Child,
    what: String,
    grace: Duration,
}

impl Guarded {
    pub fn new(child: Child, what: &str, grace: Duration) -> Self {
        Guarded {
            child,
            what: what.into(),
            grace,
        }
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if !self.alive() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own, not yet reaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let end = Instant::now() + self.grace;
        while Instant::now() < end {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{}: still running after SIGTERM, killing", self.what);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills every process left inside the given namespaces (only ever ones this run created).
pub struct NsReaper(pub Vec<String>);

impl Drop for NsReaper {
    fn drop(&mut self) {
        for ns in &self.0 {
            let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
                continue;
            };
            for pid in String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill(2); these pids live in a namespace this run created.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// `tongbu serve` inside namespace A on 10.77.0.1, until dropped.
pub struct Server {
    _proc: Guarded,
    pub ready: Value,
    pub log: PathBuf,
}

impl Server {
    pub fn start(
        pair: &LinkPair,
        bin: &Path,
        work: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Server> {
        let data = work.join("data");
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data)?;
        let log = work.join("server.log");
        let a = pair.addr_a();
        let mut cmd = pair.a().command(bin);
        cmd.arg("serve")
            .args(["--http", &format!("{a}:18080")])
            .args(["--udp", &format!("{a}:10000")])
            .arg("--data-dir")
            .arg(&data)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "tongbu=info,str0m=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log)?));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut proc = Guarded::new(child, "tongbu serve", Duration::from_secs(3));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(json) = line.strip_prefix("TONGBU_READY ") {
                    let _ = tx.send(json.to_string());
                }
            }
        });
        let Ok(ready) = rx.recv_timeout(Duration::from_secs(30)) else {
            let exited = proc.child().try_wait().ok().flatten();
            bail!(
                "no TONGBU_READY within 30 s (exit: {exited:?}); log:\n{}",
                tail(&log, 30)
            );
        };
        let ready: Value = serde_json::from_str(&ready).context("READY line is JSON")?;
        Ok(Server {
            _proc: proc,
            ready,
            log,
        })
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Milliseconds since the Unix epoch (the node driver's clock).
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// One weak-link run.
pub struct Run<'a> {
    pub label: String,
    /// Link spec for the downlink (A→B) and uplink, as `LinkPair::builder().down/up`.
    pub down: String,
    pub up: String,
    /// The downlink rate over time, `(seconds from the emulator's t=0, bit/s)`, first at 0.
    pub schedule: Vec<(f64, u64)>,
    pub measure_from_s: f64,
    pub end_s: f64,
    /// Extra `tongbu serve` arguments (e.g. `--no-adaptation`).
    pub serve_args: Vec<String>,
    pub tongbu_bin: &'a Path,
    pub linkem_bin: &'a Path,
    pub y4m: &'a Path,
    pub work: PathBuf,
    /// "test" (assertions in the driver) or "bench".
    pub mode: &'static str,
    /// Extra fields merged into the driver's config (capChecks, teacherMaxKbps, ...).
    pub extra: Value,
}

/// What a run produced.
pub struct Outcome {
    pub passed: bool,
    pub output: String,
    pub result: Option<Value>,
    pub server_log: PathBuf,
    /// The link emulator's counters over the whole run (`None` if it did not report).
    pub link: Option<RelayStats>,
}

impl Run<'_> {
    pub fn execute(&self) -> anyhow::Result<Outcome> {
        std::fs::create_dir_all(&self.work)?;
        let browser_dir = ensure_node_modules()?;
        let pair = LinkPair::builder()
            .relay_bin(self.linkem_bin)
            .down(&self.down)
            .up(&self.up)
            .realtime(true)
            .start()
            .context("start the link emulator")?;
        let t0 = SystemTime::now();
        let _reaper = NsReaper(vec![pair.a().name().into(), pair.b().name().into()]);
        let serve_args: Vec<&str> = self.serve_args.iter().map(String::as_str).collect();
        let server = Server::start(&pair, self.tongbu_bin, &self.work, &serve_args)?;
        let chr_a = chromium_wrapper(&self.work, pair.a().name())?;
        let chr_b = chromium_wrapper(&self.work, pair.b().name())?;
        let mut cfg = json!({
            "label": self.label,
            "ready": server.ready,
            "outDir": self.work,
            "chromiumA": chr_a,
            "chromiumB": chr_b,
            "y4m": self.y4m,
            "t0": epoch_ms(t0),
            "schedule": self.schedule.iter().map(|(s, b)| json!({"atS": s, "bps": b})).collect::<Vec<_>>(),
            "measureFromS": self.measure_from_s,
            "endS": self.end_s,
            "mode": self.mode,
        });
        if let (Some(c), Some(e)) = (cfg.as_object_mut(), self.extra.as_object()) {
            c.extend(e.clone());
        }
        let mut node = Command::new("node");
        node.arg(browser_dir.join("weaklink.e2e.mjs"))
            .arg(cfg.to_string())
            .current_dir(&browser_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = node.spawn().context("start node")?;
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let mut driver = Guarded::new(child, "node weaklink.e2e.mjs", Duration::from_secs(8));
        let (tx, rx) = mpsc::channel::<(u8, String)>();
        let tx2 = tx.clone();
        let echo = self.mode == "test";
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let chunk = String::from_utf8_lossy(&buf[..n]).to_string();
                if echo {
                    eprint!(
                        "{}",
                        chunk
                            .lines()
                            .filter(|l| !l.starts_with("WEAKLINK_RESULT"))
                            .map(|l| format!("{l}\n"))
                            .collect::<String>()
                    );
                }
                s.push_str(&chunk);
            }
            let _ = tx.send((1, s));
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            let _ = tx2.send((2, s));
        });
        let limit =
            Duration::from_secs_f64(self.end_s + if self.mode == "bench" { 90.0 } else { 45.0 });
        let started = Instant::now();
        let status = loop {
            if let Some(st) = driver.child().try_wait()? {
                break Some(st);
            }
            if started.elapsed() > limit {
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        drop(driver);
        let _ = t_out.join();
        let _ = t_err.join();
        let mut parts: Vec<(u8, String)> = rx.try_iter().collect();
        parts.sort_by_key(|p| p.0);
        let output: String = parts
            .into_iter()
            .map(|p| p.1)
            .collect::<Vec<_>>()
            .join("\n");
        let result = output
            .lines()
            .find_map(|l| l.strip_prefix("WEAKLINK_RESULT "))
            .and_then(|j| serde_json::from_str(j).ok());
        let passed = status.is_some_and(|s| s.success());
        let output = if status.is_none() {
            format!("{output}\nthe driver timed out after {limit:?}")
        } else {
            output
        };
        let server_log = server.log.clone();
        drop(server);
        // Before the namespaces go: the relay reports its counters as it stops.
        let link = pair.stop();
        drop(_reaper);
        Ok(Outcome {
            passed,
            output,
            result,
            server_log,
            link,
        })
    }
}
