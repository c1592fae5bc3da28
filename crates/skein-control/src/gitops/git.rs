//! The `git` CLI, run on a local repository only: resolving a revision, reading a commit's
//! files (bounded), its subject, and the working tree's uncommitted edits.
//!
//! No command run here executes the repository's hooks, filters or fsmonitor: only plumbing
//! (`rev-parse`, `ls-tree`, `cat-file`, `log`, `status` with `core.fsmonitor` off) is used, and
//! blobs are read raw, without smudge filters.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// At most this many manifest files are exported from a commit.
pub const MAX_FILES: usize = 2_000;
/// A manifest file larger than this is refused.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// The exported manifests together are at most this large.
pub const MAX_TOTAL_BYTES: u64 = 32 * 1024 * 1024;
/// What skein reads of one git command's output (a listing, a blob, a status).
pub const MAX_OUTPUT: u64 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run {program}: {error} (install git, or start skein where `git` is on PATH)")]
    Spawn {
        program: String,
        error: std::io::Error,
    },
    #[error("`git {args}` in {repo} failed: {stderr}")]
    Failed {
        repo: String,
        args: String,
        stderr: String,
    },
    #[error("revision {revision:?} is not a commit of {repo}: {stderr}")]
    UnknownRevision {
        repo: String,
        revision: String,
        stderr: String,
    },
    #[error("path {path:?} does not exist at commit {commit} of {repo}")]
    NoPath {
        repo: String,
        path: String,
        commit: String,
    },
    #[error(
        "{what} at commit {commit} is too large: {size} bytes over the limit of {limit}; keep the manifests path small"
    )]
    TooLarge {
        what: String,
        commit: String,
        size: u64,
        limit: u64,
    },
    #[error("commit {commit} has more than {MAX_FILES} manifest files under {path:?}")]
    TooManyFiles { commit: String, path: String },
    #[error("cannot write {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// One local repository and the git program that reads it.
#[derive(Debug, Clone)]
pub struct Git {
    pub program: PathBuf,
    pub repo: PathBuf,
}

/// A commit's identity, as `skein status` shows it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CommitInfo {
    pub sha: String,
    pub subject: String,
    pub author: String,
    /// Author date, ISO 8601.
    pub date: String,
}

/// A manifest file of a commit.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeFile {
    /// Relative to the Application's path.
    pub path: String,
    pub blob: String,
    pub size: u64,
}

