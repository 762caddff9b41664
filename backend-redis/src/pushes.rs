//! The subscriber connection's pushes (pub/sub messages, disconnection), handed from redis'
//! connection task to the subscriber actor through a bounded queue.
//!
//! redis calls its push sender synchronously and must never wait, so a full queue cannot push
//! back. Instead the sender keeps one slot for an [`Push::Overflow`] marker: the first push that
//! finds the queue full is dropped, the marker is queued after every push accepted before it,
//! and every later push is dropped too. The actor delivers what was queued, reads the marker,
//! and replaces the connection; the reconnect fills every topic from its stream, so the dropped
//! messages are not lost.

use std::sync::Mutex;

use redis::PushInfo;
use redis::aio::{AsyncPushSender, SendError};
use ssehub_core::backend::lock;
use tokio::sync::mpsc;

/// One item of the queue.
#[derive(Debug)]
pub(crate) enum Push {
    /// A push from the server (or redis' disconnection notice).
    Info(PushInfo),
    /// The queue was full: pushes after the ones queued before this were dropped.
    Overflow,
}

/// The sender given to redis as the connection's push sender.
pub(crate) struct PushSender {
    state: Mutex<State>,
}

struct State {
    tx: mpsc::Sender<Push>,
    overflowed: bool,
}

/// A queue of at most `bound` pushes (at least 1), plus its overflow marker.
pub(crate) fn channel(bound: usize) -> (PushSender, mpsc::Receiver<Push>) {
    let (tx, rx) = mpsc::channel(bound.max(1).saturating_add(1));
    let state = State {
        tx,
        overflowed: false,
    };
    (
        PushSender {
            state: Mutex::new(state),
        },
        rx,
    )
}

impl AsyncPushSender for PushSender {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        // The lock makes "is there room beyond the marker's slot" and the send one step; only
        // the receiver frees slots meanwhile, which never invalidates the check.
        let mut state = lock(&self.state);
        if state.overflowed {
            return Err(SendError);
        }
        if state.tx.capacity() > 1 {
            return state.tx.try_send(Push::Info(info)).map_err(|_| SendError);
        }
        state.overflowed = true;
        let _ = state.tx.try_send(Push::Overflow);
        Err(SendError)
    }
}

#[cfg(test)]
mod tests {
    use redis::{PushKind, Value};

    use super::*;

    fn message(n: i64) -> PushInfo {
        PushInfo {
            kind: PushKind::Message,
            data: vec![Value::Int(n)],
        }
    }

    fn number(push: Option<Push>) -> Option<i64> {
        match push {
            Some(Push::Info(PushInfo { data, .. })) => match data.first() {
                Some(Value::Int(n)) => Some(*n),
                _ => None,
            },
            _ => None,
        }
    }

    #[test]
    fn a_full_queue_ends_with_the_marker_and_refuses_the_rest() {
        let (tx, mut rx) = channel(2);
        assert!(tx.send(message(1)).is_ok());
        assert!(tx.send(message(2)).is_ok());
        assert!(tx.send(message(3)).is_err());
        // Room again, but the sequence already has a hole: everything after it is refused.
        assert_eq!(number(rx.try_recv().ok()), Some(1));
        assert!(tx.send(message(4)).is_err());
        let gone = PushInfo {
            kind: PushKind::Disconnection,
            data: Vec::new(),
        };
        assert!(tx.send(gone).is_err());
        assert_eq!(number(rx.try_recv().ok()), Some(2));
        assert!(matches!(rx.try_recv(), Ok(Push::Overflow)));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_queue_read_in_time_never_overflows() {
        let (tx, mut rx) = channel(1);
        for n in 0..100 {
            assert!(tx.send(message(n)).is_ok());
            assert_eq!(number(rx.try_recv().ok()), Some(n));
        }
    }
}
