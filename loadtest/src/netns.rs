//! Network namespaces for tests and benchmarks: create, enter, run code or
//! commands inside, and a [`LinkPair`] guard that wires two namespaces
//! through the `linkem` relay and tears everything down on drop.
//!
//! Everything here stays inside namespaces this process created: the only
//! addresses used are the two TUN ends (10.77.0.1 / 10.77.0.2 by default).

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::linkem::relay::RelayStats;

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/run/netns";
/// Prefix of namespaces made by [`LinkPair`]; names are `lkm<pid>x<n><a|b>`.
pub const NAME_PREFIX: &str = "lkm";

/// Failure to manage namespaces or the relay process.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("invalid namespace name {0:?}")]
    BadName(String),
    #[error("open namespace {name}")]
    Open {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("setns into {name}")]
    Setns {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("run `{cmd}`")]
    Spawn {
        cmd: String,
        #[source]
        source: io::Error,
    },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("relay binary not found (set LINKEM_BIN or LinkPairBuilder::relay_bin)")]
    NoRelayBinary,
    #[error("relay did not become ready: {0}")]
    RelayStart(String),
}

fn check_name(name: &str) -> Result<(), NetnsError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(NetnsError::BadName(name.into()))
    }
}

/// Runs `ip` with `args`; an error carries its stderr.
pub fn ip(args: &[&str]) -> Result<(), NetnsError> {
    let cmd = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Command {
            cmd,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Moves the calling thread (only) into namespace `name`.
pub fn enter(name: &str) -> Result<(), NetnsError> {
    check_name(name)?;
    let path = Path::new(NETNS_DIR).join(name);
    let f = File::open(&path).map_err(|source| NetnsError::Open {
        name: name.into(),
        source,
    })?;
    // SAFETY: valid fd; CLONE_NEWNET only changes this thread's network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(NetnsError::Setns {
            name: name.into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Runs `f` on a new thread inside namespace `name`; sockets it opens live there.
pub fn spawn_in<T, F>(name: &str, f: F) -> JoinHandle<Result<T, NetnsError>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let name = name.to_string();
    std::thread::spawn(move || {
        enter(&name)?;
        Ok(f())
    })
}

/// A network namespace this process created; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback up.
    pub fn create(name: &str) -> Result<Netns, NetnsError> {
        check_name(name)?;
        ip(&["netns", "add", name])?;
        let ns = Netns { name: name.into() };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` prepared to run inside this namespace (via `ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Best effort: nothing useful to do on failure while dropping.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Deletes namespaces left by [`LinkPair`]s of processes that no longer exist
/// (e.g. a test run killed with SIGKILL).
pub fn cleanup_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = stale_owner(&name) else {
            continue;
        };
        if !process_alive(pid) {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// False for missing and zombie processes (a killed test runner may linger as
/// a zombie until reaped).
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Format: "pid (comm) S ..."; comm may contain spaces, so split after the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// PID encoded in a [`LinkPair`] namespace name, if `name` is one.
fn stale_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (pid, tail) = rest.split_once('x')?;
    let side = tail.strip_suffix(['a', 'b'])?;
    if side.is_empty() || !side.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Builder for [`LinkPair`].
#[derive(Debug, Clone, Default)]
pub struct LinkPairBuilder {
    down: Vec<String>,
    up: Vec<String>,
    relay_bin: Option<PathBuf>,
    realtime: bool,
}

impl LinkPairBuilder {
    /// Named profile for both directions (see `linkem --list-profiles`).
    pub fn profile(mut self, name: &str) -> Self {
        self.down.insert(0, name.into());
        self.up.insert(0, name.into());
        self
    }

    /// Link spec for A→B (downlink, towards the village), applied after the profile.
    pub fn down(mut self, spec: &str) -> Self {
        self.down.push(spec.into());
        self
    }

    /// Link spec for B→A (uplink), applied after the profile.
    pub fn up(mut self, spec: &str) -> Self {
        self.up.push(spec.into());
        self
    }

    /// Path of the `linkem` binary; defaults to `$LINKEM_BIN`, then next to
    /// the current executable (or its parent directory, for test binaries).
    pub fn relay_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.relay_bin = Some(path.into());
        self
    }

    /// Run the relay with real-time priority (steadier timing on a busy host).
    pub fn realtime(mut self, on: bool) -> Self {
        self.realtime = on;
        self
    }

    fn find_relay(&self) -> Result<PathBuf, NetnsError> {
        if let Some(p) = &self.relay_bin {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os("LINKEM_BIN") {
            return Ok(p.into());
        }
        let exe = std::env::current_exe().map_err(|_| NetnsError::NoRelayBinary)?;
        exe.ancestors()
            .skip(1)
            .take(2)
            .map(|d| d.join("linkem"))
            .find(|p| p.is_file())
            .ok_or(NetnsError::NoRelayBinary)
    }

    /// Creates both namespaces, starts the relay and waits until packets flow.
    pub fn start(self) -> Result<LinkPair, NetnsError> {
        cleanup_stale();
        let bin = self.find_relay()?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("{NAME_PREFIX}{}x{n}", std::process::id());
        let a = Netns::create(&format!("{base}a"))?;
        let b = Netns::create(&format!("{base}b"))?;
        let (addr_a, addr_b) = (Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2));
        let mut cmd = Command::new(&bin);
        cmd.args([
            "--ns-a",
            a.name(),
            "--ns-b",
            b.name(),
            "--exit-with-parent",
            "--quiet",
        ])
        .args([
            "--addr-a",
            &addr_a.to_string(),
            "--addr-b",
            &addr_b.to_string(),
        ])
        .args(["--down", &self.down.join(",")])
        .args(["--up", &self.up.join(",")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        if self.realtime {
            cmd.arg("--realtime");
        }
        let mut child = cmd.spawn().map_err(|source| NetnsError::Spawn {
            cmd: bin.display().to_string(),
            source,
        })?;
        // From here on the guard owns everything, so any failure below cleans up.
        let mut pair = LinkPair {
            relay: None,
            output: None,
            b,
            a,
            addr_a,
            addr_b,
        };
        let stdout = child.stdout.take();
        pair.relay = Some(child);
        let (tx, rx) = mpsc::channel();
        if let Some(out) = stdout {
            pair.output = Some(std::thread::spawn(move || {
                let mut lines = BufReader::new(out).lines();
                let first = lines.next();
                let _ = tx.send(first.and_then(Result::ok));
                // Keep draining so the relay never blocks on a full pipe; the
                // statistics come last, at exit.
                lines.map_while(Result::ok).collect()
            }));
        }
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(line)) if line.starts_with("linkem ready") => Ok(pair),
            Ok(Some(line)) => Err(NetnsError::RelayStart(format!(
                "unexpected output {line:?}"
            ))),
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => Err(NetnsError::RelayStart(
                "relay exited (see its stderr)".into(),
            )),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(NetnsError::RelayStart("timeout".into())),
        }
    }
}

/// Two fresh namespaces joined by an emulated link: A (central side) at
/// `addr_a`, B (village side) at `addr_b`. On drop: relay stopped, namespaces deleted.
#[derive(Debug)]
pub struct LinkPair {
    relay: Option<Child>,
    /// Reader of the relay's stdout; yields the lines after `linkem ready`.
    output: Option<JoinHandle<Vec<String>>>,
    // Field order: namespaces are deleted after the relay is stopped (see Drop).
    a: Netns,
    b: Netns,
    addr_a: Ipv4Addr,
    addr_b: Ipv4Addr,
}

impl LinkPair {
    pub fn builder() -> LinkPairBuilder {
        LinkPairBuilder::default()
    }

    pub fn a(&self) -> &Netns {
        &self.a
    }

    pub fn b(&self) -> &Netns {
        &self.b
    }

    pub fn addr_a(&self) -> Ipv4Addr {
        self.addr_a
    }

    pub fn addr_b(&self) -> Ipv4Addr {
        self.addr_b
    }

    /// True while the relay process is running.
    pub fn relay_alive(&mut self) -> bool {
        self.relay
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the relay and returns its packet counters (`None` if it died
    /// without reporting). Dropping the pair does the same silently.
    pub fn stop(mut self) -> Option<RelayStats> {
        self.stop_relay();
        let lines = self.output.take()?.join().ok()?;
        RelayStats::parse(lines.iter().map(String::as_str))
    }

    fn stop_relay(&mut self) {
        let Some(mut child) = self.relay.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for LinkPair {
    fn drop(&mut self) {
        self.stop_relay();
        // Fields drop next: `a` and `b` delete their namespaces.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_names_are_recognised_exactly() {
        assert_eq!(stale_owner("lkm1234x0a"), Some(1234));
        assert_eq!(stale_owner("lkm1234x17b"), Some(1234));
        assert_eq!(stale_owner("lkm1234x0c"), None);
        assert_eq!(stale_owner("lkm1234xa"), None);
        assert_eq!(stale_owner("lkmx0a"), None);
        assert_eq!(stale_owner("other1234x0a"), None);
        assert_eq!(stale_owner("lkm12y4x0a"), None);
    }

    #[test]
    fn liveness_of_self_and_of_an_unused_pid() {
        assert!(process_alive(std::process::id()));
        // Above the kernel's PID_MAX_LIMIT (4 194 304), so never a live process.
        assert!(!process_alive(4_194_305));
    }

    #[test]
    fn names_that_escape_the_netns_dir_are_rejected() {
        for bad in ["", ".", "..", "a/b", "../etc", "a b", "x\0"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("lkm1x0a").is_ok());
    }
}
