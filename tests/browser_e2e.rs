//! End to end in real headless Chromium: starts `tongbu serve`, then drives the real teacher and
//! classroom pages with `tests/browser/lesson.e2e.mjs` (playwright-core + /usr/bin/chromium) and
//! proves with getStats() that media flows (see that script's header for the checks).
//!
//! Never skipped: a missing Chromium or Node.js is a failure. The project's test command installs
//! them (`apt-get install -y chromium chromium-driver nodejs npm`) and runs `npm ci` in
//! tests/browser; if node_modules is still missing this test runs `npm ci` itself.
//!
//! Screenshots and page logs land in `<target>/tmp/browser_e2e/` (kept after the run).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const NODE_TIMEOUT: Duration = Duration::from_secs(300);

/// Kills the child process when dropped (also on panic).
struct KillOnDrop(Child, &'static str);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
        eprintln!("browser_e2e: stopped {}", self.1);
    }
}

fn chromium_path() -> PathBuf {
    std::env::var_os("TONGBU_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs a command with a deadline; returns (success, combined output).
fn run_bounded(mut cmd: Command, limit: Duration, what: &str) -> (bool, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel::<String>();
    let tx2 = tx.clone();
    let t1 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    let t2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        let _ = tx2.send(s);
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    };
    let _ = t1.join();
    let _ = t2.join();
    let output: Vec<String> = rx.try_iter().collect();
    let output = output.join("\n");
    match status {
        Some(s) => (s.success(), output),
        None => (false, format!("{output}\n{what} timed out after {limit:?}")),
    }
}

#[test]
fn lesson_end_to_end_in_headless_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");

    // Prerequisites: a failure, never a skip.
    let chromium = chromium_path();
    assert!(
        chromium.exists(),
        "Chromium not found at {} — install it: apt-get install -y chromium chromium-driver",
        chromium.display()
    );
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        node_ok,
        "node not found — install it: apt-get install -y nodejs npm"
    );
    if !browser_dir.join("node_modules/playwright-core").exists() {
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&browser_dir);
        let (ok, out) = run_bounded(npm, Duration::from_secs(180), "npm ci");
        assert!(ok, "npm ci in tests/browser failed:\n{out}");
    }

    // A fresh work directory inside the target dir.
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser_e2e");
    let _ = std::fs::remove_dir_all(&work);
    let data_dir = work.join("data");
    let shots = work.join("out");
    std::fs::create_dir_all(&data_dir).expect("create data dir");
    std::fs::create_dir_all(&shots).expect("create out dir");
    let server_log = work.join("server.log");

    // Start the server and wait for its READY line.
    let mut server = Command::new(env!("CARGO_BIN_EXE_tongbu"));
    server
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data_dir)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(&server_log).expect("create server log"),
        ));
    let mut child = server.spawn().expect("start tongbu serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut server = KillOnDrop(child, "tongbu serve");

    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        // Keep draining stdout so the server never blocks on a full pipe.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(json) = line.strip_prefix("TONGBU_READY ") {
                let _ = tx.send(json.to_string());
            }
        }
    });
    let ready = match rx.recv_timeout(READY_TIMEOUT) {
        Ok(json) => json,
        Err(_) => {
            let exited = server.0.try_wait().ok().flatten();
            panic!(
                "no TONGBU_READY line within {READY_TIMEOUT:?} (server exit: {exited:?}); server log:\n{}",
                tail(&server_log, 40)
            );
        }
    };
    let parsed: serde_json::Value = serde_json::from_str(&ready).expect("READY line is JSON");
    assert!(
        parsed["classrooms"]
            .as_array()
            .map(|a| a.len() >= 2)
            .unwrap_or(false),
        "the demo lesson needs at least two classrooms: {ready}"
    );
    eprintln!("browser_e2e: server ready: {ready}");

    // Drive the pages.
    let mut node = Command::new("node");
    node.arg(browser_dir.join("lesson.e2e.mjs"))
        .arg(&ready)
        .arg(&shots)
        .current_dir(&browser_dir)
        .env("TONGBU_CHROMIUM", &chromium);
    let (ok, out) = run_bounded(node, NODE_TIMEOUT, "node lesson.e2e.mjs");
    eprintln!("{out}");
    let still_running = matches!(server.0.try_wait(), Ok(None));
    drop(server);
    assert!(
        ok,
        "the browser end-to-end run failed (output above; screenshots and page logs in {}); server log tail:\n{}",
        shots.display(),
        tail(&server_log, 60)
    );
    assert!(
        still_running,
        "the server exited during the test; log:\n{}",
        tail(&server_log, 60)
    );
}
