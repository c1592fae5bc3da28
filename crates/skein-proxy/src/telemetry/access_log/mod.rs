//! Access log: Istio's default TEXT format, or what the snapshot's
//! [`LogPolicy`](policy::LogPolicy) says (format, file, filters).
//!
//! The request path only fills a [`LogRecord`] (mostly cheap clones of header values) and
//! hands it to a bounded channel; one writer task formats and writes lines in batches, so lines
//! never interleave and no lock is taken on the hot path. When the writer falls behind, records
//! are dropped and counted rather than queued without bound.

pub(crate) mod policy;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::config::AccessLogSink;
use policy::LogPolicy;

/// Errors of the access log.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// The log file could not be opened.
    #[error(
        "cannot open access log file {path}: {source} (check the directory exists and is writable)"
    )]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Envoy response flags (a bit set), printed comma separated, `-` when empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u16);

impl ResponseFlags {
    /// No flags.
    pub const NONE: ResponseFlags = ResponseFlags(0);
    /// No healthy upstream (503).
    pub const UH: ResponseFlags = ResponseFlags(1);
    /// Upstream connection failure (503).
    pub const UF: ResponseFlags = ResponseFlags(1 << 1);
    /// Upstream overflow / circuit breaking (503).
    pub const UO: ResponseFlags = ResponseFlags(1 << 2);
    /// No route (404).
    pub const NR: ResponseFlags = ResponseFlags(1 << 3);
    /// Upstream retry limit exceeded.
    pub const URX: ResponseFlags = ResponseFlags(1 << 4);
    /// Upstream request timeout (504).
    pub const UT: ResponseFlags = ResponseFlags(1 << 5);
    /// Downstream connection terminated.
    pub const DC: ResponseFlags = ResponseFlags(1 << 6);
    /// Upstream connection terminated.
    pub const UC: ResponseFlags = ResponseFlags(1 << 7);
    /// Cluster not found.
    pub const NC: ResponseFlags = ResponseFlags(1 << 8);
    /// Request delayed by fault injection.
    pub const DI: ResponseFlags = ResponseFlags(1 << 9);
    /// Request aborted by fault injection.
    pub const FI: ResponseFlags = ResponseFlags(1 << 10);