impl Git {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.arg("-C")
            .arg(&self.repo)
            .args([
                "-c",
                "core.fsmonitor=false",
                "-c",
                "core.hooksPath=/dev/null",
            ])
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .stdin(Stdio::null());
        c
    }

    /// Runs git; its output is read up to [`MAX_OUTPUT`] bytes (a command that says more is
    /// stopped and fails), its error output up to 64 KiB.
    fn run(&self, args: &[&str]) -> Result<Result<Vec<u8>, String>, GitError> {
        use std::io::Read;
        let spawn = |error| GitError::Spawn {
            program: self.program.display().to_string(),
            error,
        };
        let mut child = self
            .command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        let mut err_pipe = child.stderr.take();
        let errors = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(e) = err_pipe.as_mut() {
                let _ = e.take(64 * 1024).read_to_end(&mut buf);
                // Drain the rest so git does not block on a full pipe.
                let _ = std::io::copy(e, &mut std::io::sink());
            }
            buf
        });
        let mut out = Vec::new();
        let mut over = false;
        if let Some(mut o) = child.stdout.take() {
            let _ = (&mut o).take(MAX_OUTPUT + 1).read_to_end(&mut out);
            if out.len() as u64 > MAX_OUTPUT {
                over = true;
                let _ = child.kill();
            }
        }
        let status = child.wait().map_err(spawn)?;
        let stderr = errors.join().unwrap_or_default();
        if over {
            return Ok(Err(format!(
                "its output is over {MAX_OUTPUT} bytes; the repository or path is too large"
            )));
        }
        if status.success() {
            Ok(Ok(out))
        } else {
            let stderr = String::from_utf8_lossy(&stderr);
            Ok(Err(stderr.trim().chars().take(500).collect()))
        }
    }

    fn must(&self, args: &[&str]) -> Result<Vec<u8>, GitError> {
        self.run(args)?.map_err(|stderr| GitError::Failed {
            repo: self.repo.display().to_string(),
            args: args.join(" "),
            stderr,
        })
    }

    /// Checks that the repository is one git reads.
    pub fn check(&self) -> Result<(), GitError> {
        self.must(&["rev-parse", "--git-dir"]).map(drop)
    }

    /// The commit `revision` names (`HEAD`, a branch, a tag, a sha).
    pub fn resolve(&self, revision: &str) -> Result<String, GitError> {
        let spec = format!("{revision}^{{commit}}");
        match self.run(&[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ])? {
            Ok(out) => Ok(String::from_utf8_lossy(&out).trim().to_string()),
            Err(stderr) => Err(GitError::UnknownRevision {
                repo: self.repo.display().to_string(),
                revision: revision.to_string(),
                stderr: if stderr.is_empty() {
                    "no such branch, tag or commit".into()
                } else {
                    stderr
                },
            }),
        }
    }

    /// The commit's subject, author and date.
    pub fn info(&self, sha: &str) -> Result<CommitInfo, GitError> {
        let out = self.must(&[
            "log",
            "-1",
            "--no-show-signature",
            "--format=%s%x00%an%x00%aI",
            sha,
        ])?;
        let text = String::from_utf8_lossy(&out);
        let mut parts = text.trim_end().splitn(3, '\0');
        Ok(CommitInfo {
            sha: sha.to_string(),
            subject: parts.next().unwrap_or_default().chars().take(200).collect(),
            author: parts.next().unwrap_or_default().to_string(),
            date: parts.next().unwrap_or_default().to_string(),
        })
    }

    /// The manifest files (`*.yaml`, `*.yml`) of `path` at `sha`; with `recurse`, those of
    /// its subdirectories too (Argo CD's `directory.recurse`).
    pub fn files(&self, sha: &str, path: &str, recurse: bool) -> Result<Vec<TreeFile>, GitError> {
        let path = path.trim_matches('/');
        let tree = if path.is_empty() || path == "." {
            sha.to_string()
        } else {
            format!("{sha}:{path}")
        };
        let mut args = vec!["ls-tree", "-l", "-z"];
        if recurse {
            args.push("-r");
        }
        args.extend(["--end-of-options", &tree]);
        let out = self.run(&args)?.map_err(|stderr| {
            if stderr.contains("too large") {
                GitError::TooManyFiles {
                    commit: sha.to_string(),
                    path: path.to_string(),
                }
            } else {
                GitError::NoPath {
                    repo: self.repo.display().to_string(),
                    path: path.to_string(),
                    commit: sha.to_string(),
                }
            }
        })?;
        let mut files = Vec::new();
        let mut total = 0u64;
        for entry in out.split(|b| *b == 0).filter(|e| !e.is_empty()) {
            let entry = String::from_utf8_lossy(entry);
            let Some((meta, name)) = entry.split_once('\t') else {
                continue;
            };
            let mut f = meta.split_whitespace();
            let (Some(mode), Some(kind), Some(blob), Some(size)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            // Regular files only: no symlinks (they could point outside), no submodules.
            if kind != "blob" || !(mode == "100644" || mode == "100755") {
                continue;
            }
            if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
                continue;
            }
            if name
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".." || c.starts_with('.'))
            {
                continue;
            }
            let size: u64 = size.parse().unwrap_or(u64::MAX);
            if size > MAX_FILE_BYTES {
                return Err(GitError::TooLarge {
                    what: name.to_string(),
                    commit: sha.to_string(),
                    size,
                    limit: MAX_FILE_BYTES,
                });
            }
            total = total.saturating_add(size);
            if total > MAX_TOTAL_BYTES {
                return Err(GitError::TooLarge {
                    what: format!("the manifests under {path:?}"),
                    commit: sha.to_string(),
                    size: total,
                    limit: MAX_TOTAL_BYTES,
                });
            }
            if files.len() == MAX_FILES {
                return Err(GitError::TooManyFiles {
                    commit: sha.to_string(),
                    path: path.to_string(),
                });
            }
            files.push(TreeFile {
                path: name.to_string(),
                blob: blob.to_string(),
                size,
            });
        }
        Ok(files)
    }

    /// A blob's bytes, raw (no filters), at most [`MAX_FILE_BYTES`].
    pub fn blob(&self, blob: &str) -> Result<Vec<u8>, GitError> {
        let out = self.must(&["cat-file", "blob", blob])?;
        if out.len() as u64 > MAX_FILE_BYTES {
            return Err(GitError::TooLarge {
                what: format!("blob {blob}"),
                commit: "-".into(),
                size: out.len() as u64,
                limit: MAX_FILE_BYTES,
            });
        }
        Ok(out)
    }

    /// The working tree's uncommitted changes under `path` (`git status --porcelain`), at
    /// most `limit` lines; empty for a bare repository.
    pub fn uncommitted(&self, path: &str, limit: usize) -> Vec<String> {
        let path = if path.trim_matches('/').is_empty() {
            ".".to_string()
        } else {
            path.trim_matches('/').to_string()
        };
        match self.run(&[
            "status",
            "--porcelain",
            "--untracked-files=normal",
            "--",
            &path,
        ]) {
            Ok(Ok(out)) => String::from_utf8_lossy(&out)
                .lines()
                .take(limit)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Finds `git` on `PATH`.
pub fn find_program() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("git"))
        .find(|p| p.is_file())
}

