//! Containers' logs, rotated by size so a chatty or flooded workload cannot fill the disk:
//! `x.log` is the current file, `x.log.1` the one before, up to `x.log.N-1`.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How big a log may grow and how many files of it are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRotation {
    /// A file is rotated before it would grow past this many bytes.
    pub max_bytes: u64,
    /// Files kept, the current one included (at least 1).
    pub files: usize,
}

/// The environment variables that set [`LogRotation`].
pub const LOG_MAX_SIZE_ENV: &str = "SKEIN_LOG_MAX_SIZE";
pub const LOG_FILES_ENV: &str = "SKEIN_LOG_FILES";

impl Default for LogRotation {
    /// 10 MiB, 3 files: at most 30 MiB per container.
    fn default() -> Self {
        LogRotation {
            max_bytes: 10 * 1024 * 1024,
            files: 3,
        }
    }
}

/// A rotation setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "{var}={value:?}: {reason} (for example {LOG_MAX_SIZE_ENV}=10M and {LOG_FILES_ENV}=3, the defaults)"
)]
pub struct LogRotationError {
    var: &'static str,
    value: String,
    reason: &'static str,
}

impl LogRotation {
    /// The defaults, changed by `SKEIN_LOG_MAX_SIZE` (bytes, or with a `K`, `M` or `G`
    /// suffix in units of 1024) and `SKEIN_LOG_FILES`.
    pub fn from_env() -> Result<LogRotation, LogRotationError> {
        let get = |var| std::env::var(var).ok().filter(|v| !v.trim().is_empty());
        LogRotation::from_values(
            get(LOG_MAX_SIZE_ENV).as_deref(),
            get(LOG_FILES_ENV).as_deref(),
        )
    }

    fn from_values(
        max_size: Option<&str>,
        files: Option<&str>,
    ) -> Result<LogRotation, LogRotationError> {
        let mut r = LogRotation::default();
        if let Some(v) = max_size {
            r.max_bytes = parse_size(v).ok_or(LogRotationError {
                var: LOG_MAX_SIZE_ENV,
                value: v.to_string(),
                reason: "not a size of at least 1 KiB",
            })?;
        }
        if let Some(v) = files {
            r.files = v
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or(LogRotationError {
                    var: LOG_FILES_ENV,
                    value: v.to_string(),
                    reason: "not a number of files from 1 to 100",
                })?;
        }
        Ok(r)
    }
}

fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let (digits, unit) = match v.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&v[..i], c.to_ascii_uppercase()),
        _ => (v, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return None,
    };
    let n: u64 = digits.trim().parse().ok()?;
    n.checked_mul(1 << shift).filter(|b| *b >= 1024)
}

/// One container's log, appended to by its stdout, its stderr and the supervisor's own notes,
/// across restarts. Files are owner-only (a workload may log what it should not).
pub struct LogFile {
    path: PathBuf,
    rotation: LogRotation,
    /// The open current file and its size, or the error that kept it from opening.
    current: Mutex<Option<(File, u64)>>,
}