    const NAMES: [(ResponseFlags, &'static str); 11] = [
        (Self::UH, "UH"),
        (Self::UF, "UF"),
        (Self::UO, "UO"),
        (Self::NR, "NR"),
        (Self::URX, "URX"),
        (Self::UT, "UT"),
        (Self::DC, "DC"),
        (Self::UC, "UC"),
        (Self::NC, "NC"),
        (Self::DI, "DI"),
        (Self::FI, "FI"),
    ];

    /// True when no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every flag of `other` is set.
    pub fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = ResponseFlags;
    fn bitor(self, rhs: Self) -> Self {
        ResponseFlags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for ResponseFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl std::fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Everything one access log line needs. Filled on the request path, formatted by the writer.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// START_TIME.
    pub start: SystemTime,
    /// REQ(:METHOD); None for TCP.
    pub method: Option<Method>,
    /// REQ(X-ENVOY-ORIGINAL-PATH?:PATH): the path as received, before rewrites.
    pub path: Option<http::uri::PathAndQuery>,
    /// PROTOCOL: `HTTP/1.1`, `HTTP/2`, or None for TCP.
    pub protocol: Option<&'static str>,
    /// RESPONSE_CODE (0 when no response was sent).
    pub code: u16,
    /// RESPONSE_FLAGS.
    pub flags: ResponseFlags,
    /// RESPONSE_CODE_DETAILS (owned only for the rare dynamic ones, e.g. RBAC denials).
    pub details: Cow<'static, str>,
    /// UPSTREAM_TRANSPORT_FAILURE_REASON.
    pub transport_failure: Option<Cow<'static, str>>,
    /// BYTES_RECEIVED (request body bytes, or bytes from downstream for TCP).
    pub bytes_received: u64,
    /// BYTES_SENT (response body bytes, or bytes to downstream for TCP).
    pub bytes_sent: u64,
    /// DURATION in milliseconds.
    pub duration_ms: u64,
    /// RESP(X-ENVOY-UPSTREAM-SERVICE-TIME) in milliseconds.
    pub upstream_service_time: Option<u64>,
    /// REQ(X-FORWARDED-FOR).
    pub xff: Option<HeaderValue>,
    /// REQ(USER-AGENT).
    pub user_agent: Option<HeaderValue>,
    /// REQ(X-REQUEST-ID).
    pub request_id: Option<HeaderValue>,
    /// REQ(:AUTHORITY).
    pub authority: Option<HeaderValue>,
    /// UPSTREAM_HOST.
    pub upstream_host: Option<SocketAddr>,
    /// UPSTREAM_CLUSTER_RAW.
    pub upstream_cluster: Option<Arc<str>>,
    /// UPSTREAM_LOCAL_ADDRESS.
    pub upstream_local: Option<SocketAddr>,
    /// DOWNSTREAM_LOCAL_ADDRESS.
    pub downstream_local: SocketAddr,
    /// DOWNSTREAM_REMOTE_ADDRESS.
    pub downstream_remote: SocketAddr,
    /// REQUESTED_SERVER_NAME (TLS SNI).
    pub sni: Option<Arc<str>>,
    /// The mTLS peer: DOWNSTREAM_PEER_URI_SAN is its `spiffe_id`. Not in Istio's default
    /// format, so not printed; kept for other sinks and formats.
    pub peer: Option<Arc<crate::identity::PeerIdentity>>,
    /// ROUTE_NAME.
    pub route_name: Option<Arc<str>>,
    /// The proxy is the client (outbound, or a gateway): Telemetry `match.mode` CLIENT.
    pub client: bool,
    /// Request headers the policy's format or filter reads beyond those above.
    pub request_headers: Vec<(http::HeaderName, HeaderValue)>,
    /// Response headers the policy's format or filter reads.
    pub response_headers: Vec<(http::HeaderName, HeaderValue)>,
    /// The policy in force when the request started (HTTP); None: the current one at log
    /// time.
    pub policy: Option<Arc<LogPolicy>>,
    /// The Telemetry metric overrides in force when the request started (HTTP).
    pub overrides: Option<Arc<crate::telemetry::metrics::overrides::MetricOverrides>>,
}

impl LogRecord {
    /// A record for a connection accepted now.
    pub fn new(local: SocketAddr, remote: SocketAddr) -> Self {
        LogRecord {
            start: SystemTime::now(),
            method: None,
            path: None,
            protocol: None,
            code: 0,
            flags: ResponseFlags::NONE,
            details: Cow::Borrowed(""),
            transport_failure: None,
            bytes_received: 0,
            bytes_sent: 0,
            duration_ms: 0,
            upstream_service_time: None,
            xff: None,
            user_agent: None,
            request_id: None,
            authority: None,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local: None,
            downstream_local: local,
            downstream_remote: remote,
            sni: None,
            peer: None,
            route_name: None,
            client: false,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            policy: None,
            overrides: None,
        }
    }

    /// Formats the record as one line (with the trailing newline) into `out`.
    pub fn format_into(&self, out: &mut String) {
        out.push('[');
        format_time(self.start, out);
        out.push_str("] \"");
        opt(out, self.method.as_ref().map(Method::as_str));
        out.push(' ');
        opt(out, self.path.as_ref().map(|p| p.as_str()));
        out.push(' ');
        opt(out, self.protocol);
        let _ = write!(out, "\" {} {} ", self.code, self.flags);
        opt(out, Some(&self.details));
        out.push_str(" - \"");
        opt(out, self.transport_failure.as_deref());
        let _ = write!(
            out,
            "\" {} {} {} ",
            self.bytes_received, self.bytes_sent, self.duration_ms
        );
        match self.upstream_service_time {
            Some(t) => {
                let _ = write!(out, "{t}");
            }
            None => out.push('-'),
        }
        for h in [
            &self.xff,
            &self.user_agent,
            &self.request_id,
            &self.authority,
        ] {
            out.push_str(" \"");
            opt(out, h.as_ref().and_then(|v| v.to_str().ok()));
            out.push('"');
        }
        out.push_str(" \"");
        addr(out, self.upstream_host);
        out.push_str("\" ");
        opt(out, self.upstream_cluster.as_deref());
        out.push(' ');
        addr(out, self.upstream_local);
        out.push(' ');
        addr(out, Some(self.downstream_local));
        out.push(' ');
        addr(out, Some(self.downstream_remote));
        out.push(' ');
        opt(out, self.sni.as_deref());
        out.push(' ');
        opt(out, self.route_name.as_deref());
        out.push('\n');
    }
}

fn opt(out: &mut String, v: Option<&str>) {
    match v {
        Some(s) if !s.is_empty() => out.push_str(s),
        _ => out.push('-'),
    }
}

fn addr(out: &mut String, a: Option<SocketAddr>) {
    match a {
        Some(a) => {
            let _ = write!(out, "{a}");
        }
        None => out.push('-'),
    }
}

/// Envoy's START_TIME default: `2024-05-01T12:34:56.789Z` (UTC, milliseconds).
pub fn format_time(t: SystemTime, out: &mut String) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let ms = d.subsec_millis();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, day) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Capacity of the record channel; beyond it records are dropped and counted.
const CHANNEL_CAPACITY: usize = 16 * 1024;

/// The request path's handle on the access log: a channel to the writer task, which opens
/// the policy's sink (and reopens when a snapshot changes it).
#[derive(Debug)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<Entry>>,
    dropped: AtomicU64,
}

