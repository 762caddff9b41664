//! Benchmarks of ssehub against what a competent user writes by hand (axum `Sse` + one
//! `tokio::sync::broadcast` per channel).
//!
//! - `ssehub-load` (binary): a load generator that starts both servers as child processes and
//!   drives them over loopback with raw-socket SSE subscribers; see `BENCHMARKS.md`.
//!   Scenario 11 also drives the `ssehub` hub binary (`ssehub-server`) over its HTTP API.
//! - `benches/micro.rs`: criterion micro-benchmarks of framing and fan-out.
//! - `tests/allocations.rs`: allocations per publish do not grow with the subscriber count.

pub mod chart;
pub mod client;
pub mod driver;
pub mod http;
pub mod proc;
pub mod server;

/// The most descriptors [`raise_fd_limit`] asks for (2^20), if the kernel allows as many.
pub const FD_LIMIT_WANTED: u64 = 1 << 20;

/// The `RLIMIT_NOFILE` (soft, hard) this process had before [`raise_fd_limit`] first ran.
static FD_LIMITS_BEFORE: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

/// Raise `RLIMIT_NOFILE`: soft and hard both to the kernel's ceiling for one process
/// (`/proc/sys/fs/nr_open`, at most [`FD_LIMIT_WANTED`]) when that is above the hard limit and
/// allowed (root, or `CAP_SYS_RESOURCE`), else the soft limit to the hard one. Returns the new
/// soft limit. Child processes started afterwards (the servers) inherit it.
pub fn raise_fd_limit() -> u64 {
    let before = fd_limits();
    FD_LIMITS_BEFORE.get_or_init(|| before);
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        .min(FD_LIMIT_WANTED);
    if ceiling > before.1 && rlimit::Resource::NOFILE.set(ceiling, ceiling).is_ok() {
        return ceiling;
    }
    // Not allowed (not root) or not needed: the soft limit up to the hard one.
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(before.0)
}

/// This process's `RLIMIT_NOFILE` now: (soft, hard); (0, 0) if it cannot be read.
#[must_use]
pub fn fd_limits() -> (u64, u64) {
    rlimit::Resource::NOFILE.get().unwrap_or((0, 0))
}

/// This process's `RLIMIT_NOFILE` (soft, hard) before [`raise_fd_limit`] first ran, if it has.
#[must_use]
pub fn fd_limits_before() -> Option<(u64, u64)> {
    FD_LIMITS_BEFORE.get().copied()
}
