//! Where snapshots come from. The data path never sees this: a source only calls
//! [`SnapshotSink::apply`], which compiles, binds new listeners and swaps the config.
//! The control-plane stream is another [`ConfigSource`]: [`crate::ControlSource`].

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use skein_snapshot::Snapshot;
use tokio::sync::Notify;

use super::CompileError;
use crate::identity::IdentityStore;
use crate::listen::bind::BindError;
use skein_snapshot::dump::ControlStatus;

/// Errors of a config source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The snapshot file could not be read.
    #[error("cannot read snapshot file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The snapshot file is not a valid snapshot.
    #[error("snapshot file {path} is invalid: {error}")]
    Parse {
        path: PathBuf,
        error: skein_snapshot::SnapshotError,
    },
}

/// Why a snapshot was not applied; the previous config stays in force (a NACK).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The snapshot does not compile.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// A listener it names could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// What a config source feeds: the running proxy.
pub trait SnapshotSink: Send + Sync + 'static {
    /// Compiles and swaps in a snapshot. On error the previous config stays (a NACK).
    fn apply(&self, snap: Snapshot) -> Result<(), ApplyError>;

    /// Version of the config in force.
    fn version(&self) -> String;

    /// The snapshot in force (what a cluster update applies to).
    fn snapshot(&self) -> Arc<Snapshot>;

    /// Notified when a reload was requested (SIGHUP).
    fn reload(&self) -> &Notify;

    /// Where a control-plane source reports its stream's state.
    fn control(&self) -> &ControlState;

    /// The identity store a control-plane source fills with signed certificates; None when
    /// the proxy was given a static identity (the control plane's does not replace it).
    fn identity(&self) -> Option<Arc<IdentityStore>>;
}

/// Boxed future returned by [`ConfigSource::run`].
pub type SourceFuture = Pin<Box<dyn Future<Output = Result<(), SourceError>> + Send>>;

/// A producer of snapshots: a file ([`FileSource`]) or the control plane's push stream
/// ([`crate::ControlSource`]).
pub trait ConfigSource: Send + 'static {
    /// Runs until the proxy shuts down, calling `sink.apply` for every new snapshot.
    fn run(self: Box<Self>, sink: Arc<dyn SnapshotSink>) -> SourceFuture;
}

/// Shared, lock-protected [`ControlStatus`]; written by the source, read by the admin endpoint.
#[derive(Debug, Default)]
pub struct ControlState(Mutex<ControlStatus>);

impl ControlState {
    /// A copy of the current status.
    pub fn get(&self) -> ControlStatus {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut ControlStatus)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Reads a JSON snapshot file; re-reads it when its modification time or size changes and on
/// SIGHUP. A bad file is logged and the previous config kept.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// The file.
    pub path: PathBuf,
    /// How often the file is checked.
    pub poll_interval: Duration,
}

/// Reads and parses a snapshot file.
pub(crate) fn read_snapshot(path: &PathBuf) -> Result<Snapshot, SourceError> {
    let bytes = std::fs::read(path).map_err(|source| SourceError::Read {
        path: path.clone(),
        error: source,
    })?;
    Snapshot::from_json(&bytes).map_err(|source| SourceError::Parse {
        path: path.clone(),
        error: source,
    })
}

fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl ConfigSource for FileSource {
    fn run(self: Box<Self>, sink: Arc<dyn SnapshotSink>) -> SourceFuture {
        Box::pin(async move {
            let mut last = stamp(&self.path);
            let mut tick = tokio::time::interval(self.poll_interval.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let forced = tokio::select! {
                    _ = tick.tick() => false,
                    _ = sink.reload().notified() => true,
                };
                let now = stamp(&self.path);
                if !forced && now == last {
                    continue;
                }
                last = now;
                match read_snapshot(&self.path) {
                    Ok(snap) => {
                        let version = snap.version.clone();
                        match sink.apply(snap) {
                            Ok(()) => tracing::info!(%version, "snapshot applied"),
                            Err(e) => {
                                tracing::warn!(error = %e, "snapshot rejected; keeping the previous config")
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "keeping the previous config"),
                }
            }
        })
    }
}