impl AccessLog {
    /// A log that writes nothing (no writer task).
    #[cfg(test)]
    pub fn off() -> Self {
        AccessLog {
            tx: None,
            dropped: AtomicU64::new(0),
        }
    }

    /// Spawns the writer task (needs a tokio runtime). A file given by the `--access-log`
    /// flag must open now; files named by a snapshot are opened by the writer.
    pub async fn start(flag: Option<&AccessLogSink>) -> Result<Self, AccessLogError> {
        if let Some(AccessLogSink::File(path)) = flag {
            open(path).await?;
        }
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        tokio::spawn(write_loop(rx, None));
        Ok(AccessLog {
            tx: Some(tx),
            dropped: AtomicU64::new(0),
        })
    }

    /// Writes out every line queued so far (on shutdown: the writer holds lines for up to
    /// [`FLUSH_INTERVAL`]). Gives up after `within`.
    pub async fn flush(&self, within: std::time::Duration) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = tokio::sync::oneshot::channel();
        if tx.send(Entry::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(within, wait).await;
        }
    }

    /// Queues one record under `policy` when its direction logs at all (the filter runs in
    /// the writer).
    pub fn log(&self, rec: Box<LogRecord>, policy: Arc<LogPolicy>) {
        if !policy.logs(rec.client) {
            return;
        }
        if let Some(tx) = &self.tx
            && tx.try_send(Entry::Line(rec, policy)).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn open(path: &std::path::Path) -> Result<tokio::fs::File, AccessLogError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = tokio::fs::create_dir_all(dir).await;
    }
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(|source| AccessLogError::Open {
            path: path.to_path_buf(),
            source,
        })
}

type Writer = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// The writer's open sink.
struct Open {
    sink: AccessLogSink,
    /// None: the sink could not be opened (its lines are dropped until it changes).
    w: Option<Writer>,
}

async fn open_sink(sink: &AccessLogSink) -> Option<Writer> {
    match sink {
        AccessLogSink::Off => None,
        AccessLogSink::Stdout => Some(Box::new(tokio::io::stdout())),
        AccessLogSink::File(path) => match open(path).await {
            Ok(f) => Some(Box::new(f)),
            Err(e) => {
                tracing::warn!(error = %e, "access log file cannot be opened; its lines are dropped");
                None
            }
        },
    }
}

/// How long a line may wait in the writer's buffer before it is written (Envoy flushes its
/// access log files every second; a tenth of that keeps `tail -f` prompt). Writing per batch
/// instead cost a blocking-pool hand-off (two thread wake-ups) per request at low rates.
const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// A buffer this full is written at once.
const FLUSH_BYTES: usize = 64 * 1024;

/// What the writer receives.
#[derive(Debug)]
enum Entry {
    Line(Box<LogRecord>, Arc<LogPolicy>),
    /// Write everything before this now, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
}

