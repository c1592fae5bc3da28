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

/// When the process started, in clock ticks after boot (field 22 of `/proc/PID/stat`). With the
/// pid it names one process for good: a later process that reuses the pid starts later.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or ')'; the fields
    // after the last ')' start with field 3, so field 22 is the 20th of them.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is alive and is still the process that had `started` as its start time.
pub fn is_same(pid: u32, started: u64) -> bool {
    is_alive(pid) && start_time(pid) == Some(started)
}

/// The file name of the program `pid` runs (`/proc/PID/exe`).
pub fn exe_name(pid: u32) -> Option<String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    Some(exe.file_name()?.to_string_lossy().into_owned())
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

    #[test]
    fn a_process_is_known_by_its_start_time() {
        let me = std::process::id();
        let started = start_time(me).unwrap();
        assert!(is_same(me, started));
        assert!(
            !is_same(me, started + 1),
            "same pid, another start: another process"
        );
        assert_eq!(start_time(0), None);
    }
}
