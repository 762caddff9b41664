//! Keep-alive comments for every idle session of a hub, from one timer.
//!
//! A session with a keep-alive period registers here once. Writing a chunk only records the
//! time (no timer is touched per write); when a session's slot comes due, the timer task looks
//! at when it last wrote: a session quiet for the whole period gets a keep-alive comment queued
//! like any frame, a busy one is simply put back at its next possible due time. Deadlines are
//! rounded up to 1/16 of the period (at most 1 s), so sessions share slots and a keep-alive
//! comes between one period and one period plus a sixteenth after the last write.
//!
//! Per session this costs a weak reference in a slot list, instead of a boxed tokio `Sleep`
//! per session (one allocation and about 120 bytes less per idle stream).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::SessionShared;
use crate::backend::lock;

/// A keep-alive this far off never fires (a huge period is "never", not an overflow).
const NEVER: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The keep-alive timer of one hub.
pub(crate) struct KeepAlives {
    wheel: Mutex<Wheel>,
    /// Wakes the timer task: an earlier slot was added, or the hub is gone.
    changed: Notify,
}

#[derive(Default)]
struct Wheel {
    /// Slot keys are milliseconds since `origin` (set at the first registration, on the
    /// runtime's clock).
    origin: Option<Instant>,
    /// Sessions by the slot they are due in, with their periods.
    slots: BTreeMap<u64, Vec<(Weak<SessionShared>, Duration)>>,
    task: Option<JoinHandle<()>>,
    closed: bool,
}

impl Wheel {
    /// The slot of a deadline `every` after `from`, rounded up to the period's grain.
    fn slot(&mut self, from: Instant, every: Duration) -> u64 {
        let origin = *self.origin.get_or_insert(from);
        let grain = ms(every / 16).clamp(1, 1000);
        // Rounded up throughout: a slot is never before the deadline it stands for.
        let since = from
            .saturating_duration_since(origin)
            .as_nanos()
            .div_ceil(1_000_000);
        let at = u64::try_from(since).unwrap_or(u64::MAX).saturating_add(
            every
                .as_nanos()
                .div_ceil(1_000_000)
                .try_into()
                .unwrap_or(u64::MAX),
        );
        at.div_ceil(grain).saturating_mul(grain)
    }

    fn insert(&mut self, slot: u64, session: Weak<SessionShared>, every: Duration) {
        self.slots.entry(slot).or_default().push((session, every));
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl KeepAlives {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(KeepAlives {
            wheel: Mutex::new(Wheel::default()),
            changed: Notify::new(),
        })
    }

    /// Queue a keep-alive comment to `session` whenever it has written nothing for `every`.
    /// Starts the timer task on the current runtime if it is not running.
    pub(crate) fn add(self: &Arc<Self>, session: &Arc<SessionShared>, every: Duration) {
        if every.is_zero() || every >= NEVER {
            return;
        }
        let now = Instant::now();
        session.keep_alive_from(now);
        let earliest = {
            let mut wheel = lock(&self.wheel);
            if wheel.closed {
                return;
            }
            let slot = wheel.slot(now, every);
            let earliest = wheel.slots.first_key_value().is_none_or(|(k, _)| slot < *k);
            wheel.insert(slot, Arc::downgrade(session), every);
            if wheel.task.as_ref().is_none_or(JoinHandle::is_finished) {
                wheel.task = Some(tokio::spawn(run(self.clone())));
            }
            earliest
        };
        if earliest {
            self.changed.notify_one();
        }
    }

    /// Stop: the hub is gone.
    pub(crate) fn close(&self) {
        {
            let mut wheel = lock(&self.wheel);
            wheel.closed = true;
            wheel.slots.clear();
        }
        self.changed.notify_one();
    }

    /// When the first slot is due; `None` when no session waits. `Err` once closed.
    fn next_due(&self) -> Result<Option<Instant>, ()> {
        let wheel = lock(&self.wheel);
        if wheel.closed {
            return Err(());
        }
        Ok(wheel
            .slots
            .first_key_value()
            .zip(wheel.origin)
            .map(|((slot, _), origin)| origin + Duration::from_millis(*slot)))
    }

    /// Visit every session whose slot is due at `now`: queue its keep-alive if it has been
    /// quiet for its period, and put it back in the slot of its next possible due time.
    fn fire(&self, now: Instant) {
        let due = {
            let mut wheel = lock(&self.wheel);
            let Some(origin) = wheel.origin else { return };
            let later = wheel
                .slots
                .split_off(&ms(now.saturating_duration_since(origin)).saturating_add(1));
            std::mem::replace(&mut wheel.slots, later)
        };
        let mut again = Vec::new();
        for (weak, every) in due.into_values().flatten() {
            let Some(session) = weak.upgrade() else {
                continue;
            };
            if let Some(quiet_since) = session.keep_alive_due(now, every) {
                again.push((quiet_since, weak, every));
            }
        }
        if again.is_empty() {
            return;
        }
        let mut wheel = lock(&self.wheel);
        if wheel.closed {
            return;
        }
        for (quiet_since, weak, every) in again {
            let slot = wheel.slot(quiet_since, every);
            wheel.insert(slot, weak, every);
        }
    }
}

/// The timer task: sleep until the first slot, fire it; ends when the hub is gone.
async fn run(keep_alives: Arc<KeepAlives>) {
    loop {
        // Registered before the wheel is read: an earlier slot added in between still wakes it
        // (`notify_one` also keeps a permit when nobody waits).
        let changed = keep_alives.changed.notified();
        let next = match keep_alives.next_due() {
            Ok(next) => next,
            Err(()) => return,
        };
        match next {
            None => changed.await,
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => keep_alives.fire(Instant::now()),
                    () = changed => {}
                }
            }
        }
    }
}