async fn write_loop(mut rx: mpsc::Receiver<Entry>, mut out: Option<Open>) {
    let mut batch = Vec::with_capacity(256);
    let mut buf = String::with_capacity(FLUSH_BYTES);
    // When the oldest line in `buf` must be out.
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        let received = match due {
            None => rx.recv_many(&mut batch, 256).await,
            Some(at) => tokio::select! {
                n = rx.recv_many(&mut batch, 256) => n,
                () = tokio::time::sleep_until(at) => {
                    write_out(&mut out, &mut buf).await;
                    due = None;
                    continue;
                }
            },
        };
        if received == 0 {
            break;
        }
        let mut flushed = Vec::new();
        for entry in batch.drain(..) {
            match entry {
                Entry::Line(rec, policy) => {
                    if !policy.admits(&rec) {
                        continue;
                    }
                    if out.as_ref().is_none_or(|o| o.sink != policy.sink) {
                        // A snapshot moved the log: what was buffered goes to the old sink.
                        write_out(&mut out, &mut buf).await;
                        out = Some(Open {
                            sink: policy.sink.clone(),
                            w: open_sink(&policy.sink).await,
                        });
                    }
                    policy.format_into(&rec, &mut buf);
                }
                Entry::Flush(done) => flushed.push(done),
            }
        }
        if !flushed.is_empty() {
            write_out(&mut out, &mut buf).await;
            due = None;
            for done in flushed {
                let _ = done.send(());
            }
        } else if buf.len() >= FLUSH_BYTES {
            write_out(&mut out, &mut buf).await;
            due = None;
        } else if due.is_none() && !buf.is_empty() {
            due = Some(tokio::time::Instant::now() + FLUSH_INTERVAL);
        }
    }
    write_out(&mut out, &mut buf).await;
}