impl LogFile {
    pub fn new(path: PathBuf, rotation: LogRotation) -> LogFile {
        LogFile {
            path,
            rotation,
            current: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes`, rotating first whenever the current file would grow past the limit
    /// (a chunk bigger than the room left is split, at its last newline that fits if any).
    pub fn write(&self, mut bytes: &[u8]) -> std::io::Result<()> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while !bytes.is_empty() {
            if current.is_none() {
                *current = Some(self.open()?);
            }
            let Some((file, size)) = current.as_mut() else {
                continue;
            };
            let room = self.rotation.max_bytes.saturating_sub(*size);
            if room == 0 {
                *current = None;
                self.rotate()?;
                continue;
            }
            let mut take = bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            if take < bytes.len()
                && *size > 0
                && let Some(nl) = bytes[..take].iter().rposition(|b| *b == b'\n')
            {
                take = nl + 1;
            } else if take < bytes.len() && *size > 0 {
                // Nothing of a line fits: start the next file with it.
                *current = None;
                self.rotate()?;
                continue;
            }
            file.write_all(&bytes[..take])?;
            *size += take as u64;
            bytes = &bytes[take..];
        }
        Ok(())
    }

    /// Appends one line of the supervisor's (`skein: ...`).
    pub fn line(&self, line: &str) {
        let mut text = line.to_string();
        text.push('\n');
        if let Err(e) = self.write(text.as_bytes()) {
            tracing::warn!("cannot write {}: {e}", self.path.display());
        }
    }

    fn open(&self) -> std::io::Result<(File, u64)> {
        if let Some(dir) = self.path.parent() {
            crate::fs::private_dir(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        let size = file.metadata()?.len();
        Ok((file, size))
    }

    /// `x.log.N-2` → `x.log.N-1`, ..., `x.log` → `x.log.1`; the oldest is dropped.
    fn rotate(&self) -> std::io::Result<()> {
        let numbered = |n: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        let keep = self.rotation.files;
        if keep <= 1 {
            return remove_if_there(&self.path);
        }
        remove_if_there(&numbered(keep - 1))?;
        for n in (1..keep - 1).rev() {
            rename_if_there(&numbered(n), &numbered(n + 1))?;
        }
        rename_if_there(&self.path, &numbered(1))
    }
}

fn remove_if_there(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_there(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_of(dir: &Path) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_flood_is_rotated_and_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pod/app.log");
        let log = LogFile::new(
            path.clone(),
            LogRotation {
                max_bytes: 4096,
                files: 3,
            },
        );
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        for _ in 0..1000 {
            log.write(&line).unwrap();
        }
        log.write(&vec![b'y'; 10_000]).unwrap(); // one chunk bigger than a file
        log.line("skein: container exited");
        let files = files_of(path.parent().unwrap());
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["app.log", "app.log.1", "app.log.2"]);
        for (name, size) in &files {
            assert!(*size <= 4096, "{name} is {size} bytes");
        }
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.ends_with("skein: container exited\n"), "{current}");
    }

    #[test]
    fn whole_lines_stay_together_when_they_fit() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("app.log");
        let log = LogFile::new(
            path.clone(),
            LogRotation {
                max_bytes: 1024,
                files: 2,
            },
        );
        for i in 0..100 {
            log.line(&format!("line {i:04} {}", "-".repeat(40)));
        }
        for p in [path.clone(), tmp.path().join("app.log.1")] {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.lines().all(|l| l.starts_with("line ")), "{text}");
            assert!(text.ends_with('\n'));
        }
        assert!(!tmp.path().join("app.log.2").exists());
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("line 0099")
        );
    }

    #[test]
    fn an_existing_log_counts_toward_the_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("app.log");
        std::fs::write(&path, vec![b'a'; 1000]).unwrap();
        let log = LogFile::new(
            path.clone(),
            LogRotation {
                max_bytes: 1024,
                files: 3,
            },
        );
        log.line(&"b".repeat(100));
        assert_eq!(
            std::fs::metadata(tmp.path().join("app.log.1"))
                .unwrap()
                .len(),
            1000
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 101);
    }

    #[test]
    fn sizes_and_counts_parse_or_say_what_is_wrong() {
        let r = LogRotation::from_values(Some("512K"), Some("5")).unwrap();
        assert_eq!((r.max_bytes, r.files), (512 * 1024, 5));
        assert_eq!(
            LogRotation::from_values(Some("10m"), None)
                .unwrap()
                .max_bytes,
            10 << 20
        );
        assert_eq!(
            LogRotation::from_values(Some("4096"), None)
                .unwrap()
                .max_bytes,
            4096
        );
        assert_eq!(
            LogRotation::from_values(None, None).unwrap(),
            LogRotation::default()
        );
        for bad in ["", "ten", "10X", "12", "-1M"] {
            let e = LogRotation::from_values(Some(bad), None).unwrap_err();
            assert!(e.to_string().starts_with("SKEIN_LOG_MAX_SIZE="), "{e}");
        }
        let e = LogRotation::from_values(None, Some("0")).unwrap_err();
        assert!(e.to_string().contains("from 1 to 100"), "{e}");
    }
}
