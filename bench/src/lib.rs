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

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}
