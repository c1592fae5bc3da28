//! Name resolution the way the local runtime expects it: the hosts file named by
//! `SKEIN_HOSTS` (the `/etc/hosts` format) first, then ordinary DNS.
//!
//! The file is read again on every lookup, so a runtime that rewrites it (a Service that
//! appears later, a sidecar that moves) is picked up by the next new connection.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The environment variable naming the runtime's hosts file.
pub const SKEIN_HOSTS_ENV: &str = "SKEIN_HOSTS";

/// Why a name could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no address found for host `{0}`")]
    NotFound(String),
    #[error("DNS lookup of `{host}` failed: {error}")]
    Dns { host: String, error: io::Error },
}

/// A parsed hosts file: `ADDRESS NAME [ALIAS...]` per line, `#` starts a comment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostsFile {
    entries: Vec<(String, IpAddr)>,
}

impl HostsFile {
    /// Parses the `/etc/hosts` format. Lines that do not start with a valid address are
    /// skipped, as the C library does.
    pub fn parse(text: &str) -> Self {
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = match line.find('#') {
                Some(i) => &line[..i],
                None => line,
            };
            let mut fields = line.split_whitespace();
            let Some(addr) = fields.next() else { continue };
            let Some(ip) = parse_ip(addr) else { continue };
            for name in fields {
                entries.push((normalize(name), ip));
            }
        }
        Self { entries }
    }

    /// Reads and parses a hosts file.
    pub fn load(path: &Path) -> io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    /// Every address listed for `name` (case-insensitive, a trailing dot ignored), in file order.
    pub fn lookup(&self, name: &str) -> Vec<IpAddr> {
        let name = normalize(name);
        let mut out: Vec<IpAddr> = Vec::new();
        for (n, ip) in &self.entries {
            if *n == name && !out.contains(ip) {
                out.push(*ip);
            }
        }
        out
    }

    /// Number of (name, address) pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the file listed no names.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Parses an IP literal, accepting IPv6 in brackets and dropping an IPv6 zone (`%eth0`).
fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    let s = s.split('%').next().unwrap_or(s);
    s.parse().ok()
}

/// Resolves host names: IP literals as they are, then the hosts file, then DNS.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    hosts_file: Option<PathBuf>,
}

impl Resolver {
    /// A resolver that consults `hosts_file` (if any) before DNS.
    pub fn new(hosts_file: Option<PathBuf>) -> Self {
        Self {
            hosts_file: hosts_file.filter(|p| !p.as_os_str().is_empty()),
        }
    }

    /// A resolver reading the file named by `SKEIN_HOSTS`, if set.
    pub fn from_env() -> Self {
        Self::new(std::env::var_os(SKEIN_HOSTS_ENV).map(PathBuf::from))
    }

    /// The hosts file this resolver reads, if any.
    pub fn hosts_file(&self) -> Option<&Path> {
        self.hosts_file.as_deref()
    }

