//! Storage of posts in SQLite or MySQL/MariaDB, chosen by the `DATABASE_URL` scheme.
//!
//! Both backends run the same SQL (both use `?` placeholders); only the schema
//! migrations differ (`migrations/sqlite`, `migrations/mysql`), and are embedded.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlQueryResult};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult,
};
use sqlx::{ConnectOptions, Connection};
use tokio::time::Instant;

use crate::hosts::Resolver;
use crate::trace::{Rows, sql_span};
use crate::was::model::{NewPost, Page, Post};

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");
static MYSQL_MIGRATOR: Migrator = sqlx::migrate!("migrations/mysql");

/// How long one connection attempt may take at start-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a pooled connection before answering 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

const SELECT_POST: &str =
    "SELECT id, title, content, author, created_at, updated_at FROM posts WHERE id = ?";
const LIST_POSTS: &str = "SELECT id, title, content, author, created_at, updated_at FROM posts \
     ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?";
const COUNT_POSTS: &str = "SELECT COUNT(*) FROM posts";
const INSERT_POST: &str = "INSERT INTO posts (title, content, author, created_at, updated_at) \
     VALUES (?, ?, ?, ?, ?)";
const UPDATE_POST: &str =
    "UPDATE posts SET title = ?, content = ?, author = ?, updated_at = ? WHERE id = ?";
const DELETE_POST: &str = "DELETE FROM posts WHERE id = ?";

/// Database errors, split by what a client should be told.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported DATABASE_URL scheme `{0}` (expected sqlite:// or mysql://)")]
    UnsupportedScheme(String),
    #[error("invalid DATABASE_URL: {0}")]
    InvalidUrl(String),
    #[error("cannot create the directory of the SQLite file {path}: {error}")]
    CreateDir { path: String, error: std::io::Error },
    /// The database cannot be reached (down, refused, pool exhausted or closed, locked).
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// Any other driver error.
    #[error("database error: {0}")]
    Query(sqlx::Error),
    #[error("connecting to the database timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("schema migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("gave up connecting to the database after {attempts} attempts in {waited:?}: {last}")]
    GaveUp {
        attempts: u32,
        waited: Duration,
        last: Box<DbError>,
    },
}

impl DbError {
    /// True for errors that retrying cannot fix (a bad URL).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            DbError::UnsupportedScheme(_) | DbError::InvalidUrl(_) | DbError::CreateDir { .. }
        )
    }
}

impl From<sqlx::Error> for DbError {
    fn from(err: sqlx::Error) -> Self {
        let unavailable = match &err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                let code = db.code();
                let code = code.as_deref().unwrap_or_default();
                // SQLite: BUSY(5), LOCKED(6), CANTOPEN(14) and their extended codes.
                // SQLSTATE class 08: connection exceptions (MySQL server shutdown etc.).
                matches!(code, "5" | "6" | "14" | "261" | "262" | "517") || code.starts_with("08")
            }
            _ => false,
        };
        if unavailable {
            DbError::Unavailable(err)
        } else {
            DbError::Query(err)
        }
    }
}

/// A connection pool to one of the supported backends.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    MySql(MySqlPool),
}

/// Runs the same code against whichever pool this is.
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::MySql($pool) => $body,
        }
    };
}

trait InsertId {
    fn insert_id(&self) -> i64;
}

impl InsertId for SqliteQueryResult {
    fn insert_id(&self) -> i64 {
        self.last_insert_rowid()
    }
}

impl InsertId for MySqlQueryResult {
    fn insert_id(&self) -> i64 {
        i64::try_from(self.last_insert_id()).unwrap_or(i64::MAX)
    }
}

/// Connection options for one `DATABASE_URL`, before any connection is made.
enum Target {
    Sqlite(SqliteConnectOptions),
    MySql(MySqlConnectOptions),
}

