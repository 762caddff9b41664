//! The checker: every subscriber's history against the acknowledged publishes.
//!
//! An event is told apart by its `(commentCount, timestamp)`: the count alone repeats when the
//! demo's counter is lost with the broker (Redis without persistence, the memory node), the
//! timestamp (the first request's time, answered again to every retry of its key) does not.
//! Each channel has one publisher, which starts a publish only after the previous one's `200`,
//! so its acknowledgements are in the order the broker stored the events.
//!
//! Per subscriber and channel (initial events, which carry no id, only count for liveness):
//! 1. no event twice, unless a `reset` for the channel sits between the two;
//! 2. the order of the acknowledged events, and (where the counter is never lost) strictly
//!    increasing counts, between resets;
//! 3. every acknowledged event between the first and the last the subscriber got is there,
//!    unless a `reset` sits between its delivered neighbours;
//! 4. no `reset` at all where the schedule loses nothing;
//! 5. after the last fault, every subscriber has every channel's last acknowledged event (or a
//!    reset followed by an initial event at that count) within [`LIVE_BOUND`] of the end.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use super::clients::{Ack, Entry};
use super::schedule::Schedule;

/// How long after the publishers stopped every subscriber must have caught up.
pub(crate) const LIVE_BOUND: Duration = Duration::from_secs(30);

/// Whether `history` shows channel `channel` caught up with `last`: the event itself, or a
/// reset followed by an initial event at (or past) its count.
pub(crate) fn caught_up(history: &[Entry], channel: usize, last: Option<&Ack>) -> bool {
    let Some(last) = last else { return true };
    let mut after_reset = false;
    for e in history {
        match e {
            Entry::Event {
                channel: c,
                count,
                timestamp,
                has_id,
                ..
            } if *c == channel => {
                if *has_id && *count == last.count && *timestamp == last.timestamp {
                    return true;
                }
                if !*has_id && after_reset && *count >= last.count {
                    return true;
                }
            }
            Entry::Reset { channel: c, .. } if c.is_none_or(|c| c == channel) => {
                after_reset = true;
            }
            _ => {}
        }
    }
    false
}

/// Where history line `pos` came: its time and the connection it came on.
fn where_in(history: &[Entry], pos: usize, t0: Instant) -> String {
    let at = match &history[pos] {
        Entry::Event { at, .. } | Entry::Reset { at, .. } => *at,
        _ => t0,
    };
    let connection = history[..pos].iter().rev().find_map(|e| match e {
        Entry::Connect { at, node, resumed } => Some((*at, *node, *resumed)),
        _ => None,
    });
    let since = |i: Instant| i.saturating_duration_since(t0).as_secs_f64();
    match connection {
        Some((c, node, resumed)) => format!(
            "{:.2} s on node {node} (a stream opened at {:.2} s{})",
            since(at),
            since(c),
            if resumed { ", resumed" } else { "" }
        ),
        None => format!("{:.2} s", since(at)),
    }
}

/// One subscriber's history and what it was asked to read.
pub(crate) struct Subscriber<'a> {
    pub(crate) channels: &'a [usize],
    pub(crate) history: &'a [Entry],
    /// When it had caught up with every channel's last acknowledged event.
    pub(crate) caught_up: Option<Instant>,
}

/// Acknowledged events a subscriber missed silently, and the id of the event before them.
#[derive(Debug)]
pub(crate) struct Gap {
    pub(crate) subscriber: usize,
    pub(crate) channel: usize,
    pub(crate) after: String,
    pub(crate) missing: Vec<u64>,
}

/// What one schedule showed.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) violations: Vec<String>,
    /// Where events went missing (for a diagnosis by replay).
    pub(crate) gaps: Vec<Gap>,
    pub(crate) acked: usize,
    pub(crate) deliveries: usize,
    /// Delivered events no `200` acknowledged (a key given up on, or a reply lost for good).
    pub(crate) unacked_deliveries: usize,
    /// An event delivered again after a reset (allowed).
    pub(crate) redelivered_after_reset: usize,
    pub(crate) resets: BTreeMap<String, usize>,
    pub(crate) needless_resets: usize,
    pub(crate) reconnects: usize,
    /// Connection attempts that got no stream, by status (0: no response).
    pub(crate) refused: BTreeMap<u16, usize>,
    /// Streams that ended, by why (`planned`, `closed`, `error`, `silent`).
    pub(crate) ended: BTreeMap<&'static str, usize>,
    /// The longest one logical publish took, first attempt to `200`, and its attempts.
    pub(crate) longest_publish: (Duration, u32),
    /// The longest time a channel went without an acknowledged publish.
    pub(crate) longest_outage: Duration,
    /// Per subscriber: from the last fault's end until every channel of it delivered an event
    /// acknowledged after that end (or an initial event after it).
    pub(crate) recovery: Vec<Duration>,
    /// Per subscriber: from the publishers' stop until it had every last event.
    pub(crate) catch_up: Vec<Duration>,
}