    /// Looks `host` up in the hosts file only. An unreadable file is logged and treated as
    /// listing nothing, so resolution falls back to DNS.
    pub fn lookup_hosts_file(&self, host: &str) -> Vec<IpAddr> {
        let Some(path) = &self.hosts_file else {
            return Vec::new();
        };
        match HostsFile::load(path) {
            Ok(file) => file.lookup(host),
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "cannot read the hosts file; falling back to DNS");
                Vec::new()
            }
        }
    }

    /// Resolves `host:port` to socket addresses.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Some(ip) = parse_ip(host) {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let listed = self.lookup_hosts_file(host);
        if !listed.is_empty() {
            tracing::debug!(host, addrs = ?listed, "resolved through the hosts file");
            return Ok(listed
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect());
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| ResolveError::Dns {
                host: host.to_owned(),
                error: source,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(ResolveError::NotFound(host.to_owned()));
        }
        Ok(addrs)
    }

    /// Like [`resolve`](Self::resolve) but only the address part: the hosts file's first
    /// address, or `None` if the file does not list `host` (the caller then leaves the name
    /// to its own DNS lookup).
    pub fn hosts_file_address(&self, host: &str) -> Option<IpAddr> {
        if let Some(ip) = parse_ip(host) {
            return Some(ip);
        }
        self.lookup_hosts_file(host).into_iter().next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SAMPLE: &str = "\
# skein hosts
127.0.0.1\tlocalhost
::1 localhost ip6-localhost   # trailing comment
127.10.2.1 was-service was-service.blog-system was-service.blog-system.svc was-service.blog-system.svc.cluster.local
127.10.2.2 MySQL-Service.blog-system.svc.cluster.local.

not-an-ip some-name
127.10.2.3
   127.10.2.9   was-service
[fe80::1%eth0] linklocal
";

    #[test]
    fn parses_names_and_aliases() {
        let f = HostsFile::parse(SAMPLE);
        let was = IpAddr::V4(Ipv4Addr::new(127, 10, 2, 1));
        assert_eq!(f.lookup("was-service")[0], was);
        assert_eq!(
            f.lookup("was-service.blog-system.svc.cluster.local"),
            vec![was]
        );
        assert_eq!(f.lookup("was-service.blog-system.svc"), vec![was]);
    }

    #[test]
    fn all_addresses_in_file_order_without_duplicates() {
        let f = HostsFile::parse(SAMPLE);
        assert_eq!(
            f.lookup("was-service"),
            vec![
                IpAddr::V4(Ipv4Addr::new(127, 10, 2, 1)),
                IpAddr::V4(Ipv4Addr::new(127, 10, 2, 9))
            ]
        );
        assert_eq!(
            f.lookup("localhost"),
            vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            ]
        );
    }

    #[test]
    fn case_insensitive_and_trailing_dot() {
        let f = HostsFile::parse(SAMPLE);
        let ip = IpAddr::V4(Ipv4Addr::new(127, 10, 2, 2));
        assert_eq!(
            f.lookup("mysql-service.blog-system.svc.cluster.local"),
            vec![ip]
        );
        assert_eq!(
            f.lookup("MYSQL-SERVICE.blog-system.svc.cluster.local."),
            vec![ip]
        );
    }

    #[test]
    fn comments_junk_and_empty_lines_are_skipped() {
        let f = HostsFile::parse(SAMPLE);
        assert!(f.lookup("some-name").is_empty());
        assert!(f.lookup("skein").is_empty());
        assert!(f.lookup("comment").is_empty());
        assert!(f.lookup("").is_empty());
        assert!(HostsFile::parse("").is_empty());
        assert!(HostsFile::parse("# only\n\n   \n").is_empty());
    }

    #[test]
    fn ipv6_with_zone_and_brackets() {
        let f = HostsFile::parse(SAMPLE);
        assert_eq!(
            f.lookup("linklocal"),
            vec!["fe80::1".parse::<IpAddr>().unwrap()]
        );
    }

    #[tokio::test]
    async fn resolver_prefers_hosts_file_then_dns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, "127.0.0.42 localhost was-service\n").unwrap();
        let r = Resolver::new(Some(path.clone()));
        let addrs = r.resolve("was-service", 8080).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.42:8080".parse().unwrap()]);
        // The file wins over DNS for names it lists.
        let addrs = r.resolve("localhost", 1).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.42:1".parse().unwrap()]);
        // IP literals bypass both.
        let addrs = r.resolve("[::1]", 2).await.unwrap();
        assert_eq!(addrs, vec!["[::1]:2".parse().unwrap()]);
        // The file is re-read on each lookup.
        std::fs::write(&path, "127.0.0.43 was-service\n").unwrap();
        let addrs = r.resolve("was-service", 8080).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.43:8080".parse().unwrap()]);
        // A missing file falls back to DNS without failing.
        let r = Resolver::new(Some(dir.path().join("missing")));
        assert!(r.resolve("localhost", 3).await.is_ok());
        assert!(r.resolve("no-such-host.invalid", 3).await.is_err());
    }
}
