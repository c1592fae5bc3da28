//! Thin, safe wrappers over the few process-control calls the supervisor needs.

/// Whether a process with this pid exists (and is not a zombie we could reap).
pub fn is_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    if rc != 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    }
    // A zombie still answers kill(0); look at /proc to tell it apart.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// Sends `signal` to a process group (the supervisor starts every container as the leader of
/// its own group, so helpers it forks go with it).
pub fn signal_group(pgid: u32, signal: i32) -> bool {
    let Ok(pgid) = i32::try_from(pgid) else {
        return false;
    };
    if pgid <= 1 {
        return false;
    }
    // SAFETY: plain syscall on a pid we started; a negative pid addresses the group.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

pub fn signal(pid: u32, signal: i32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 1 {
        return false;
    }
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid, signal) == 0 }
}

pub use libc::{SIGKILL, SIGTERM};