/// Check one schedule.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check(
    schedule: &Schedule,
    acks: &[Vec<Ack>],
    subscribers: &[Subscriber<'_>],
    t0: Instant,
    last_heal: Instant,
    stopped: Instant,
) -> Report {
    let lossy = schedule.lossy();
    let mut r = Report {
        acked: acks.iter().map(Vec::len).sum(),
        ..Report::default()
    };
    for channel in acks {
        let mut prev = t0;
        for ack in channel {
            r.longest_outage = r.longest_outage.max(ack.at.saturating_duration_since(prev));
            let took = ack.at.saturating_duration_since(ack.started);
            if took > r.longest_publish.0 {
                r.longest_publish = (took, ack.attempts);
            }
            prev = ack.at;
        }
    }
    for (s, sub) in subscribers.iter().enumerate() {
        let mut recovered = Duration::ZERO;
        let mut recovered_all = true;
        for e in sub.history {
            match e {
                Entry::Connect { resumed: true, .. } => r.reconnects += 1,
                Entry::Refused { status, .. } => *r.refused.entry(*status).or_default() += 1,
                Entry::Ended { why } => *r.ended.entry(why).or_default() += 1,
                Entry::Strange { what } => r.violations.push(format!("subscriber {s}: {what}")),
                _ => {}
            }
        }
        for &channel in sub.channels {
            let acks = &acks[channel];
            let index: HashMap<(u64, u64), usize> = acks
                .iter()
                .enumerate()
                .map(|(i, a)| ((a.count, a.timestamp), i))
                .collect();
            let tag = format!("subscriber {s} channel {channel}");
            // (history position, ack index) of the first delivery of each acknowledged event.
            let mut delivered: BTreeMap<usize, usize> = BTreeMap::new();
            let mut reset_positions = Vec::new();
            // Ack index → the id it came with (to replay from, in a diagnosis).
            let mut ids: HashMap<usize, String> = HashMap::new();
            // Identity → (position of the last delivery, resets seen when it came).
            let mut seen: HashMap<(u64, u64), usize> = HashMap::new();
            let mut resets = 0usize;
            let mut previous: Option<(u64, Option<usize>)> = None;
            let mut node = 0;
            let mut since = t0;
            for (pos, e) in sub.history.iter().enumerate() {
                let when = |at: &Instant| {
                    format!(
                        "history #{pos}, {:.2} s, node {node} (connected at {:.2} s)",
                        at.saturating_duration_since(t0).as_secs_f64(),
                        since.saturating_duration_since(t0).as_secs_f64()
                    )
                };
                match e {
                    Entry::Connect { at, node: n, .. } => {
                        node = *n;
                        since = *at;
                    }
                    Entry::Reset {
                        channel: c,
                        reason,
                        at,
                    } if c.is_none_or(|c| c == channel) => {
                        resets += 1;
                        reset_positions.push(pos);
                        previous = None;
                        *r.resets.entry(reason.clone()).or_default() += 1;
                        if !lossy {
                            r.needless_resets += 1;
                            r.violations.push(format!(
                                "{tag}: needless reset ({reason}) at {}: this schedule loses nothing",
                                when(at)
                            ));
                        }
                    }
                    Entry::Event {
                        channel: c,
                        count,
                        timestamp,
                        has_id: true,
                        at,
                        id,
                    } if *c == channel => {
                        r.deliveries += 1;
                        let identity = (*count, *timestamp);
                        let ack = index.get(&identity).copied();
                        if ack.is_none() {
                            r.unacked_deliveries += 1;
                        }
                        if let Some(earlier) = seen.insert(identity, resets) {
                            if earlier == resets {
                                r.violations.push(format!(
                                    "{tag}: duplicate: count {count} (ts {timestamp}) delivered again at {} with no reset since",
                                    when(at)
                                ));
                            } else {
                                r.redelivered_after_reset += 1;
                            }
                        }
                        if let Some((prev_count, prev_ack)) = previous {
                            if let (Some(p), Some(a)) = (prev_ack, ack)
                                && a <= p
                            {
                                r.violations.push(format!(
                                    "{tag}: order: count {count} (acknowledged #{a}) after count {prev_count} (acknowledged #{p}) at {}",
                                    when(at)
                                ));
                            } else if !lossy && *count <= prev_count {
                                r.violations.push(format!(
                                    "{tag}: order: count {count} after count {prev_count} at {}",
                                    when(at)
                                ));
                            }
                        }
                        previous = Some((*count, ack));
                        if let Some(a) = ack {
                            delivered.entry(pos).or_insert(a);
                            ids.entry(a)
                                .or_insert_with(|| id.clone().unwrap_or_default());
                        }
                    }
                    _ => {}
                }
            }
            // Rule 3: every acknowledged event between the first and the last delivered.
            let mut by_ack: BTreeMap<usize, usize> = BTreeMap::new();
            for (pos, a) in &delivered {
                by_ack.entry(*a).or_insert(*pos);
            }
            if let Some((&first, _)) = by_ack.first_key_value() {
                let mut missing = Vec::new();
                for i in first..acks.len() {
                    if by_ack.contains_key(&i) {
                        continue;
                    }
                    let before = by_ack.range(..i).next_back().map(|(_, p)| *p);
                    let after = by_ack.range(i..).next().map(|(_, p)| *p);
                    let lo = before.unwrap_or(0);
                    let hi = after.unwrap_or(usize::MAX);
                    // Past the last delivered, `hi` is the end: a reset after the last
                    // delivered event covers the tail (rule 5 wants the initial event after it).
                    if !reset_positions.iter().any(|p| *p > lo && *p < hi) {
                        missing.push(i);
                    }
                }
                if let Some(&i) = missing.first()
                    && let Some((_, before)) = by_ack.range(..i).next_back()
                    && let Some(a) = delivered.get(before)
                {
                    r.gaps.push(Gap {
                        subscriber: s,
                        channel,
                        after: ids.get(a).cloned().unwrap_or_default(),
                        missing: missing.iter().map(|i| acks[*i].count).collect(),
                    });
                }
                if !missing.is_empty() {
                    let shown: Vec<String> = missing
                        .iter()
                        .take(12)
                        .map(|i| {
                            format!(
                                "#{i} (count {}, acknowledged at {:.2} s)",
                                acks[*i].count,
                                acks[*i].at.saturating_duration_since(t0).as_secs_f64()
                            )
                        })
                        .collect();
                    // Where the first missing one should have come: its delivered neighbours.
                    let first_missing = missing[0];
                    let around = [
                        by_ack.range(..first_missing).next_back(),
                        by_ack.range(first_missing..).next(),
                    ]
                    .map(|n| match n {
                        Some((a, pos)) => format!(
                            "count {} at {}",
                            acks[*a].count,
                            where_in(sub.history, *pos, t0)
                        ),
                        None => "nothing".to_owned(),
                    });
                    r.violations.push(format!(
                        "{tag}: {} acknowledged events missing with no reset between their neighbours: {}{}; the first one's neighbours: {} / {}",
                        missing.len(),
                        shown.join(", "),
                        if missing.len() > 12 { ", …" } else { "" },
                        around[0],
                        around[1]
                    ));
                }
            } else if !acks.is_empty() && !caught_up(sub.history, channel, acks.last()) {
                r.violations.push(format!(
                    "{tag}: none of the {} acknowledged events delivered",
                    acks.len()
                ));
            }
            // Recovery: the first sign of life after the last fault.
            let first_after = acks.iter().position(|a| a.at > last_heal);
            let live_at = sub.history.iter().find_map(|e| match e {
                Entry::Event {
                    at,
                    channel: c,
                    count,
                    timestamp,
                    has_id,
                    ..
                } if *c == channel && *at > last_heal => {
                    let acked_after = index
                        .get(&(*count, *timestamp))
                        .zip(first_after)
                        .is_some_and(|(i, f)| *i >= f);
                    (acked_after || !*has_id).then_some(*at)
                }
                _ => None,
            });
            match live_at {
                Some(at) => recovered = recovered.max(at - last_heal),
                None if first_after.is_some() => recovered_all = false,
                None => {}
            }
        }
        if recovered_all {
            r.recovery.push(recovered);
        }
        match sub.caught_up {
            Some(at) => r.catch_up.push(at.saturating_duration_since(stopped)),
            None => r.violations.push(format!(
                "subscriber {s}: not live: it did not get the last acknowledged event of each of its channels {:?} within {LIVE_BOUND:?} after the publishers stopped",
                sub.channels
            )),
        }
    }
    r
}

