//! The state directory: one place for everything a local run keeps (status, logs, data,
//! certificates, addresses), so `skein down` then `skein up` picks up where it left off.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::RuntimeError;
use crate::run::process;

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// `--state-dir`, else `SKEIN_STATE_DIR`, else `.skein` in the current directory.
    pub fn resolve(explicit: Option<&Path>) -> Result<StateDir, RuntimeError> {
        let root = match explicit {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os("SKEIN_STATE_DIR") {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => PathBuf::from(".skein"),
            },
        };
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .map_err(|e| RuntimeError::io(Path::new("."), e))?
                .join(root)
        };
        Ok(StateDir { root })
    }

    /// Creates the state directory and the directories under it that hold keys, certificates,
    /// databases and logs, each with mode 0700 (only the owner gets in), and brings existing
    /// ones to 0700. Returns the directories that were looser, with the mode they had.
    pub fn create(&self) -> Result<Vec<(PathBuf, u32)>, RuntimeError> {
        let mut loosened = Vec::new();
        for dir in [
            self.root.clone(),
            self.logs(),
            self.data(),
            self.certs(),
            self.ca_dir(),
            self.root.join("hosts.d"),
        ] {
            if let Some(mode) =
                crate::fs::private_dir(&dir).map_err(|e| RuntimeError::io(&dir, e))?
            {
                tracing::warn!(
                    "{} was open to other users (mode {mode:04o}); it is now 0700",
                    dir.display()
                );
                loosened.push((dir, mode));
            }
        }
        Ok(loosened)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn status_file(&self) -> PathBuf {
        self.root.join("status.json")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("supervisor.pid")
    }
    pub fn supervisor_log(&self) -> PathBuf {
        self.root.join("skein.log")
    }
    pub fn network_file(&self) -> PathBuf {
        self.root.join("network.json")
    }
    /// Where `skein apply` puts files for the control plane.
    pub fn applied_dir(&self) -> PathBuf {
        self.root.join("applied")
    }
    /// The GitOps controller's directory: the Application, its exported commits, its status.
    pub fn gitops_dir(&self) -> PathBuf {
        self.root.join("gitops")
    }
    /// The runtime's own objects for the control plane (the addons' Services), written at
    /// every `skein up`.
    pub fn addons_dir(&self) -> PathBuf {
        self.root.join("addons")
    }
    /// The objects the runtime's controllers manage (a Rollout's VirtualServices and
    /// DestinationRules), which the control plane reads after the manifests and
    /// `skein apply`'s objects.
    pub fn managed_dir(&self) -> PathBuf {
        self.root.join("managed")
    }

    /// The Rollouts controller's files: its status and the requests of `skein rollouts`.
    pub fn rollouts_dir(&self) -> PathBuf {
        self.root.join("rollouts")
    }

    /// The control plane's status (config version, rejections, proxies' acks).
    pub fn control_status_file(&self) -> PathBuf {
        self.root.join("control.json")
    }
    pub fn hosts_file(&self) -> PathBuf {
        self.root.join("hosts")
    }
    /// The hosts file of a pod with a sidecar.
    pub fn pod_hosts_file(&self, pod: &str) -> PathBuf {
        self.root.join("hosts.d").join(pod)
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn certs(&self) -> PathBuf {
        self.root.join("certs")
    }
    /// The control plane's CA (its root key among it).
    pub fn ca_dir(&self) -> PathBuf {
        self.certs().join("ca")
    }
    /// A pod's own directory (its bootstrap token).
    pub fn pod_dir(&self, pod: &str) -> PathBuf {
        self.root.join("pods").join(pod)
    }
    /// The bootstrap token of a pod's proxy: the local stand-in for a projected
    /// ServiceAccount token.
    pub fn bootstrap_token_file(&self, pod: &str) -> PathBuf {
        self.pod_dir(pod).join("token")
    }
    /// The mesh root the proxies pin to verify the control plane: the generated root, or the
    /// plug-in CA's trust bundle.
    pub fn mesh_root_file(&self, plugin_ca: Option<&Path>) -> PathBuf {
        match plugin_ca {
            Some(dir) => dir.join("root-cert.pem"),
            None => self.ca_dir().join("root-cert.pem"),
        }
    }

    /// Writes a new bootstrap token for `pod`'s proxy: 32 bytes from the system's CSPRNG, hex,
    /// mode 0600 in the pod's own directory (0700). Returns its SHA-256 (hex), what the
    /// registry lists. Each `skein up` issues new tokens.
    pub fn issue_bootstrap_token(&self, pod: &str) -> Result<String, RuntimeError> {
        use ring::rand::SecureRandom;
        let dir = self.pod_dir(pod);
        crate::fs::private_dir(&dir).map_err(|e| RuntimeError::io(&dir, e))?;
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| RuntimeError::io(&dir, std::io::Error::other("no system randomness")))?;
        let token = hex(&bytes);
        let path = self.bootstrap_token_file(pod);
        crate::fs::write_private(&path, token.as_bytes())
            .map_err(|e| RuntimeError::io(&path, e))?;
        Ok(token_sha256(&token))
    }

    pub fn container_log(&self, pod: &str, container: &str) -> PathBuf {
        self.logs().join(pod).join(format!("{container}.log"))
    }

    /// The pid of a live supervisor using this state directory, if any: the process the pid
    /// file names, if it is still that process (not a later one that reuses its pid).
    pub fn running_supervisor(&self) -> Option<u32> {
        match self.supervisor() {
            Supervisor::Running(pid) => Some(pid),
            Supervisor::NotRunning | Supervisor::Stale(_) => None,
        }
    }

    /// What the pid file says, checked against the process table.
    pub(crate) fn supervisor(&self) -> Supervisor {
        let Ok(text) = std::fs::read_to_string(self.pid_file()) else {
            return Supervisor::NotRunning;
        };
        let mut fields = text.split_whitespace();
        let Some(pid) = fields.next().and_then(|p| p.parse::<u32>().ok()) else {
            return Supervisor::NotRunning;
        };
        if !process::is_alive(pid) {
            return Supervisor::NotRunning;
        }
        let ours = match fields.next().and_then(|t| t.parse::<u64>().ok()) {
            Some(started) => process::start_time(pid) == Some(started),
            // A pid file from before start times were recorded: the process must at least
            // be a skein binary.
            None => process::exe_name(pid).is_some_and(|n| n.starts_with("skein")),
        };
        if ours {
            Supervisor::Running(pid)
        } else {
            Supervisor::Stale(pid)
        }
    }

    /// Records this process as the supervisor: its pid and start time.
    pub(crate) fn record_supervisor(&self) -> Result<(), RuntimeError> {
        let pid = std::process::id();
        let started = process::start_time(pid).unwrap_or(0);
        let path = self.pid_file();
        std::fs::write(&path, format!("{pid} {started}\n")).map_err(|e| RuntimeError::io(&path, e))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (hex) of a bootstrap token, as the control plane's registry compares it (of the
/// token without surrounding whitespace).
pub fn token_sha256(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes()).as_ref())
}

