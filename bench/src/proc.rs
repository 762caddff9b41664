//! Per-process CPU time and memory from `/proc` (Linux).

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
pub const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU time of `pid` so far, in seconds.
#[must_use]
pub fn cpu_seconds(pid: u32) -> f64 {
    let (user, system) = cpu_split(pid);
    user + system
}

/// User and system CPU time of `pid` so far, in seconds.
#[must_use]
pub fn cpu_split(pid: u32) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0.0, 0.0);
    };
    // Fields after the command name (which may contain spaces) start at the state, field 3.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return (0.0, 0.0);
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime is field 14 and stime field 15 of the whole line: indexes 11 and 12 here.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    #[allow(clippy::cast_precision_loss)]
    let split = (
        ticks(11) as f64 / TICKS_PER_SEC,
        ticks(12) as f64 / TICKS_PER_SEC,
    );
    split
}

/// A counter of `/proc/<pid>/io` (`syscw`: write-like system calls so far).
#[must_use]
pub fn io_counter(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)?
                    .strip_prefix(": ")?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// `RLIMIT_NOFILE` of `pid`, (soft, hard), from `/proc/<pid>/limits` (`u64::MAX`: unlimited);
/// (0, 0) if it cannot be read.
#[must_use]
pub fn nofile_limits(pid: u32) -> (u64, u64) {
    let limits = i32::try_from(pid)
        .ok()
        .and_then(|pid| rlimit::ProcLimits::read_process(pid).ok())
        .and_then(|l| l.max_open_files);
    limits.map_or((0, 0), |l| {
        (
            l.soft_limit.unwrap_or(u64::MAX),
            l.hard_limit.unwrap_or(u64::MAX),
        )
    })
}

pub use ssehub_test_support::status_kib;
