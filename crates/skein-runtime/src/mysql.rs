//! A local MariaDB server standing in for a `mysql:*` / `mariadb:*` container.
//!
//! It behaves like the official images' entrypoint: on first start the data directory is
//! initialised, then the database `MYSQL_DATABASE` and the user `MYSQL_USER` /
//! `MYSQL_PASSWORD` (or the `MARIADB_*` names) are created and the root password set.
//!
//! The bootstrap SQL is written to `DATA_DIR/skein-init.sql` and passed with `--init-file`.
//! MariaDB runs that file on *every* start, so every statement in it is idempotent.
//!
//! [`TestServer`] runs a throw-away server on a free loopback port for tests.
//!
//! Besides std, `tempfile`, `thiserror` and `tracing`, it uses only the crate's own helpers:
//! `fs::write_private`, `fs::is_executable`, `naming::fnv1a` and
//! `run::process::running_as_root`.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Directories searched after `PATH` for the server programs.
const SEARCH_DIRS: [&str; 3] = ["/usr/sbin", "/usr/bin", "/usr/local/bin"];
/// Written once the data directory has been initialised successfully.
const MARKER: &str = ".skein-initialized";
/// The bootstrap SQL run by `--init-file`.
const INIT_FILE: &str = "skein-init.sql";
const SOCKET_FILE: &str = "mariadb.sock";
const PID_FILE: &str = "mariadb.pid";
/// Longest path a Unix socket address holds (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Everything that can go wrong preparing or running the local MariaDB.
#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    #[error(
        "MariaDB is not installed: cannot find {wanted} on PATH or in /usr/sbin, /usr/bin, /usr/local/bin. \
         Install it with `apt-get install mariadb-server` (the system service need not run)"
    )]
    NotInstalled { wanted: &'static str },
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },
    #[error("initialising the MariaDB data directory {} failed ({status}); output:\n{output}", dir.display())]
    InstallDb {
        dir: PathBuf,
        status: ExitStatus,
        output: String,
    },
    #[error("invalid MariaDB setting: {0}")]
    InvalidConfig(String),
    #[error(
        "the MariaDB server exited before accepting connections ({status}); its log ends with:\n{log}"
    )]
    Exited { status: ExitStatus, log: String },
    #[error(
        "the MariaDB server did not accept connections on {addr} within {timeout:?}; its log ends with:\n{log}"
    )]
    Timeout {
        addr: SocketAddr,
        timeout: Duration,
        log: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> MysqlError {
    let context = context.into();
    move |error| MysqlError::Io { context, error }
}

/// `mysql:8.0`, `docker.io/library/mariadb:11`, `bitnami/mysql@sha256:..` are all MySQL.
pub(crate) fn is_mysql_image(image: &str) -> bool {
    let last = image.rsplit('/').next().unwrap_or(image);
    let repo = last.split(['@', ':']).next().unwrap_or(last);
    matches!(repo, "mysql" | "mariadb" | "mysql-server")
}

/// How to run one MariaDB server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MariaDbConfig {
    /// Where the server keeps its data (also its socket, pid and bootstrap files).
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub bind: IpAddr,
    /// Port to listen on.
    pub port: u16,
    /// `MYSQL_DATABASE`: created on start if missing.
    pub database: Option<String>,
    /// `MYSQL_USER`: created with `password`, granted everything on `database`.
    pub user: Option<String>,
    /// `MYSQL_PASSWORD`.
    pub password: Option<String>,
    /// `MYSQL_ROOT_PASSWORD`: set for `root@localhost` and `root@'%'`. Without it root
    /// has no password (and `root@'%'` is not created).
    pub root_password: Option<String>,
}

