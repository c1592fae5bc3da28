//! The output of a refreshing command (`skein top`, `skein stat -w`): on a terminal the screen
//! is redrawn in place and keys are read without echo; otherwise plain lines.

use std::io::{IsTerminal, Read, Write};
use std::sync::mpsc;
use std::time::Duration;

/// The output of a refreshing command: on a terminal, the screen redrawn and keys read (`q`,
/// Ctrl-C) without echo; otherwise plain lines.
pub struct Screen {
    live: bool,
    keys: Option<mpsc::Receiver<u8>>,
    /// `stty -g` before the keys were read, restored on drop.
    saved: Option<String>,
}

impl Screen {
    /// `live`: redraw in place (only when stdout is a terminal).
    pub fn new(live: bool) -> Screen {
        let live = live && std::io::stdout().is_terminal();
        let mut s = Screen {
            live,
            keys: None,
            saved: None,
        };
        if live && std::io::stdin().is_terminal() {
            s.saved = stty(&["-g"]).map(|g| g.trim().to_string());
            if s.saved.is_some() && stty(&["-icanon", "-echo", "-isig", "min", "1"]).is_some() {
                let (tx, rx) = mpsc::channel();
                std::thread::spawn(move || {
                    let mut b = [0u8; 1];
                    let mut stdin = std::io::stdin();
                    while let Ok(1) = stdin.read(&mut b) {
                        if tx.send(b[0]).is_err() {
                            break;
                        }
                    }
                });
                s.keys = Some(rx);
            }
        }
        s
    }

    /// Prints one refresh; false when the output is gone (a closed pipe).
    pub fn show(&mut self, text: &str, note: Option<&str>) -> anyhow::Result<bool> {
        let mut out = std::io::stdout().lock();
        let mut page = String::new();
        if self.live {
            page.push_str("\x1b[H\x1b[2J");
        }
        page.push_str(text);
        if self.live {
            if let Some(n) = note {
                page.push_str(&format!("\n{n}\n"));
            }
            page.push_str("\n(q to quit)\n");
        } else if let Some(n) = note {
            eprintln!("{n}");
        }
        if self.live {
            page = page.replace('\n', "\r\n");
        }
        match out.write_all(page.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits `secs`; false when the user asked to quit.
    pub fn wait(&mut self, secs: f64) -> anyhow::Result<bool> {
        let d = Duration::from_secs_f64(secs);
        let Some(keys) = &self.keys else {
            std::thread::sleep(d);
            return Ok(true);
        };
        let deadline = std::time::Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(true);
            }
            match keys.recv_timeout(left) {
                Ok(b'q' | b'Q' | 3 | 4) => return Ok(false),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(true),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(false),
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            stty(&[saved.as_str()]);
        }
    }
}

/// `stty ARGS` on the terminal on stdin; its output, None if it failed.
fn stty(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("stty")
        .args(args)
        .stdin(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
