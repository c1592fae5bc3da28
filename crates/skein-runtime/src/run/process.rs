//! The few process-control calls the supervisor needs, through `rustix` (no `unsafe`).

use rustix::io::Errno;
use rustix::process::{Pid, kill_process, kill_process_group, test_kill_process};

pub use rustix::process::Signal;

/// Whether a process with this pid exists (and is not a zombie we could reap).
pub fn is_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    // Signal 0 only checks for existence and permission.
    if let Err(e) = test_kill_process(pid) {
        return e == Errno::PERM;
    }
    // A zombie still answers kill(0); look at /proc to tell it apart.
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero())) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// Sends `signal` to a process group (the supervisor starts every container as the leader of
/// its own group, so helpers it forks go with it).
pub fn signal_group(pgid: u32, signal: Signal) -> bool {
    match above_init(pgid) {
        Some(pgid) => kill_process_group(pgid, signal).is_ok(),
        None => false,
    }
}

pub fn signal(pid: u32, signal: Signal) -> bool {
    match above_init(pid) {
        Some(pid) => kill_process(pid, signal).is_ok(),
        None => false,
    }
}

/// `pid` as a process id, unless it is init (1), 0 or out of range: those are never ours.
fn above_init(pid: u32) -> Option<Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p > 1)
        .and_then(Pid::from_raw)
}

/// Whether this process runs as root.
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_processes_are_alive_or_signalled() {
        assert!(is_alive(std::process::id()));
        assert!(!is_alive(0));
        assert!(!is_alive(u32::MAX));
        assert!(!signal(0, Signal::TERM) && !signal(1, Signal::TERM));
        assert!(!signal_group(1, Signal::KILL));
    }
}