/// The checker itself, on made-up histories: it must see each kind of violation.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Backend;

    fn ack(count: u64, t0: Instant) -> Ack {
        Ack {
            count,
            timestamp: 1000 + count,
            started: t0,
            at: t0 + Duration::from_millis(count),
            attempts: 1,
        }
    }

    fn event(count: u64, has_id: bool, t0: Instant) -> Entry {
        Entry::Event {
            at: t0 + Duration::from_millis(count),
            channel: 0,
            count,
            timestamp: if has_id { 1000 + count } else { 5 },
            has_id,
            id: has_id.then(|| count.to_string()),
        }
    }

    fn reset(t0: Instant) -> Entry {
        Entry::Reset {
            at: t0,
            channel: Some(0),
            reason: "broker-gap".to_owned(),
        }
    }

    /// The violations of one subscriber of channel 0 with `history`, events 1 to 5
    /// acknowledged, on a schedule that loses nothing or (`lossy`) one that may.
    fn violations(history: Vec<Entry>, lossy: bool) -> Vec<String> {
        let t0 = Instant::now();
        let history: Vec<Entry> = history
            .into_iter()
            .map(|e| match e {
                Entry::Event {
                    channel,
                    count,
                    timestamp,
                    has_id,
                    id,
                    ..
                } => Entry::Event {
                    at: t0,
                    channel,
                    count,
                    timestamp,
                    has_id,
                    id,
                },
                e => e,
            })
            .collect();
        let backend = if lossy {
            Backend::Memory
        } else {
            Backend::Redis
        };
        let schedule = (0..)
            .map(|seed| Schedule::new(seed, backend))
            .find(|s| s.lossy() == lossy)
            .unwrap();
        let acks = vec![(1..=5).map(|c| ack(c, t0)).collect::<Vec<_>>()];
        let channels = [0];
        let caught = caught_up(&history, 0, acks[0].last()).then_some(t0);
        let subs = [Subscriber {
            channels: &channels,
            history: &history,
            caught_up: caught,
        }];
        check(&schedule, &acks, &subs, t0, t0, t0).violations
    }

    #[test]
    fn a_clean_history_passes() {
        let t = Instant::now();
        let h = vec![event(0, false, t), event(1, true, t), event(2, true, t)];
        let h = [
            h,
            vec![event(3, true, t), event(4, true, t), event(5, true, t)],
        ]
        .concat();
        assert_eq!(violations(h, false), Vec::<String>::new());
    }

    #[test]
    fn each_violation_is_seen() {
        let t = Instant::now();
        let all = |v: &[u64]| v.iter().map(|c| event(*c, true, t)).collect::<Vec<_>>();
        let dup = violations(all(&[1, 2, 2, 3, 4, 5]), false);
        assert!(dup[0].contains("duplicate"), "{dup:?}");
        let order = violations(all(&[1, 3, 2, 4, 5]), false);
        assert!(order[0].contains("order"), "{order:?}");
        let missing = violations(all(&[1, 2, 4, 5]), false);
        assert!(
            missing[0].contains("1 acknowledged events missing"),
            "{missing:?}"
        );
        let not_live = violations(all(&[1, 2, 3, 4]), false);
        assert!(
            not_live.iter().any(|v| v.contains("not live")),
            "{not_live:?}"
        );
        let needless = [
            all(&[1, 2]),
            vec![reset(t), event(2, false, t)],
            all(&[3, 4, 5]),
        ];
        let needless = violations(needless.concat(), false);
        assert_eq!(needless.len(), 1, "{needless:?}");
        assert!(needless[0].contains("needless reset"), "{needless:?}");
    }

    #[test]
    fn a_reset_covers_what_is_missing_where_loss_is_possible() {
        let t = Instant::now();
        let h = vec![
            event(1, true, t),
            event(2, true, t),
            reset(t),
            event(4, false, t),
            event(5, true, t),
        ];
        assert_eq!(violations(h, true), Vec::<String>::new());
        // The reset must sit where the event is missing.
        let h = vec![
            event(1, true, t),
            reset(t),
            event(2, false, t),
            event(2, true, t),
            event(4, true, t),
            event(5, true, t),
        ];
        let v = violations(h, true);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("missing"), "{v:?}");
        // Nothing delivered after the last reset: its initial event at the last count is live.
        let h = vec![event(1, true, t), reset(t), event(5, false, t)];
        assert_eq!(violations(h, true), Vec::<String>::new());
    }
}
