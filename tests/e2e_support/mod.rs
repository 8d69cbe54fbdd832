//! Shared pieces of the end-to-end usage tests: a minimal HTTP client for the admin API on
//! loopback (HTTP/1.0, so every response is a plain body), a directory with two counties, and
//! helpers to read report rows.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Two counties. k1: a central school (the demo host classroom `c-h`), a village school with
/// two classrooms (`c-a`, `c-c`) and a village point (`c-b`); k2: one village classroom (`c-z`),
/// never invited (the demo lesson invites the host county's village classrooms).
pub const DIRECTORY: &str = r#"
city = "测试市"
[[county]]
id = "k1"
name = "一县"
[[county]]
id = "k2"
name = "二县"
[[school]]
id = "s1"
name = "一县中心校"
county = "k1"
kind = "central"
[[school]]
id = "s2"
name = "<b>上村</b>小学"
county = "k1"
kind = "village"
[[school]]
id = "s3"
name = "下村教学点"
county = "k1"
kind = "village"
[[school]]
id = "s4"
name = "二县教学点"
county = "k2"
kind = "village"
[[classroom]]
id = "c-h"
name = "录播室"
school = "s1"
[[classroom]]
id = "c-a"
name = "上村 一年级"
school = "s2"
[[classroom]]
id = "c-c"
name = "上村 三年级"
school = "s2"
[[classroom]]
id = "c-b"
name = "下村 复式班"
school = "s3"
[[classroom]]
id = "c-z"
name = "二县 复式班"
school = "s4"
"#;

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// `GET path` with a bearer token (if any), bounded to 10 s.
pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> HttpResponse {
    tokio::time::timeout(Duration::from_secs(10), get_inner(addr, path, token))
        .await
        .unwrap_or_else(|_| panic!("GET {path} timed out"))
}

async fn get_inner(addr: SocketAddr, path: &str, token: Option<&str>) -> HttpResponse {
    let mut s = TcpStream::connect(addr).await.expect("connect to server");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response has a header block");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// `GET` that must answer 200 with JSON.
pub async fn get_json(addr: SocketAddr, path: &str, token: &str) -> serde_json::Value {
    let r = get(addr, path, Some(token)).await;
    assert_eq!(
        r.status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// The report rows of `/api/usage` at `level`, by id.
pub async fn usage_rows(
    addr: SocketAddr,
    token: &str,
    level: &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let v = get_json(
        addr,
        &format!("/api/usage?level={level}&per_page=1000"),
        token,
    )
    .await;
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

pub fn int(v: &serde_json::Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} is not an integer in {v}"))
}

/// The additive integer columns of a usage row: a roll-up row is the sum of its members'.
pub const ADDITIVE: [&str; 10] = [
    "classrooms",
    "sessions",
    "lessons_invited",
    "lessons_attended",
    "bytes_in",
    "bytes_out",
    "freezes",
    "reconnects",
    "called_on",
    "hands_raised",
];

/// The real `tongbu` binary serving on loopback with a data directory; killed (SIGKILL) when
/// dropped, so a failing test leaves no server behind.
pub struct ServerProcess {
    child: Option<std::process::Child>,
    /// The `TONGBU_READY` JSON.
    pub ready: serde_json::Value,
    pub http: SocketAddr,
}

impl ServerProcess {
    /// Starts `tongbu serve` on ephemeral loopback ports and waits (at most 30 s) for
    /// `TONGBU_READY`. The server's log goes to `DATA_DIR/../<dir name>.log`.
    pub fn start(data_dir: &std::path::Path) -> ServerProcess {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let log_path = data_dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("server log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tongbu"))
            .args(["serve", "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn tongbu serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut guard = ServerProcess {
            child: Some(child),
            ready: serde_json::Value::Null,
            http: "127.0.0.1:1".parse().unwrap(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keeps reading until the process exits, so its stdout never blocks.
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(json) = line.strip_prefix("TONGBU_READY ") {
                    let _ = tx.send(json.to_string());
                }
            }
        });
        let json = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "no TONGBU_READY within 30 s; log: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                )
            });
        guard.ready = serde_json::from_str(&json).expect("READY is JSON");
        guard.http = guard.ready["http"]
            .as_str()
            .and_then(|h| h.strip_prefix("http://"))
            .and_then(|h| h.parse().ok())
            .expect("READY names the HTTP address");
        guard
    }

    /// The demo lesson's invite for `classroom_id`: its six-digit code.
    pub fn code_of(&self, classroom_id: &str) -> String {
        self.ready["classrooms"]
            .as_array()
            .expect("classrooms")
            .iter()
            .find(|c| c["classroom_id"] == classroom_id)
            .and_then(|c| c["code"].as_str())
            .unwrap_or_else(|| panic!("{classroom_id} is invited"))
            .to_string()
    }

    /// The teacher token in the demo lesson's teacher link.
    pub fn teacher_token(&self) -> String {
        self.ready["teacher_url"]
            .as_str()
            .and_then(|u| u.split_once("token="))
            .map(|(_, t)| t.to_string())
            .expect("teacher link has a token")
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `tongbu admin-token --secret-file DIR/secret.key <scope...>`.
pub fn admin_token(data_dir: &std::path::Path, scope: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tongbu"))
        .arg("admin-token")
        .arg("--secret-file")
        .arg(data_dir.join("secret.key"))
        .args(scope)
        .output()
        .expect("run tongbu admin-token");
    assert!(
        out.status.success(),
        "admin-token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A fresh, empty directory for one test's server data.
pub fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tongbu-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("log"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
