//! Assembles a running server: engine, usage pipeline, HTTP. Used by `tongbu serve` and by
//! tests that want a real server in-process.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::auth::{now_unix, Claims, TokenKey};
use crate::directory::Directory;
use crate::engine::{self, EngineConfig, EngineHandle};
use crate::metrics::Metrics;
use crate::signal::message::Invite;

/// A new peer's estimate starts here: audio plus the lowest video layers, modest enough for a
/// village link; probing finds more within seconds.
pub const DEFAULT_INITIAL_ESTIMATE_BPS: u64 = 500_000;

/// How long the demo teacher and admin links printed at startup stay valid.
const DEMO_TEACHER_TOKEN_SECS: i64 = 30 * 24 * 3600;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub http: SocketAddr,
    pub udp: SocketAddr,
    /// ICE-TCP fallback for networks that block UDP; `None`: UDP only.
    pub tcp: Option<SocketAddr>,
    pub public_ips: Vec<IpAddr>,
    /// Where the token secret and the usage database live; `None`: a fresh temporary directory.
    pub data_dir: Option<PathBuf>,
    pub directory: Directory,
    /// Start a demo lesson hosted by the directory's first central-school classroom.
    pub demo: bool,
    pub tuning: crate::bwe::Tuning,
    /// Dates in usage reports are in this zone.
    pub time_zone: chrono_tz::Tz,
    /// `false`: no estimate, always the top layer (the comparison baseline).
    pub adaptation: bool,
    /// Where each new peer's bandwidth estimate starts, bits per second.
    pub initial_estimate_bps: u64,
}

