//! Giving memory back once a burst of work is over.
//!
//! glibc's allocator keeps what a burst freed (download buffers, upload chunks,
//! parsed manifests) in its arenas for reuse, so a server that has served a heavy
//! workload idles at several times the memory it started with. The allocator hands
//! free pages back only when asked: [`spawn_trimmer`] asks (`malloc_trim`) once the
//! server has been idle for a while after serving requests, and never while it is
//! busy, where the kept memory is what makes the next request cheap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Requests started since the process began, counted by the HTTP layer.
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Counts a request (the HTTP layer calls it once per request).
pub fn request_started() {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
}

/// How long no request may have started before the memory is trimmed.
pub const IDLE: Duration = Duration::from_secs(10);

/// Returns the allocator's free pages to the system; whether any went back.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists under its locks.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// What the trimmer decides on each tick: trim when requests were served since the
/// last trim and none started during the last tick.
#[derive(Debug, Default)]
struct Idle {
    last_seen: u64,
    last_trimmed: u64,
}

impl Idle {
    fn should_trim(&mut self, requests: u64) -> bool {
        let idle = requests == self.last_seen;
        self.last_seen = requests;
        if idle && requests != self.last_trimmed {
            self.last_trimmed = requests;
            true
        } else {
            false
        }
    }
}

/// Trims the allocator every time the server goes idle after work (checked every
/// [`IDLE`]).
pub fn spawn_trimmer() {
    let mut idle = Idle::default();
    crate::server::supervise("memory trim", IDLE, IDLE, move || {
        let trim_now = idle.should_trim(REQUESTS.load(Ordering::Relaxed));
        async move {
            if trim_now {
                let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
                tracing::debug!(released, "idle: returned free memory to the system");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::Idle;

    /// Trims once per burst, after a quiet tick; never while requests keep coming, and
    /// not again while nothing new was served.
    #[test]
    fn trims_once_after_each_burst() {
        let mut idle = Idle::default();
        assert!(!idle.should_trim(0), "nothing served yet");
        assert!(!idle.should_trim(5), "busy");
        assert!(!idle.should_trim(90), "busy");
        assert!(idle.should_trim(90), "quiet after a burst");
        assert!(!idle.should_trim(90), "already trimmed");
        assert!(!idle.should_trim(91), "busy again");
        assert!(idle.should_trim(91), "quiet again");
    }
}