/// The repository `repo_url` names: a local path (relative to `base`) or `file://PATH`.
/// Remote URLs are refused: skein never fetches over the network.
pub fn local_repo(repo_url: &str, base: &Path) -> Result<PathBuf, RepoUrlError> {
    let url = repo_url.trim();
    if url.is_empty() {
        return Err(RepoUrlError::Empty);
    }
    let path = if let Some(rest) = url.strip_prefix("file://") {
        let rest = rest.strip_prefix("localhost").unwrap_or(rest);
        if !rest.starts_with('/') {
            return Err(RepoUrlError::Remote(url.to_string()));
        }
        PathBuf::from(rest)
    } else if url.contains("://") || scp_like(url) {
        return Err(RepoUrlError::Remote(url.to_string()));
    } else {
        base.join(url)
    };
    std::fs::canonicalize(&path).map_err(|e| RepoUrlError::Missing {
        path: path.clone(),
        error: e.to_string(),
    })
}

/// `user@host:path` or `host:path`, git's scp-like remote syntax (a ':' before any '/').
fn scp_like(url: &str) -> bool {
    match (url.find(':'), url.find('/')) {
        (Some(c), Some(s)) => c < s && c > 1,
        (Some(c), None) => c > 1,
        _ => false,
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RepoUrlError {
    #[error("spec.source.repoURL is empty; give the path of a local git repository")]
    Empty,
    #[error(
        "spec.source.repoURL {0:?} is a remote repository; skein reads local repositories only (no network fetch): clone it and set repoURL to the clone's path or file:///PATH"
    )]
    Remote(String),
    #[error("spec.source.repoURL: {}: {error}", path.display())]
    Missing { path: PathBuf, error: String },
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Runs git in `repo` as a test's committer; fails the test when git does.
    pub(in crate::gitops) fn git(repo: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .expect("git is installed")
            .status
            .success();
        assert!(ok, "git {args:?}");
    }

    /// Only regular manifest files, not hidden or linked ones; a file over the limit refuses
    /// the commit; a missing path and an unknown revision say so.
    #[test]
    fn a_commits_files_are_listed_within_bounds() {
        let repo = tempfile::tempdir().unwrap();
        let p = repo.path();
        std::fs::create_dir(p.join("k8s")).unwrap();
        std::fs::create_dir(p.join("k8s/sub")).unwrap();
        std::fs::write(p.join("k8s/a.yaml"), "kind: A\n").unwrap();
        std::fs::write(p.join("k8s/sub/b.yml"), "kind: B\n").unwrap();
        std::fs::write(p.join("k8s/.hidden.yaml"), "kind: H\n").unwrap();
        std::fs::write(p.join("k8s/notes.txt"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("k8s/link.yaml")).unwrap();
        git(p, &["init", "-q"]);
        git(p, &["add", "."]);
        git(p, &["commit", "-qm", "first"]);
        let g = Git {
            program: find_program().expect("git on PATH"),
            repo: p.to_path_buf(),
        };
        let sha = g.resolve("HEAD").unwrap();
        let names = |recurse| -> Vec<String> {
            g.files(&sha, "k8s", recurse)
                .unwrap()
                .into_iter()
                .map(|f| f.path)
                .collect()
        };
        assert_eq!(names(false), ["a.yaml"]);
        assert_eq!(names(true), ["a.yaml", "sub/b.yml"]);
        assert_eq!(g.info(&sha).unwrap().subject, "first");
        // A tag, a short sha and an annotated tag name the same commit.
        git(p, &["tag", "v1"]);
        git(p, &["tag", "-a", "-m", "release", "r1"]);
        assert_eq!(g.resolve("v1").unwrap(), sha);
        assert_eq!(
            g.resolve("r1").unwrap(),
            sha,
            "an annotated tag peels to its commit"
        );
        assert_eq!(g.resolve(&sha[..7]).unwrap(), sha);
        assert!(
            matches!(
                g.resolve("--output=/tmp/x"),
                Err(GitError::UnknownRevision { .. })
            ),
            "a revision is never an option"
        );
        assert!(matches!(
            g.files(&sha, "nope", false),
            Err(GitError::NoPath { .. })
        ));
        assert!(matches!(
            g.resolve("no-such-branch"),
            Err(GitError::UnknownRevision { .. })
        ));

        std::fs::write(
            p.join("k8s/big.yaml"),
            vec![b'#'; MAX_FILE_BYTES as usize + 1],
        )
        .unwrap();
        git(p, &["add", "."]);
        git(p, &["commit", "-qm", "big"]);
        let sha = g.resolve("HEAD").unwrap();
        let err = g.files(&sha, "k8s", false).unwrap_err();
        assert!(matches!(err, GitError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("big.yaml"), "{err}");
    }

    #[test]
    fn remote_urls_are_refused_and_local_ones_resolve() {
        let dir = tempfile::tempdir().unwrap();
        for url in [
            "https://github.com/a/b.git",
            "ssh://git@host/a.git",
            "git@github.com:a/b.git",
            "git://host/x",
            "file://host/x",
        ] {
            assert!(
                matches!(local_repo(url, dir.path()), Err(RepoUrlError::Remote(_))),
                "{url}"
            );
        }
        std::fs::create_dir(dir.path().join("repo")).unwrap();
        let canon = std::fs::canonicalize(dir.path().join("repo")).unwrap();
        assert_eq!(local_repo("repo", dir.path()).unwrap(), canon);
        assert_eq!(local_repo("./repo", dir.path()).unwrap(), canon);
        let url = format!("file://{}", canon.display());
        assert_eq!(local_repo(&url, Path::new("/")).unwrap(), canon);
        assert!(matches!(
            local_repo("nope", dir.path()),
            Err(RepoUrlError::Missing { .. })
        ));
    }
}
