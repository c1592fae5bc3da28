//! File rules the runtime needs in more than one place: a file or directory only its owner
//! reads, and whether a file is a program.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `bytes` to `path` (created or truncated) with mode 0600: only its owner can read it
/// (keys, passwords). A file that already exists is brought to 0600 too.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)
}

/// Creates `dir` (and missing parents) with mode 0700 and brings an existing `dir` to 0700.
/// Returns the mode it had when that was looser (group or others had any access), so the
/// caller can warn.
pub fn private_dir(dir: &Path) -> std::io::Result<Option<u32>> {
    match std::fs::metadata(dir) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
                return Ok(Some(mode));
            }
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            // The umask may have taken bits away, never added them; set it exactly.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Whether `p` is a file with an execute bit set.
pub fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_dirs_are_created_and_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let new = tmp.path().join("a/b");
        assert_eq!(private_dir(&new).unwrap(), None);
        assert_eq!(mode(&new), 0o700);
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(private_dir(&open).unwrap(), Some(0o755));
        assert_eq!(mode(&open), 0o700);
        assert_eq!(private_dir(&open).unwrap(), None, "already private");
    }

    #[test]
    fn private_files_are_0600_even_when_they_existed() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("key");
        std::fs::write(&f, "old").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&f, b"new").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new");
    }
}