impl Target {
    fn parse(url: &str, resolver: &Resolver) -> Result<Self, DbError> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                let opts = SqliteConnectOptions::from_str(url)
                    .map_err(|e| DbError::InvalidUrl(e.to_string()))?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true);
                Ok(Target::Sqlite(opts))
            }
            "mysql" | "mariadb" => {
                let normalized = if scheme.eq_ignore_ascii_case("mariadb") {
                    format!("mysql{}", &url[scheme.len()..])
                } else {
                    url.to_owned()
                };
                let parsed = url::Url::parse(&normalized)
                    .map_err(|e| DbError::InvalidUrl(format!("{e}")))?;
                let mut opts = MySqlConnectOptions::from_str(&normalized)
                    .map_err(|e| DbError::InvalidUrl(redact(&e.to_string())))?;
                if let Some(host) = parsed.host_str()
                    && let Some(ip) = resolver.hosts_file_address(host)
                {
                    if ip.to_string() != host.trim_matches(['[', ']']) {
                        tracing::info!(host, %ip, "resolved the database host through the hosts file");
                    }
                    opts = opts.host(&ip.to_string());
                }
                Ok(Target::MySql(opts))
            }
            "" => Err(DbError::InvalidUrl(
                "expected sqlite://FILE or mysql://USER:PASS@HOST:PORT/DB".into(),
            )),
            other => Err(DbError::UnsupportedScheme(other.to_owned())),
        }
    }
}

/// Drops anything that looks like a password from a message about a URL.
fn redact(msg: &str) -> String {
    if msg.contains('@') {
        "the URL could not be parsed".to_owned()
    } else {
        msg.to_owned()
    }
}

impl Db {
    /// Connects once (no retry) and applies the migrations.
    pub async fn connect(url: &str, resolver: &Resolver) -> Result<Self, DbError> {
        let db = match Target::parse(url, resolver)? {
            Target::Sqlite(opts) => {
                ensure_parent_dir(opts.get_filename())?;
                probe(&opts).await?;
                let pool = SqlitePoolOptions::new()
                    .max_connections(5)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(opts);
                Db::Sqlite(pool)
            }
            Target::MySql(opts) => {
                probe(&opts).await?;
                let pool = MySqlPoolOptions::new()
                    .max_connections(10)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .idle_timeout(Duration::from_secs(300))
                    .connect_lazy_with(opts);
                Db::MySql(pool)
            }
        };
        if let Err(err) = db.migrate().await {
            db.close().await;
            return Err(err);
        }
        Ok(db)
    }

    /// A pool that connects only when first used; no migrations. For health checks against a
    /// database that may not exist, and for tests.
    pub fn connect_lazy(url: &str, resolver: &Resolver) -> Result<Self, DbError> {
        Ok(match Target::parse(url, resolver)? {
            Target::Sqlite(opts) => Db::Sqlite(
                SqlitePoolOptions::new()
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(opts),
            ),
            Target::MySql(opts) => Db::MySql(
                MySqlPoolOptions::new()
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(opts),
            ),
        })
    }