impl ServerConfig {
    /// Loopback only, ephemeral ports, demo directory, nothing left on disk: for tests.
    pub fn ephemeral() -> ServerConfig {
        ServerConfig {
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            udp: SocketAddr::from(([127, 0, 0, 1], 0)),
            tcp: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            public_ips: Vec::new(),
            data_dir: None,
            directory: Directory::demo(),
            demo: true,
            tuning: crate::bwe::Tuning::default(),
            time_zone: chrono_tz::Asia::Shanghai,
            adaptation: true,
            initial_estimate_bps: DEFAULT_INITIAL_ESTIMATE_BPS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error("cannot bind HTTP {0}: {1}")]
    Http(SocketAddr, std::io::Error),
    #[error("data directory {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("demo lesson: {0}")]
    Demo(String),
    #[error("usage store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("usage service: {0}")]
    Usage(#[from] crate::usage::UsageError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoLesson {
    pub lesson_id: String,
    pub teacher_url: String,
    /// The usage page with a city-wide administrator token.
    pub admin_url: String,
    pub classrooms: Vec<Invite>,
}

pub struct RunningServer {
    pub http_addr: SocketAddr,
    pub udp_addr: SocketAddr,
    pub tcp_addr: Option<SocketAddr>,
    pub key: TokenKey,
    pub engine: EngineHandle,
    pub metrics: Arc<Metrics>,
    pub demo: Option<DemoLesson>,
    pub directory: Arc<Directory>,
    pub data_dir: PathBuf,
    /// The usage service; `shutdown` flushes open sessions.
    pub usage: crate::usage::UsageHandle,
    /// The data directory when it was made for this server: removed when the server is dropped.
    _temp_dir: Option<TempDataDir>,
}

impl RunningServer {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    pub fn teacher_token(&self, classroom: &str) -> String {
        self.key.sign(&Claims::Teacher {
            classroom: classroom.to_string(),
            exp: now_unix() + DEMO_TEACHER_TOKEN_SECS,
        })
    }
}

/// A data directory made for one server without one (`ServerConfig::ephemeral`), removed with
/// it, under a random name. Named by process id and a counter alone, directories of exited
/// processes piled up in the temp dir, and a later process with a recycled id opened one: its
/// database, seeded with another directory, overrode the one the test passed in.
#[derive(Debug)]
struct TempDataDir(PathBuf);

impl TempDataDir {
    fn new() -> TempDataDir {
        let unique: u64 = rand::random();
        TempDataDir(
            std::env::temp_dir().join(format!("tongbu-{}-{unique:016x}", std::process::id())),
        )
    }
}

impl Drop for TempDataDir {
    fn drop(&mut self) {
        // SQLite files still open elsewhere stay readable until closed (unlinked, not gone).
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The token secret: kept in the data directory so links survive a restart.
fn load_or_create_key(dir: &PathBuf) -> Result<TokenKey, ServerError> {
    let err = |e| ServerError::DataDir(dir.clone(), e);
    std::fs::create_dir_all(dir).map_err(err)?;
    let path = dir.join("secret.key");
    match std::fs::read(&path) {
        Ok(secret) if secret.len() >= 32 => Ok(TokenKey::new(secret)),
        _ => {
            let secret: [u8; 32] = rand::random();
            std::fs::write(&path, secret).map_err(err)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
            }
            Ok(TokenKey::new(secret.to_vec()))
        }
    }
}

pub async fn start(cfg: ServerConfig) -> Result<RunningServer, ServerError> {
    let (data_dir, temp_dir) = match cfg.data_dir.clone() {
        Some(dir) => (dir, None),
        None => {
            let temp = TempDataDir::new();
            (temp.0.clone(), Some(temp))
        }
    };
    let key = load_or_create_key(&data_dir)?;
    let db_path = data_dir.join("usage.db");
    // The database holds the directory after the first start; `cfg.directory` only seeds it.
    let admin =
        crate::http::admin::AdminState::open(&db_path, key.clone(), &cfg.directory, cfg.time_zone)?;
    let shared_directory = admin.directory();
    // The engine works on a snapshot; directory edits reach new lessons after a restart.
    let directory = Arc::new(
        shared_directory
            .read()
            .map(|d| d.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone()),
    );
    let metrics = Arc::new(Metrics::new());
    let usage_metrics =
        crate::usage::metrics::UsageMetrics::new(&metrics.registry, shared_directory)?;
    let (usage_tx, usage_rx) = mpsc::unbounded_channel();
    let usage = crate::usage::start(
        db_path,
        crate::usage::UsageConfig::default(),
        usage_rx,
        Some(usage_metrics),
    )
    .await?;
    let engine = engine::spawn(EngineConfig {
        udp_bind: cfg.udp,
        tcp_bind: cfg.tcp,
        public_ips: cfg.public_ips.clone(),
        key: key.clone(),
        directory: directory.clone(),
        usage: usage_tx,
        metrics: metrics.clone(),
        tuning: cfg.tuning.clone(),
        adaptation: cfg.adaptation,
        initial_estimate_bps: cfg.initial_estimate_bps,
    })
    .await?;
    let listener = TcpListener::bind(cfg.http)
        .await
        .map_err(|e| ServerError::Http(cfg.http, e))?;
    let http_addr = listener
        .local_addr()
        .map_err(|e| ServerError::Http(cfg.http, e))?;

    let mut server = RunningServer {
        http_addr,
        udp_addr: engine.udp_addr,
        tcp_addr: engine.tcp_addr,
        key,
        engine: engine.clone(),
        metrics: metrics.clone(),
        demo: None,
        directory: directory.clone(),
        data_dir,
        usage,
        _temp_dir: temp_dir,
    };
    let mut demo_links = None;
    if cfg.demo {
        let host = directory
            .classrooms
            .iter()
            .find(|c| {
                directory
                    .school(&c.school)
                    .is_some_and(|s| s.kind == crate::directory::SchoolKind::Central)
            })
            .map(|c| c.id.clone())
            .ok_or_else(|| {
                ServerError::Demo("the directory has no central-school classroom".into())
            })?;
        let invited = directory.default_invites(&host);
        let started = engine
            .start_lesson(&host, "示范课 Demo lesson", invited)
            .await
            .map_err(ServerError::Demo)?;
        let base = server.base_url();
        let demo = DemoLesson {
            lesson_id: started.lesson_id,
            teacher_url: format!("{base}/teacher?token={}", server.teacher_token(&host)),
            admin_url: format!(
                "{base}/admin?token={}",
                server.key.sign(&Claims::Admin {
                    scope: crate::auth::AdminScope::City,
                    exp: now_unix() + DEMO_TEACHER_TOKEN_SECS,
                })
            ),
            classrooms: started
                .invites
                .into_iter()
                .map(|mut i| {
                    i.link = format!("{base}{}", i.link);
                    i
                })
                .collect(),
        };
        let mut links = vec![(
            "主讲教室（教师）/ Teacher".to_string(),
            demo.teacher_url.clone(),
        )];
        links.extend(
            demo.classrooms
                .iter()
                .map(|i| (format!("{} · 课堂码 {}", i.name, i.code), i.link.clone())),
        );
        links.push((
            "使用统计（市级管理员）/ Usage statistics (city admin)".to_string(),
            demo.admin_url.clone(),
        ));
        demo_links = Some(Arc::new(links));
        server.demo = Some(demo);
    }

    let app = crate::http::router(crate::http::AppState {
        engine,
        metrics,
        demo_links,
    })
    .merge(crate::http::admin::router(admin));
    tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, service).await {
            tracing::error!("HTTP server stopped: {e}");
        }
    });
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ephemeral_server_has_its_own_data_dir_and_removes_it() {
        let first = start(ServerConfig::ephemeral()).await.expect("starts");
        let second = start(ServerConfig::ephemeral()).await.expect("starts");
        let dir = first.data_dir.clone();
        assert_ne!(dir, second.data_dir);
        assert!(dir.join("usage.db").is_file(), "{}", dir.display());
        drop(first);
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(second.data_dir.join("usage.db").is_file());
    }
}