impl MariaDbConfig {
    /// From a container's environment (later entries win, as in Kubernetes).
    /// `MARIADB_*` names take precedence over `MYSQL_*` ones, as in the official image.
    pub fn from_env(
        data_dir: PathBuf,
        bind: IpAddr,
        port: u16,
        env: &[(String, String)],
    ) -> MariaDbConfig {
        let get = |suffix: &str| -> Option<String> {
            let find = |name: String| {
                env.iter()
                    .rev()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone())
                    .filter(|v| !v.is_empty())
            };
            find(format!("MARIADB_{suffix}")).or_else(|| find(format!("MYSQL_{suffix}")))
        };
        MariaDbConfig {
            data_dir,
            bind,
            port,
            database: get("DATABASE"),
            user: get("USER"),
            password: get("PASSWORD"),
            root_password: get("ROOT_PASSWORD"),
        }
    }

    /// Checks what MariaDB itself would reject later, less clearly.
    pub fn validate(&self) -> Result<(), MysqlError> {
        if let Some(db) = &self.database
            && (db.len() > 64 || db.contains(['\0', '/', '\\', '.']))
        {
            return Err(MysqlError::InvalidConfig(format!(
                "database name `{db}` must be at most 64 characters without `/`, `\\` or `.`"
            )));
        }
        if let Some(user) = &self.user {
            if user.chars().count() > 80 || user.contains('\0') {
                return Err(MysqlError::InvalidConfig(format!(
                    "user name `{user}` must be at most 80 characters"
                )));
            }
            if user == "root" {
                return Err(MysqlError::InvalidConfig(
                    "MYSQL_USER=root is not allowed; use MYSQL_ROOT_PASSWORD for root".into(),
                ));
            }
        }
        if self.user.is_some() && self.password.is_none() {
            return Err(MysqlError::InvalidConfig(
                "MYSQL_USER is set but MYSQL_PASSWORD is not".into(),
            ));
        }
        Ok(())
    }

    /// The data directory as an absolute path (the server may run in another directory).
    pub fn data_dir_abs(&self) -> Result<PathBuf, MysqlError> {
        std::path::absolute(&self.data_dir).map_err(io_err(format!(
            "cannot resolve the data directory {}",
            self.data_dir.display()
        )))
    }

    /// The Unix socket path: inside the data directory, unless that path is too long for a
    /// socket address, then in the temporary directory under a name derived from it.
    pub fn socket_path(&self) -> PathBuf {
        let dir = std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        let inside = dir.join(SOCKET_FILE);
        if inside.as_os_str().len() <= MAX_SOCKET_PATH {
            return inside;
        }
        std::env::temp_dir().join(format!(
            "skein-mariadb-{:016x}.sock",
            crate::naming::fnv1a(dir.as_os_str().as_encoded_bytes())
        ))
    }

    /// The bootstrap SQL for `--init-file`. Idempotent: MariaDB runs it on every start.
    pub fn init_sql(&self) -> String {
        let mut sql =
            String::from("-- Written by skein; run by MariaDB's --init-file on every start.\n");
        sql.push_str("DROP USER IF EXISTS ''@'localhost';\nDROP USER IF EXISTS ''@'%';\n");
        if let Some(pw) = &self.root_password {
            let pw = quote_str(pw);
            for host in ["localhost", "127.0.0.1", "::1"] {
                let _ = writeln!(
                    sql,
                    "ALTER USER IF EXISTS 'root'@'{host}' IDENTIFIED BY {pw};"
                );
            }
            let _ = writeln!(
                sql,
                "CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY {pw};"
            );
            sql.push_str("GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;\n");
        }
        if let Some(db) = &self.database {
            let _ = writeln!(
                sql,
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;",
                quote_ident(db)
            );
        }
        if let (Some(user), Some(pw)) = (&self.user, &self.password) {
            let user = quote_str(user);
            let _ = writeln!(
                sql,
                "CREATE USER IF NOT EXISTS {user}@'%' IDENTIFIED BY {};",
                quote_str(pw)
            );
            if let Some(db) = &self.database {
                let _ = writeln!(
                    sql,
                    "GRANT ALL PRIVILEGES ON {}.* TO {user}@'%';",
                    quote_ident(db)
                );
            }
        }
        sql.push_str("FLUSH PRIVILEGES;\n");
        sql
    }
}

/// A string literal for MariaDB SQL.
fn quote_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A backquoted identifier.
fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// The MariaDB programs found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerBinaries {
    /// `mariadbd` or `mysqld`.
    pub server: PathBuf,
    /// `mariadb-install-db` or `mysql_install_db`.
    pub install_db: PathBuf,
}

/// Finds `mariadbd` (or `mysqld`) and `mariadb-install-db` (or `mysql_install_db`) on
/// `PATH`, then in /usr/sbin, /usr/bin and /usr/local/bin.
pub(crate) fn find_server() -> Result<ServerBinaries, MysqlError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(SEARCH_DIRS.iter().map(PathBuf::from))
        .collect();
    let server = find_program(&dirs, &["mariadbd", "mysqld"]).ok_or(MysqlError::NotInstalled {
        wanted: "mariadbd (or mysqld)",
    })?;
    let install_db = find_program(&dirs, &["mariadb-install-db", "mysql_install_db"]).ok_or(
        MysqlError::NotInstalled {
            wanted: "mariadb-install-db (or mysql_install_db)",
        },
    )?;
    Ok(ServerBinaries { server, install_db })
}