/// Writes and flushes what `buf` holds, then empties it (lines are dropped on a write error:
/// the log never holds up the proxy).
async fn write_out(out: &mut Option<Open>, buf: &mut String) {
    if buf.is_empty() {
        return;
    }
    if let Some(w) = out.as_mut().and_then(|o| o.w.as_mut()) {
        if let Err(e) = w.write_all(buf.as_bytes()).await {
            tracing::warn!(error = %e, "access log write failed");
        }
        let _ = w.flush().await;
    }
    buf.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `AsyncWrite` that records what reaches it, for the writer's timing tests.
    #[derive(Clone, Default)]
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

    impl tokio::io::AsyncWrite for Sink {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            b: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.0.lock().unwrap().extend_from_slice(b);
            std::task::Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn record() -> Box<LogRecord> {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        Box::new(LogRecord::new(a, a))
    }

    /// A policy that logs everything to "stdout" (the test's sink stands in for it).
    fn pol() -> Arc<LogPolicy> {
        let mut p = LogPolicy::off();
        p.sink = AccessLogSink::Stdout;
        p.client = policy::Gate::All;
        p.server = policy::Gate::All;
        Arc::new(p)
    }

    fn opened(s: &Sink) -> Option<Open> {
        Some(Open {
            sink: AccessLogSink::Stdout,
            w: Some(Box::new(s.clone())),
        })
    }

    fn lines(s: &Sink) -> usize {
        s.0.lock().unwrap().iter().filter(|b| **b == b'\n').count()
    }

    #[tokio::test(start_paused = true)]
    async fn lines_are_written_within_the_flush_interval() {
        let (tx, rx) = mpsc::channel(16);
        let sink = Sink::default();
        let writer = tokio::spawn(write_loop(rx, opened(&sink)));
        tx.send(Entry::Line(record(), pol())).await.unwrap();
        tx.send(Entry::Line(record(), pol())).await.unwrap();
        tokio::time::sleep(FLUSH_INTERVAL / 2).await;
        assert_eq!(lines(&sink), 0, "held for the batch");
        tokio::time::sleep(FLUSH_INTERVAL).await;
        assert_eq!(lines(&sink), 2, "written once the interval passed");
        // Nothing pending: the writer sleeps without a timer; the next line starts a new one.
        tokio::time::sleep(FLUSH_INTERVAL * 10).await;
        tx.send(Entry::Line(record(), pol())).await.unwrap();
        tokio::time::sleep(FLUSH_INTERVAL + FLUSH_INTERVAL / 2).await;
        assert_eq!(lines(&sink), 3);
        // On close, what is left is written at once.
        tx.send(Entry::Line(record(), pol())).await.unwrap();
        drop(tx);
        writer.await.unwrap();
        assert_eq!(lines(&sink), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn flush_writes_what_is_queued_before_it() {
        let (tx, rx) = mpsc::channel(16);
        let sink = Sink::default();
        let log = AccessLog {
            tx: Some(tx),
            dropped: AtomicU64::new(0),
        };
        let _writer = tokio::spawn(write_loop(rx, opened(&sink)));
        log.log(record(), pol());
        log.log(record(), pol());
        log.flush(std::time::Duration::from_secs(1)).await;
        assert_eq!(lines(&sink), 2);
        AccessLog::off()
            .flush(std::time::Duration::from_secs(1))
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_buffer_is_written_at_once() {
        let (tx, rx) = mpsc::channel(4096);
        let sink = Sink::default();
        let _writer = tokio::spawn(write_loop(rx, opened(&sink)));
        let one = {
            let mut s = String::new();
            record().format_into(&mut s);
            s.len()
        };
        let n = FLUSH_BYTES / one + 1;
        for _ in 0..n {
            tx.send(Entry::Line(record(), pol())).await.unwrap();
        }
        // Let the writer run, without the clock moving.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(lines(&sink), n);
    }

    #[tokio::test]
    async fn the_writer_follows_the_policy_to_a_new_file_and_applies_its_filter() {
        let dir = std::env::temp_dir().join(format!("skein-access-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = dir.join("a/access.log");
        let b = dir.join("b/access.log");
        let policy = |path: &std::path::Path, filter: &str| {
            let t = skein_snapshot::telemetry::AccessLog {
                file: path.display().to_string(),
                rules: skein_snapshot::telemetry::PerMode {
                    client: Some(skein_snapshot::telemetry::AccessLogRule {
                        disabled: false,
                        filter: filter.into(),
                    }),
                    server: None,
                },
                ..Default::default()
            };
            let proxy = crate::config::ProxyConfig::sidecar("127.0.0.1:0".parse().unwrap());
            Arc::new(LogPolicy::compile(&t, &proxy).unwrap())
        };
        let log = AccessLog::start(None).await.unwrap();
        let first = policy(&a, "");
        let errors = policy(&b, "response.code >= 400");
        let rec = |code: u16| {
            let mut r = record();
            r.client = true;
            r.code = code;
            r
        };
        log.log(rec(200), Arc::clone(&first));
        log.log(rec(200), Arc::clone(&errors));
        log.log(rec(503), Arc::clone(&errors));
        log.log(rec(404), errors);
        log.flush(std::time::Duration::from_secs(5)).await;
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(read(&a).lines().count(), 1);
        let codes: Vec<String> = read(&b)
            .lines()
            .map(|l| {
                l.split('"')
                    .nth(2)
                    .unwrap_or("")
                    .trim()
                    .split(' ')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert_eq!(codes, vec!["503", "404"], "{}", read(&b));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn time_format_is_envoys() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_714_566_896_789);
        let mut s = String::new();
        format_time(t, &mut s);
        assert_eq!(s, "2024-05-01T12:34:56.789Z");
        s.clear();
        format_time(UNIX_EPOCH, &mut s);
        assert_eq!(s, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn flags_print_like_envoy() {
        assert_eq!(ResponseFlags::NONE.to_string(), "-");
        assert_eq!(ResponseFlags::UO.to_string(), "UO");
        assert_eq!(
            (ResponseFlags::UF | ResponseFlags::URX).to_string(),
            "UF,URX"
        );
    }

    #[test]
    fn empty_fields_are_dashes() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!());
        let mut r = LogRecord::new(a, a);
        r.start = UNIX_EPOCH;
        let mut s = String::new();
        r.format_into(&mut s);
        assert_eq!(
            s,
            "[1970-01-01T00:00:00.000Z] \"- - -\" 0 - - - \"-\" 0 0 0 - \"-\" \"-\" \"-\" \"-\" \"-\" - - 127.0.0.1:1 127.0.0.1:1 - -\n"
        );
    }
}
