//! The admin page in real headless Chromium against a seeded database: a store written with known
//! usage over the last five days, the real server on it, and `tests/browser/admin.e2e.mjs`
//! (playwright-core, /usr/bin/chromium) checking that the numbers the page shows equal the API's,
//! that the charts are drawn from them, and that the CSV download has the same rows.
//!
//! Never skipped: a missing Chromium or Node.js is a failure (`scripts/test.sh` installs both and
//! runs `npm ci` in tests/browser; this test runs `npm ci` itself if node_modules is missing).
//! Screenshots land in `<target>/tmp/admin_page/`.

mod e2e_support;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Duration as Days, Utc};
use e2e_support::*;
use tongbu::auth::{now_unix, AdminScope, Claims};
use tongbu::directory::Directory;
use tongbu::server::{self, ServerConfig};
use tongbu::store::query::local_midnight;
use tongbu::store::{LessonRecord, SessionRecord, Store, Writes};

const MIN: i64 = 60_000;
const NODE_TIMEOUT: Duration = Duration::from_secs(120);

/// One lesson a day for the last five days (Asia/Shanghai), hosted by `c-h`, inviting `c-a`,
/// `c-c`, `c-b`. Day i (0 = four days ago): the host 40 min at top quality; `c-a` every day,
/// 20 + 2i min, reconnecting on odd days, called on once, i hands; `c-b` on even days, 15 min
/// of low / audio-only / paused, 2 freezes; `c-c` on day 0 only, 5.5 min at middle quality.
fn seed(db: &std::path::Path) {
    let tz = chrono_tz::Asia::Shanghai;
    let today = Utc::now().with_timezone(&tz).date_naive();
    let mut store = Store::open(db).unwrap();
    store
        .save_directory(&Directory::from_toml(DIRECTORY).unwrap())
        .unwrap();
    let mut w = Writes::default();
    for i in 0..5i64 {
        let day = today - Days::days(4 - i);
        let start = local_midnight(day, tz) + 10 * 60 * MIN; // 10:00 local
        let lesson = format!("L{i}");
        w.lessons.push(LessonRecord {
            id: lesson.clone(),
            title: format!("第{}课", i + 1),
            host_classroom: "c-h".into(),
            invited: vec!["c-a".into(), "c-c".into(), "c-b".into()],
            started_at: start,
            ended_at: Some(start + 40 * MIN),
            checkpoint_at: start + 40 * MIN,
        });
        let session = |classroom: &str, minutes: f64| {
            let ms = (minutes * MIN as f64) as i64;
            SessionRecord {
                id: format!("{lesson}-{classroom}"),
                lesson_id: lesson.clone(),
                classroom_id: classroom.into(),
                joined_at: start,
                left_at: Some(start + ms),
                is_open: false,
                connected_ms: ms,
                bytes_in: ms * 100,
                bytes_out: ms * 300,
                checkpoint_at: start + ms,
                ..Default::default()
            }
        };
        let mut h = session("c-h", 40.0);
        h.top_ms = h.connected_ms;
        w.sessions.push(h);
        let mut a = session("c-a", 20.0 + 2.0 * i as f64);
        a.top_ms = a.connected_ms * 6 / 10;
        a.middle_ms = a.connected_ms * 3 / 10;
        a.low_ms = a.connected_ms - a.top_ms - a.middle_ms;
        a.reconnects = i % 2;
        a.called_on = 1;
        a.hands_raised = i;
        a.loss_samples = 100;
        a.loss_mean = Some(0.01);
        a.rtt_samples = 100;
        a.rtt_mean_ms = Some(80.0);
        w.sessions.push(a);
        if i % 2 == 0 {
            let mut b = session("c-b", 15.0);
            b.low_ms = b.connected_ms / 2;
            b.audio_only_ms = b.connected_ms / 4;
            b.paused_ms = b.connected_ms - b.low_ms - b.audio_only_ms;
            b.freezes = 2;
            w.sessions.push(b);
        }
        if i == 0 {
            let mut c = session("c-c", 5.5);
            c.middle_ms = c.connected_ms;
            w.sessions.push(c);
        }
    }
    store.apply(&w).unwrap();
}

/// Runs `cmd` to completion within `limit`; (success, stdout + stderr).
fn run_bounded(mut cmd: Command, limit: Duration, what: &str) -> (bool, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|mut r| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    })
    .collect();
    let start = Instant::now();
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(s) => break Some(s),
            None if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let out: Vec<String> = readers.into_iter().map(|t| t.join().unwrap()).collect();
    let out = out.join("\n");
    match status {
        Some(s) => (s.success(), out),
        None => (false, format!("{out}\n{what} timed out after {limit:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_page_shows_the_api_numbers_draws_charts_and_downloads_the_same_csv() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    let chromium = std::env::var("TONGBU_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "Chromium not found at {chromium}: apt-get install -y chromium"
    );
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(node_ok, "node not found: apt-get install -y nodejs npm");
    if !browser_dir.join("node_modules/playwright-core").exists() {
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&browser_dir);
        let (ok, out) = run_bounded(npm, Duration::from_secs(180), "npm ci");
        assert!(ok, "npm ci in tests/browser failed:\n{out}");
    }

    let data = fresh_dir("admin-page");
    seed(&data.join("usage.db"));
    let srv = server::start(ServerConfig {
        data_dir: Some(data.clone()),
        directory: Directory::demo(), // the seeded database keeps its own directory
        demo: false,
        ..ServerConfig::ephemeral()
    })
    .await
    .expect("server starts");
    let token = srv.key.sign(&Claims::Admin {
        scope: AdminScope::City,
        exp: now_unix() + 3600,
    });

    // The API reports what was seeded (so the page is compared with right numbers).
    let rooms = usage_rows(srv.http_addr, &token, "classroom").await;
    let num = |id: &str, f: &str| rooms[id][f].as_f64().unwrap();
    assert_eq!(num("c-a", "minutes"), 120.0);
    assert_eq!(num("c-b", "minutes"), 45.0);
    assert_eq!(num("c-c", "minutes"), 5.5);
    assert_eq!(num("c-h", "minutes"), 200.0);
    assert_eq!(num("c-b", "usage_rate"), 0.6);
    assert_eq!(num("c-c", "usage_rate"), 0.2);
    assert_eq!(int(&rooms["c-a"], "reconnects"), 2);
    assert_eq!(int(&rooms["c-a"], "hands_raised"), 10);
    assert!(rooms["c-z"]["usage_rate"].is_null());
    let days = get_json(srv.http_addr, "/api/usage/daily", &token).await;
    let busy = days["days"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["minutes"].as_f64().unwrap() > 0.0)
        .count();
    assert_eq!(busy, 5, "five days with lessons");

    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin_page");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();
    let args = serde_json::json!({
        "base": srv.base_url(),
        "token": token,
        "out_dir": out_dir,
    });
    let mut node = Command::new("node");
    node.arg(browser_dir.join("admin.e2e.mjs"))
        .arg(args.to_string())
        .env("TONGBU_CHROMIUM", &chromium)
        .current_dir(&browser_dir);
    let (ok, out) =
        tokio::task::spawn_blocking(move || run_bounded(node, NODE_TIMEOUT, "node admin.e2e.mjs"))
            .await
            .unwrap();
    eprintln!("{out}");
    assert!(ok, "the admin page check failed (output above)");
    for shot in ["admin-zh.png", "admin-en-school.png"] {
        let meta = std::fs::metadata(out_dir.join(shot)).expect(shot);
        assert!(meta.len() > 10_000, "{shot} is a real screenshot");
    }

    srv.usage.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&data);
}
