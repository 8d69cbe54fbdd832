//! Shared fixtures for the usage tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tongbu::directory::Directory;
use tongbu::usage::event::UsageEvent;

/// Two counties; k1 has a central school (host classroom) and a village school with two
/// classrooms, k2 one village classroom.
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
name = "二县教学点"
county = "k2"
kind = "village"
[[classroom]]
id = "c-h1"
name = "录播室"
school = "s1"
[[classroom]]
id = "c-a"
name = "一年级"
school = "s2"
[[classroom]]
id = "c-b"
name = "三年级"
school = "s2"
[[classroom]]
id = "c-x"
name = "复式班"
school = "s3"
[[classroom]]
id = "c-h2"
name = "二县录播室"
school = "s3"
"#;

pub fn directory() -> Directory {
    Directory::from_toml(DIRECTORY).unwrap()
}

/// 2025-09-01 08:00 in Asia/Shanghai.
pub const T0: i64 = 1_756_684_800_000;

/// A database path in a fresh directory under the system temp dir; the directory goes when
/// this is dropped, so test runs leave nothing behind.
pub struct TempDb {
    dir: PathBuf,
    path: PathBuf,
}

impl TempDb {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TempDb {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh database under the system temp dir, named after the test and the process (cleared
/// first: a recycled pid must not hand a test another run's data).
pub fn temp_db(name: &str) -> TempDb {
    let dir = std::env::temp_dir().join(format!("tongbu-usage-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("usage.db");
    TempDb { dir, path }
}

#[derive(Clone)]
pub struct ManualClock(pub Arc<AtomicI64>);

impl ManualClock {
    pub fn new(at: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(at)))
    }
    pub fn set(&self, at: i64) {
        self.0.store(at, Ordering::SeqCst);
    }
    pub fn clock(&self) -> tongbu::usage::service::Clock {
        let c = self.0.clone();
        Arc::new(move || c.load(Ordering::SeqCst))
    }
}

pub fn joined(l: &str, c: &str, at: i64) -> UsageEvent {
    UsageEvent::Joined {
        lesson_id: l.into(),
        classroom_id: c.into(),
        at,
    }
}
pub fn left(l: &str, c: &str, at: i64) -> UsageEvent {
    UsageEvent::Left {
        lesson_id: l.into(),
        classroom_id: c.into(),
        at,
    }
}
pub fn started(l: &str, host: &str, invited: &[&str], at: i64) -> UsageEvent {
    UsageEvent::LessonStarted {
        lesson_id: l.into(),
        title: format!("课 {l}"),
        host_classroom: host.into(),
        invited: invited.iter().map(|s| s.to_string()).collect(),
        at,
    }
}
pub fn ended(l: &str, at: i64) -> UsageEvent {
    UsageEvent::LessonEnded {
        lesson_id: l.into(),
        at,
    }
}