fn find_program(dirs: &[PathBuf], names: &[&str]) -> Option<PathBuf> {
    names.iter().find_map(|name| {
        dirs.iter()
            .map(|d| d.join(name))
            .find(|p| crate::fs::is_executable(p))
    })
}

fn arg(name: &str, value: impl AsRef<std::ffi::OsStr>) -> OsString {
    let mut s = OsString::from(name);
    s.push(value);
    s
}

/// Makes the data directory usable: initialises it on first use (`mariadb-install-db` with
/// `--auth-root-authentication-method=normal --skip-test-db`) and (re)writes the bootstrap
/// SQL. Returns true when the directory was initialised by this call.
pub(crate) fn prepare(cfg: &MariaDbConfig, bins: &ServerBinaries) -> Result<bool, MysqlError> {
    cfg.validate()?;
    let dir = cfg.data_dir_abs()?;
    crate::fs::private_dir(&dir).map_err(io_err(format!(
        "cannot create the MariaDB data directory {}",
        dir.display()
    )))?;
    let marker = dir.join(MARKER);
    let mut initialized = false;
    if !marker.exists() {
        tracing::info!(dir = %dir.display(), "initialising the MariaDB data directory");
        let mut cmd = Command::new(&bins.install_db);
        cmd.arg("--no-defaults")
            .arg(arg("--datadir=", &dir))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg("--skip-name-resolve");
        if crate::run::process::running_as_root() {
            cmd.arg("--user=root");
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(format!("cannot run {}", bins.install_db.display())))?;
        if !out.status.success() {
            let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
            output.push_str(&String::from_utf8_lossy(&out.stderr));
            return Err(MysqlError::InstallDb {
                dir,
                status: out.status,
                output: tail(&output, 40),
            });
        }
        std::fs::write(&marker, b"initialised by skein\n")
            .map_err(io_err(format!("cannot write {}", marker.display())))?;
        initialized = true;
    }
    let init = dir.join(INIT_FILE);
    crate::fs::write_private(&init, cfg.init_sql().as_bytes())
        .map_err(io_err(format!("cannot write {}", init.display())))?;
    Ok(initialized)
}

