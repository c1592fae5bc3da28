//! Continuous load for the canary tests: client threads sending GETs, each answer recorded
//! with the measurement window it was sent in, its status and the version that answered.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Reply, get};

/// One request's outcome: the window it was sent in, its status (0: no answer) and the
/// version that answered.
pub type Sample = (u32, u16, String);

/// The window of what is not being measured; a test tags its measurements with a weight.
pub const BETWEEN: u32 = 1000;

pub struct Load {
    stop: Arc<AtomicBool>,
    window: Arc<AtomicU32>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `threads` clients, each sending a GET to `url` every `every`; `version` reads which
    /// version answered.
    pub fn start(
        url: String,
        threads: usize,
        every: Duration,
        version: fn(&Reply) -> String,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let window = Arc::new(AtomicU32::new(BETWEEN));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (url, stop, window, samples) =
                    (url.clone(), stop.clone(), window.clone(), samples.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let w = window.load(Ordering::Acquire);
                        let sample = match std::panic::catch_unwind(|| get(&url)) {
                            Ok(r) => (w, r.status, version(&r)),
                            Err(_) => (w, 0, String::new()),
                        };
                        samples
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(sample);
                        std::thread::sleep(every);
                    }
                })
            })
            .collect();
        Load {
            stop,
            window,
            samples,
            threads,
        }
    }

    /// Tags what is sent from now on with `window`.
    pub fn tag(&self, window: u32) {
        self.window.store(window, Ordering::Release);
    }

    /// Tags what is sent from now on with `weight` until `n` answers are in (or 30 s).
    pub fn measure(&self, weight: u32, n: usize) {
        self.tag(weight);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count(weight) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.tag(BETWEEN);
    }

    pub fn count(&self, window: u32) -> usize {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| s.0 == window)
            .count()
    }

    /// How many answers in `window` came from `version`.
    pub fn answered_by(&self, window: u32, version: &str) -> usize {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| s.0 == window && s.2 == version)
            .count()
    }

    /// The answers so far that were not a 200.
    pub fn failures(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| s.1 != 200)
            .cloned()
            .collect()
    }

    pub fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        Arc::try_unwrap(self.samples)
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .unwrap_or_default()
    }
}

/// The percentage of the answers in `window` that came from `version`, and how many there
/// were.
pub fn share(samples: &[Sample], window: u32, version: &str) -> (f64, usize) {
    let w: Vec<&Sample> = samples.iter().filter(|s| s.0 == window).collect();
    let n = w.iter().filter(|s| s.2 == version).count();
    (100.0 * n as f64 / w.len().max(1) as f64, w.len())
}
