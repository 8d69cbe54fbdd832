//! The usage task: consumes [`UsageEvent`]s, keeps sessions in a [`Recorder`], and hands rows to a
//! dedicated writer thread that owns the SQLite connection. The engine only ever does an
//! unbounded, non-blocking `send`; nothing here runs on its task.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::event::{UnixMillis, UsageEvent};
use super::metrics::UsageMetrics;
use super::recorder::{Recorder, RecorderConfig};
use crate::store::{Recovery, Store, StoreError, Writes};

/// Where the service reads the time (wall clock, Unix milliseconds). Tests pass a manual clock.
pub type Clock = Arc<dyn Fn() -> UnixMillis + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}

#[derive(Clone)]
pub struct UsageConfig {
    /// Open sessions are written this often; a crash loses at most this much (default 5 s).
    pub checkpoint_interval: Duration,
    /// A reconnect within this long continues the session (default 60 s).
    pub grace_period: Duration,
    pub clock: Clock,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            checkpoint_interval: Duration::from_secs(5),
            grace_period: Duration::from_secs(60),
            clock: system_clock(),
        }
    }
}

impl std::fmt::Debug for UsageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageConfig")
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("grace_period", &self.grace_period)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the usage service has stopped")]
    Stopped,
    #[error("usage write failed: {0}")]
    Write(String),
}

enum Command {
    Checkpoint(oneshot::Sender<Result<(), String>>),
    Shutdown(oneshot::Sender<Result<(), String>>),
}

struct WriteJob {
    writes: Writes,
    ack: Option<oneshot::Sender<Result<(), String>>>,
}

/// Handle to the running service.
pub struct UsageHandle {
    cmd: mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<()>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// What start-up recovery closed (sessions and lessons a crash had left open).
    pub recovery: Recovery,
}

impl UsageHandle {
    /// Checkpoints now and waits until the rows are committed.
    pub async fn checkpoint(&self) -> Result<(), UsageError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Checkpoint(tx))
            .map_err(|_| UsageError::Stopped)?;
        rx.await
            .map_err(|_| UsageError::Stopped)?
            .map_err(UsageError::Write)
    }

    /// Graceful shutdown: handles the events already queued, closes every session and lesson at
    /// the current time, and waits until that is committed.
    pub async fn shutdown(mut self) -> Result<(), UsageError> {
        let (tx, rx) = oneshot::channel();
        let result = match self.cmd.send(Command::Shutdown(tx)) {
            Ok(()) => rx
                .await
                .map_err(|_| UsageError::Stopped)?
                .map_err(UsageError::Write),
            Err(_) => Err(UsageError::Stopped),
        };
        let _ = (&mut self.task).await;
        if let Some(w) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        result
    }

    /// Stops without flushing, as a crash would (tests). Rows already handed to the writer may
    /// still be committed; nothing else is.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Opens the store, closes what a previous crash left open, and starts the service.
pub async fn start(
    store_path: PathBuf,
    cfg: UsageConfig,
    events: mpsc::UnboundedReceiver<UsageEvent>,
    metrics: Option<UsageMetrics>,
) -> Result<UsageHandle, UsageError> {
    let (store, recovery) = tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&store_path)?;
        let recovery = store.recover()?;
        Ok::<_, StoreError>((store, recovery))
    })
    .await
    .map_err(|_| UsageError::Stopped)??;
    if recovery != Recovery::default() {
        tracing::warn!(
            sessions = recovery.sessions_closed,
            lessons = recovery.lessons_closed,
            "closed usage sessions left open by an unclean stop at their last checkpoint"
        );
    }
    let (write_tx, write_rx) = std::sync::mpsc::channel::<WriteJob>();
    let writer = std::thread::Builder::new()
        .name("usage-writer".into())
        .spawn(move || writer_loop(store, write_rx))
        .map_err(|_| UsageError::Stopped)?;
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let recorder = Recorder::new(RecorderConfig {
        grace_ms: cfg.grace_period.as_millis() as i64,
    });
    let task = tokio::spawn(run(recorder, cfg, events, cmd_rx, write_tx, metrics));
    Ok(UsageHandle {
        cmd: cmd_tx,
        task,
        writer: Some(writer),
        recovery,
    })
}

fn writer_loop(mut store: Store, jobs: std::sync::mpsc::Receiver<WriteJob>) {
    // Rows whose write failed are kept and retried with the next batch; they are full snapshots,
    // so later rows for the same id simply win.
    let mut failed = Writes::default();
    while let Ok(job) = jobs.recv() {
        let mut batch = std::mem::take(&mut failed);
        batch.extend(job.writes);
        // Coalesce whatever else is queued into one transaction.
        let mut acks: Vec<_> = job.ack.into_iter().collect();
        while let Ok(more) = jobs.try_recv() {
            batch.extend(more.writes);
            acks.extend(more.ack);
        }
        let result = store.apply(&batch).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "usage write failed; will retry with the next batch");
            failed = batch;
        }
        for ack in acks {
            let _ = ack.send(result.clone());
        }
    }
}

async fn run(
    mut recorder: Recorder,
    cfg: UsageConfig,
    mut events: mpsc::UnboundedReceiver<UsageEvent>,
    mut cmds: mpsc::UnboundedReceiver<Command>,
    writer: std::sync::mpsc::Sender<WriteJob>,
    metrics: Option<UsageMetrics>,
) {
    let mut interval = tokio::time::interval(cfg.checkpoint_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let write = |writes: Writes, ack: Option<oneshot::Sender<Result<(), String>>>| {
        if writes.is_empty() && ack.is_none() {
            return;
        }
        if let Err(e) = writer.send(WriteJob { writes, ack }) {
            // Only if the writer thread died; the ack (if any) is dropped with it.
            tracing::error!("usage writer is gone: {e}");
        }
    };
    let handle = |recorder: &mut Recorder, ev: UsageEvent| {
        let outcome = recorder.handle(&ev);
        if let Some(m) = &metrics {
            m.observe(&ev, outcome);
        }
    };
    let mut engine_gone = false;
    loop {
        tokio::select! {
            ev = events.recv(), if !engine_gone => match ev {
                Some(ev) => {
                    handle(&mut recorder, ev);
                    // Drain what else is ready so a burst becomes one write.
                    for _ in 0..1024 {
                        match events.try_recv() {
                            Ok(ev) => handle(&mut recorder, ev),
                            Err(_) => break,
                        }
                    }
                    write(recorder.take_closed(), None);
                }
                None => {
                    // The engine is gone: nothing more will happen to open sessions.
                    write(recorder.close_all((cfg.clock)()), None);
                    engine_gone = true;
                }
            },
            _ = interval.tick() => {
                write(recorder.checkpoint((cfg.clock)()), None);
            }
            cmd = cmds.recv() => match cmd {
                Some(Command::Checkpoint(ack)) => {
                    while let Ok(ev) = events.try_recv() {
                        handle(&mut recorder, ev);
                    }
                    write(recorder.checkpoint((cfg.clock)()), Some(ack));
                }
                Some(Command::Shutdown(ack)) => {
                    while let Ok(ev) = events.try_recv() {
                        handle(&mut recorder, ev);
                    }
                    write(recorder.close_all((cfg.clock)()), Some(ack));
                    break;
                }
                None => break,
            },
        }
    }
}