/// The supervisor the pid file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Supervisor {
    NotRunning,
    Running(u32),
    /// The pid is alive but is another process now.
    Stale(u32),
}

/// Loopback addresses handed out to pods and services, kept across runs so a pod keeps its
/// address as long as its name stays the same.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Network {
    /// The second octet of `127.X.0.0/16`, this state directory's slice of loopback.
    pub subnet: u8,
    pub pods: BTreeMap<String, Ipv4Addr>,
    pub services: BTreeMap<String, Ipv4Addr>,
}

impl Network {
    pub fn load_or_new(state: &StateDir) -> Result<Network, RuntimeError> {
        let path = state.network_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| RuntimeError::CorruptState {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Network {
                subnet: subnet_for(state.root()),
                ..Network::default()
            }),
            Err(e) => Err(RuntimeError::io(&path, e)),
        }
    }

    pub fn save(&self, state: &StateDir) -> Result<(), RuntimeError> {
        let path = state.network_file();
        let text = serde_json::to_vec_pretty(self).map_err(|e| RuntimeError::CorruptState {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        std::fs::write(&path, text).map_err(|e| RuntimeError::io(&path, e))
    }

    pub fn pod_ip(&mut self, pod: &str) -> Result<Ipv4Addr, RuntimeError> {
        let subnet = self.subnet;
        Self::assign(&mut self.pods, pod, subnet, 1)
    }

    pub fn service_ip(&mut self, key: &str) -> Result<Ipv4Addr, RuntimeError> {
        let subnet = self.subnet;
        Self::assign(&mut self.services, key, subnet, 2)
    }

    /// Keeps only the names still in use, so addresses of deleted pods can be reused.
    pub fn retain_pods(&mut self, live: &[String]) {
        self.pods.retain(|name, _| live.contains(name));
    }

    fn assign(
        table: &mut BTreeMap<String, Ipv4Addr>,
        key: &str,
        subnet: u8,
        third: u8,
    ) -> Result<Ipv4Addr, RuntimeError> {
        if let Some(ip) = table.get(key) {
            return Ok(*ip);
        }
        let ip = (1..=254u8)
            .map(|n| Ipv4Addr::new(127, subnet, third, n))
            .find(|ip| !table.values().any(|used| used == ip))
            .ok_or(RuntimeError::AddressesExhausted)?;
        table.insert(key.to_string(), ip);
        Ok(ip)
    }
}

/// A stable slice of loopback per state directory, so two runs with different state
/// directories (tests in parallel, say) don't fight over the same addresses.
fn subnet_for(root: &Path) -> u8 {
    let h = crate::naming::fnv1a(root.to_string_lossy().as_bytes());
    // 127.0.x.x is left to the host; stay within 127.16..127.239.
    16 + (h % 224) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_stable_and_distinct() {
        let mut n = Network {
            subnet: 42,
            ..Network::default()
        };
        let a = n.pod_ip("web-1").unwrap();
        let b = n.pod_ip("web-2").unwrap();
        assert_ne!(a, b);
        assert_eq!(n.pod_ip("web-1").unwrap(), a);
        assert_eq!(a.octets()[..3], [127, 42, 1]);
        let s = n.service_ip("blog-system/web-service").unwrap();
        assert_eq!(s.octets()[..3], [127, 42, 2]);
        n.retain_pods(&["web-2".to_string()]);
        assert_eq!(n.pod_ip("web-3").unwrap(), a, "a freed address is reused");
    }
}