    /// Connects and migrates, retrying with backoff (0.25 s doubling to 5 s) until `wait`
    /// has passed. Each failure is logged; a malformed URL fails at once.
    pub async fn connect_with_retry(
        url: &str,
        resolver: &Resolver,
        wait: Duration,
    ) -> Result<Self, DbError> {
        let started = Instant::now();
        let deadline = started + wait;
        let mut backoff = Duration::from_millis(250);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match Db::connect(url, resolver).await {
                Ok(db) => {
                    tracing::info!(
                        backend = db.backend(),
                        attempts,
                        "connected to the database"
                    );
                    return Ok(db);
                }
                Err(err) if err.is_permanent() => return Err(err),
                Err(err) => {
                    let now = Instant::now();
                    if now >= deadline {
                        tracing::error!(attempts, error = %err, "giving up connecting to the database");
                        return Err(DbError::GaveUp {
                            attempts,
                            waited: now - started,
                            last: Box::new(err),
                        });
                    }
                    let delay = backoff.min(deadline - now);
                    tracing::warn!(
                        attempts,
                        error = %err,
                        retry_in = ?delay,
                        "database not reachable yet; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await.map_err(DbError::Migrate)?,
            Db::MySql(pool) => MYSQL_MIGRATOR.run(pool).await.map_err(DbError::Migrate)?,
        }
        Ok(())
    }

    /// OTel's `db.system`: `sqlite` or `mysql`.
    pub fn system(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::MySql(_) => "mysql",
        }
    }

    /// `"SQLite"` or `"MySQL"`.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "SQLite",
            Db::MySql(_) => "MySQL",
        }
    }

    /// Closes the pool; later queries fail as [`DbError::Unavailable`].
    /// What the pool holds now (the `hikaricp_connections*` gauges).
    pub fn pool_stats(&self) -> crate::metrics::PoolStats {
        on_pool!(self, |pool| {
            let (size, idle) = (pool.size(), pool.num_idle() as u32);
            crate::metrics::PoolStats {
                active: size.saturating_sub(idle),
                idle,
                max: pool.options().get_max_connections(),
            }
        })
    }

    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }

    /// A cheap `SELECT 1`.
    pub async fn ping(&self) -> Result<(), DbError> {
        on_pool!(self, |pool| {
            let q = "SELECT 1";
            sql_span(self.system(), q, sqlx::query(q).fetch_all(pool), |r| {
                Rows::Returned(r.len() as u64)
            })
            .await?;
        });
        Ok(())
    }

    /// One page of posts, newest first, and the total number of posts.
    pub async fn list(&self, page: Page) -> Result<(Vec<Post>, i64), DbError> {
        on_pool!(self, |pool| {
            let query = sqlx::query_as::<_, Post>(LIST_POSTS)
                .bind(page.limit())
                .bind(page.offset())
                .fetch_all(pool);
            let posts = sql_span(self.system(), LIST_POSTS, query, |p| {
                Rows::Returned(p.len() as u64)
            })
            .await?;
            let query = sqlx::query_scalar(COUNT_POSTS).fetch_one(pool);
            let total: i64 = sql_span(self.system(), COUNT_POSTS, query, one).await?;
            Ok((posts, total))
        })
    }

    /// The post `id`, if any.
    pub async fn get(&self, id: i64) -> Result<Option<Post>, DbError> {
        on_pool!(self, |pool| {
            let query = sqlx::query_as::<_, Post>(SELECT_POST)
                .bind(id)
                .fetch_optional(pool);
            Ok(sql_span(self.system(), SELECT_POST, query, optional).await?)
        })
    }

    /// Stores a new post and returns it.
    pub async fn create(&self, post: &NewPost) -> Result<Post, DbError> {
        let now = now_rfc3339();
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let query = sqlx::query(INSERT_POST)
                .bind(&post.title)
                .bind(&post.content)
                .bind(&post.author)
                .bind(&now)
                .bind(&now)
                .execute(&mut *tx);
            let id = sql_span(self.system(), INSERT_POST, query, |r| {
                Rows::Affected(r.rows_affected())
            })
            .await?
            .insert_id();
            let query = sqlx::query_as::<_, Post>(SELECT_POST)
                .bind(id)
                .fetch_one(&mut *tx);
            let created = sql_span(self.system(), SELECT_POST, query, one).await?;
            tx.commit().await?;
            Ok(created)
        })
    }

    /// Replaces the post `id`; `None` if there is no such post.
    pub async fn update(&self, id: i64, post: &NewPost) -> Result<Option<Post>, DbError> {
        let now = now_rfc3339();
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let query = sqlx::query_as::<_, Post>(SELECT_POST)
                .bind(id)
                .fetch_optional(&mut *tx);
            let exists = sql_span(self.system(), SELECT_POST, query, optional)
                .await?
                .is_some();
            if !exists {
                return Ok(None);
            }
            let query = sqlx::query(UPDATE_POST)
                .bind(&post.title)
                .bind(&post.content)
                .bind(&post.author)
                .bind(&now)
                .bind(id)
                .execute(&mut *tx);
            sql_span(self.system(), UPDATE_POST, query, |r| {
                Rows::Affected(r.rows_affected())
            })
            .await?;
            let query = sqlx::query_as::<_, Post>(SELECT_POST)
                .bind(id)
                .fetch_optional(&mut *tx);
            let updated = sql_span(self.system(), SELECT_POST, query, optional).await?;
            tx.commit().await?;
            Ok(updated)
        })
    }

    /// Deletes the post `id`; false if there was none.
    pub async fn delete(&self, id: i64) -> Result<bool, DbError> {
        on_pool!(self, |pool| {
            let query = sqlx::query(DELETE_POST).bind(id).execute(pool);
            let res = sql_span(self.system(), DELETE_POST, query, |r| {
                Rows::Affected(r.rows_affected())
            })
            .await?;
            Ok(res.rows_affected() > 0)
        })
    }
}