/// The server in the foreground, listening on `bind:port`, its socket and pid files in the
/// data directory, logging to stderr. Run [`prepare`] first.
pub(crate) fn server_command(cfg: &MariaDbConfig, bins: &ServerBinaries) -> Command {
    let dir = std::path::absolute(&cfg.data_dir).unwrap_or_else(|_| cfg.data_dir.clone());
    let mut cmd = Command::new(&bins.server);
    cmd.arg("--no-defaults")
        .arg(arg("--datadir=", &dir))
        .arg(arg("--socket=", cfg.socket_path()))
        .arg(arg("--pid-file=", dir.join(PID_FILE)))
        .arg(format!("--bind-address={}", cfg.bind))
        .arg(format!("--port={}", cfg.port))
        .arg("--skip-name-resolve")
        .arg("--character-set-server=utf8mb4")
        .arg("--collation-server=utf8mb4_unicode_ci")
        .arg(arg("--init-file=", dir.join(INIT_FILE)));
    if crate::run::process::running_as_root() {
        cmd.arg("--user=root");
    }
    cmd
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Reads a server's greeting: true once it speaks the MySQL protocol (version 10).
fn greets(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    if s.set_read_timeout(Some(Duration::from_secs(2))).is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    // 3 bytes length, 1 byte sequence, then the protocol version (10) or 0xff for an error.
    s.read_exact(&mut head).is_ok() && head[4] == 10
}

/// Waits until `addr` greets like a MySQL server, or the child exits, or `timeout` passes.
pub(crate) fn wait_until_ready(
    child: &mut Child,
    addr: SocketAddr,
    timeout: Duration,
    log: &Path,
) -> Result<(), MysqlError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(io_err("cannot check on the MariaDB server"))?
        {
            return Err(MysqlError::Exited {
                status,
                log: read_tail(log),
            });
        }
        if greets(addr) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(MysqlError::Timeout {
                addr,
                timeout,
                log: read_tail(log),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_tail(log: &Path) -> String {
    match std::fs::read(log) {
        Ok(bytes) => tail(&String::from_utf8_lossy(&bytes), 30),
        Err(e) => format!("(cannot read {}: {e})", log.display()),
    }
}

/// A throw-away MariaDB server for tests: a temporary data directory, a free port on
/// 127.0.0.1, killed (and its data removed) on drop.
#[derive(Debug)]
pub struct TestServer {
    child: Option<Child>,
    config: MariaDbConfig,
    log: PathBuf,
    // Last, so the directory is removed after the server is gone.
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Database created by [`TestServer::start`].
    pub const DATABASE: &'static str = "blog";
    /// User created by [`TestServer::start`].
    pub const USER: &'static str = "blog";
    /// Password of [`TestServer::USER`].
    pub const PASSWORD: &'static str = "blog-pass";
    /// Root password.
    pub const ROOT_PASSWORD: &'static str = "root-pass";
    /// How long to wait for the server to accept connections.
    pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

    /// Starts a server with database `blog` and user `blog` / `blog-pass`.
    pub fn start() -> Result<TestServer, MysqlError> {
        TestServer::start_with(Self::DATABASE, Self::USER, Self::PASSWORD)
    }

    /// Starts a server with the given database and user. Blocks until it accepts
    /// connections (at most a minute). Fails with a clear message if MariaDB is missing.
    pub fn start_with(
        database: &str,
        user: &str,
        password: &str,
    ) -> Result<TestServer, MysqlError> {
        let bins = find_server()?;
        let dir = tempfile::Builder::new()
            .prefix("skein-mariadb-")
            .tempdir()
            .map_err(io_err("cannot create a temporary directory"))?;
        let log = dir.path().join("server.log");
        let mut config = MariaDbConfig {
            data_dir: dir.path().join("data"),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            database: Some(database.to_owned()),
            user: Some(user.to_owned()),
            password: Some(password.to_owned()),
            root_password: Some(Self::ROOT_PASSWORD.to_owned()),
        };
        prepare(&config, &bins)?;

        // The port is picked by binding :0 and released before the server binds it, so
        // another process may take it in between: try a few times.
        let mut last_err = None;
        for _ in 0..3 {
            config.port = free_port()?;
            let log_file = std::fs::File::create(&log)
                .map_err(io_err(format!("cannot create {}", log.display())))?;
            let log_file2 = log_file
                .try_clone()
                .map_err(io_err(format!("cannot open {}", log.display())))?;
            let mut cmd = server_command(&config, &bins);
            // Durability does not matter for a throw-away server; start-up time does.
            cmd.arg("--innodb-buffer-pool-size=32M")
                .arg("--innodb-log-file-size=16M")
                .arg("--innodb-flush-log-at-trx-commit=0")
                .arg("--innodb-doublewrite=0")
                .arg("--max-connections=100")
                .stdin(Stdio::null())
                .stdout(log_file)
                .stderr(log_file2);
            let mut child = cmd
                .spawn()
                .map_err(io_err(format!("cannot start {}", bins.server.display())))?;
            let addr = SocketAddr::new(config.bind, config.port);
            match wait_until_ready(&mut child, addr, Self::READY_TIMEOUT, &log) {
                Ok(()) => {
                    return Ok(TestServer {
                        child: Some(child),
                        config,
                        log,
                        _dir: dir,
                    });
                }
                Err(err) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let retry = matches!(&err, MysqlError::Exited { log, .. }
                        if log.contains("Address already in use") || log.contains("Do you already have another"));
                    if !retry {
                        return Err(err);
                    }
                    last_err = Some(err);
                }
            }
        }
        Err(last_err.unwrap_or(MysqlError::InvalidConfig(
            "could not find a free port".into(),
        )))
    }

    /// `mysql://USER:PASSWORD@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self) -> String {
        format!(
            "mysql://{}:{}@{}/{}",
            url_encode(self.config.user.as_deref().unwrap_or_default()),
            url_encode(self.config.password.as_deref().unwrap_or_default()),
            self.addr(),
            self.config.database.as_deref().unwrap_or_default()
        )
    }

    /// `mysql://root:ROOT_PASSWORD@127.0.0.1:PORT/DATABASE`.
    pub fn root_url(&self) -> String {
        format!(
            "mysql://root:{}@{}/{}",
            url_encode(self.config.root_password.as_deref().unwrap_or_default()),
            self.addr(),
            self.config.database.as_deref().unwrap_or_default()
        )
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.config.bind, self.config.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.config.port
    }

    /// The server's configuration.
    pub fn config(&self) -> &MariaDbConfig {
        &self.config
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        read_tail(&self.log)
    }

    /// Kills the server now (the data directory stays until drop). For tests of a
    /// database going away.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// True while the server process runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> Result<u16, MysqlError> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(io_err("cannot find a free port on 127.0.0.1"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(io_err("cannot find a free port on 127.0.0.1"))
}

/// Percent-encodes everything but unreserved characters (for URL user info).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn config_from_container_env() {
        let cfg = MariaDbConfig::from_env(
            "/data".into(),
            IpAddr::V4(Ipv4Addr::new(127, 0, 1, 5)),
            3306,
            &env(&[
                ("MYSQL_DATABASE", "blog"),
                ("MYSQL_USER", "old"),
                ("MYSQL_USER", "bloguser"),
                ("MYSQL_PASSWORD", "pw"),
                ("MARIADB_PASSWORD", "maria-pw"),
                ("MYSQL_ROOT_PASSWORD", ""),
            ]),
        );
        assert_eq!(cfg.database.as_deref(), Some("blog"));
        assert_eq!(cfg.user.as_deref(), Some("bloguser"), "later entries win");
        assert_eq!(cfg.password.as_deref(), Some("maria-pw"), "MARIADB_* wins");
        assert_eq!(cfg.root_password, None, "empty means unset");
        assert_eq!(cfg.port, 3306);
    }

    #[test]
    fn init_sql_is_idempotent_and_quoted() {
        let cfg = MariaDbConfig {
            data_dir: "/d".into(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 1,
            database: Some("my`db".into()),
            user: Some("o'brien".into()),
            password: Some("p'w\\".into()),
            root_password: Some("r".into()),
        };
        let sql = cfg.init_sql();
        assert!(
            sql.contains("CREATE DATABASE IF NOT EXISTS `my``db`"),
            "{sql}"
        );
        assert!(
            sql.contains("CREATE USER IF NOT EXISTS 'o''brien'@'%' IDENTIFIED BY 'p''w\\\\';"),
            "{sql}"
        );
        assert!(
            sql.contains("GRANT ALL PRIVILEGES ON `my``db`.* TO 'o''brien'@'%';"),
            "{sql}"
        );
        assert!(sql.contains("ALTER USER IF EXISTS 'root'@'localhost' IDENTIFIED BY 'r';"));
        for line in sql.lines().filter(|l| l.starts_with("CREATE")) {
            assert!(line.contains("IF NOT EXISTS"), "{line}");
        }
        let bare = MariaDbConfig {
            database: None,
            user: None,
            password: None,
            root_password: None,
            ..cfg
        };
        assert!(!bare.init_sql().contains("CREATE"));
    }

    #[test]
    fn validation() {
        let ok = MariaDbConfig::from_env(
            "/d".into(),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            1,
            &env(&[("MYSQL_USER", "u"), ("MYSQL_PASSWORD", "p")]),
        );
        assert!(ok.validate().is_ok());
        let mut bad = ok.clone();
        bad.password = None;
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.user = Some("root".into());
        assert!(bad.validate().is_err());
        let mut bad = ok;
        bad.database = Some("a/b".into());
        assert!(bad.validate().is_err());
    }

    #[test]
    fn server_command_flags() {
        let cfg = MariaDbConfig {
            data_dir: "/var/skein/data/mysql".into(),
            bind: IpAddr::V4(Ipv4Addr::new(127, 0, 1, 9)),
            port: 3306,
            database: None,
            user: None,
            password: None,
            root_password: None,
        };
        let bins = ServerBinaries {
            server: "/usr/sbin/mariadbd".into(),
            install_db: "/usr/bin/mariadb-install-db".into(),
        };
        let cmd = server_command(&cfg, &bins);
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[0], "--no-defaults");
        for want in [
            "--datadir=/var/skein/data/mysql",
            "--socket=/var/skein/data/mysql/mariadb.sock",
            "--pid-file=/var/skein/data/mysql/mariadb.pid",
            "--bind-address=127.0.1.9",
            "--port=3306",
            "--skip-name-resolve",
            "--init-file=/var/skein/data/mysql/skein-init.sql",
        ] {
            assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
        }
        assert_eq!(
            args.iter().any(|a| a == "--user=root"),
            crate::run::process::running_as_root()
        );
    }

    #[test]
    fn long_socket_paths_move_to_tmp() {
        let cfg = MariaDbConfig {
            data_dir: PathBuf::from("/").join("x".repeat(120)),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 1,
            database: None,
            user: None,
            password: None,
            root_password: None,
        };
        let s = cfg.socket_path();
        assert!(s.as_os_str().len() <= MAX_SOCKET_PATH, "{}", s.display());
        assert!(s.starts_with(std::env::temp_dir()));
    }

    #[test]
    fn url_encoding() {
        assert_eq!(url_encode("a-b_c.d~"), "a-b_c.d~");
        assert_eq!(url_encode("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
    }

    #[test]
    fn mysql_images() {
        assert!(is_mysql_image("mysql:8.0"));
        assert!(is_mysql_image("docker.io/library/mariadb:11"));
        assert!(is_mysql_image("bitnami/mysql@sha256:abc"));
        assert!(!is_mysql_image("blog-was:0.1.0"));
        assert!(!is_mysql_image("mysql-exporter:1"));
    }
}