fn optional<T>(row: &Option<T>) -> Rows {
    Rows::Returned(u64::from(row.is_some()))
}

fn one<T>(_: &T) -> Rows {
    Rows::Returned(1)
}

/// One connection attempt, bounded by [`CONNECT_TIMEOUT`] (the pool itself would silently
/// retry refused connections until its acquire timeout; start-up wants each attempt logged).
async fn probe<O>(opts: &O) -> Result<(), DbError>
where
    O: ConnectOptions,
    O::Connection: Sized,
{
    match tokio::time::timeout(CONNECT_TIMEOUT, opts.connect()).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(err)) => Err(err.into()),
        Err(_) => Err(DbError::ConnectTimeout(CONNECT_TIMEOUT)),
    }
}

fn ensure_parent_dir(file: &Path) -> Result<(), DbError> {
    let s = file.to_string_lossy();
    if s.is_empty() || s.starts_with(':') || s.starts_with("file:") {
        return Ok(()); // in-memory databases
    }
    if let Some(parent) = file.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        std::fs::create_dir_all(parent).map_err(|source| DbError::CreateDir {
            path: file.display().to_string(),
            error: source,
        })?;
    }
    Ok(())
}

/// The current time as fixed-width RFC 3339 UTC with milliseconds, so that string order is
/// time order.
pub fn now_rfc3339() -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(FORMAT)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_fixed_width_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z'));
        assert_eq!(&t[10..11], "T");
    }

    #[test]
    fn url_schemes() {
        let r = Resolver::default();
        assert!(matches!(
            Target::parse("postgres://x@y/z", &r),
            Err(DbError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            Target::parse("nonsense", &r),
            Err(DbError::InvalidUrl(_))
        ));
        assert!(matches!(
            Target::parse("sqlite://data/blog.db", &r),
            Ok(Target::Sqlite(_))
        ));
        assert!(matches!(
            Target::parse("mysql://u:p@db:3306/blog", &r),
            Ok(Target::MySql(_))
        ));
    }

    #[test]
    fn mysql_host_comes_from_the_hosts_file() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(
            &hosts,
            "127.9.2.1 mysql-service mysql-service.blog-system.svc.cluster.local\n",
        )
        .unwrap();
        let r = Resolver::new(Some(hosts));
        let Ok(Target::MySql(opts)) = Target::parse(
            "mysql://u:p@mysql-service.blog-system.svc.cluster.local:3306/blog",
            &r,
        ) else {
            panic!("expected mysql options");
        };
        assert_eq!(opts.get_host(), "127.9.2.1");
        assert_eq!(opts.get_port(), 3306);
        let Ok(Target::MySql(opts)) = Target::parse("mysql://u:p@elsewhere:3306/blog", &r) else {
            panic!("expected mysql options");
        };
        assert_eq!(
            opts.get_host(),
            "elsewhere",
            "unlisted names are left to DNS"
        );
    }

    #[tokio::test]
    async fn sqlite_creates_missing_file_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nested/dir/blog.db");
        let url = format!("sqlite://{}", file.display());
        let db = Db::connect(&url, &Resolver::default()).await.unwrap();
        assert!(file.exists());
        let (posts, total) = db.list(Page { page: 0, size: 20 }).await.unwrap();
        assert_eq!(total, 1);
        assert_eq!(posts[0].title, "First Post");
        db.close().await;
        assert!(matches!(db.ping().await, Err(DbError::Unavailable(_))));
        // Migrations are applied once: reconnecting keeps the single seeded post.
        let db = Db::connect(&url, &Resolver::default()).await.unwrap();
        assert_eq!(db.list(Page { page: 0, size: 20 }).await.unwrap().1, 1);
    }
}
