//! The pumps: a few tasks per hub (one per runtime worker) that poll every channel's broker
//! subscription (its [`Feed`]) and time the linger of idle channels, so a channel costs no task
//! and no timer of its own.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{ChannelInner, HubShared, Ready};
use crate::broker::{Broker, Delivery, Subscription};
use crate::error::Result;
use crate::session::CloseReason;
use crate::transport::ResetReason;

/// What a pump is told.
pub(super) enum Command {
    /// Poll this new channel's feed.
    Open(Feed),
    /// The channel became idle (the `idle_since` count it reached): remove it after the linger
    /// unless it has been joined since.
    Idle(Arc<ChannelInner>, u64),
}

/// Start a pump on the current runtime; returns its command queue.
pub(super) fn spawn_pump(hub: &Arc<HubShared>) -> mpsc::UnboundedSender<Command> {
    let (tx, commands) = mpsc::unbounded_channel();
    tokio::spawn(Pump {
        hub: Arc::downgrade(hub),
        commands,
        feeds: FuturesUnordered::new(),
        lingering: VecDeque::new(),
        linger: hub.config.linger,
        timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        armed: None,
    });
    tx
}

/// Deliveries one feed hands out per poll before it lets the pump's other feeds go.
const FEED_BUDGET: usize = 64;

/// One task that polls the feeds of many channels and times their lingers. It ends when the
/// hub is gone (its command queue closes), dropping every feed left.
struct Pump {
    hub: Weak<HubShared>,
    commands: mpsc::UnboundedReceiver<Command>,
    feeds: FuturesUnordered<Feed>,
    /// Idle channels in the order their lingers end (every channel lingers the same time).
    lingering: VecDeque<(Instant, Arc<ChannelInner>, u64)>,
    linger: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The deadline `timer` is set to.
    armed: Option<Instant>,
}

impl Future for Pump {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            while let Poll::Ready(command) = this.commands.poll_recv(cx) {
                match command {
                    Some(Command::Open(feed)) => this.feeds.push(feed),
                    Some(Command::Idle(channel, since)) => {
                        let at = crate::session::after(this.linger);
                        this.lingering.push_back((at, channel, since));
                    }
                    None => return Poll::Ready(()),
                }
            }
            let now = Instant::now();
            while let Some((at, ..)) = this.lingering.front()
                && *at <= now
            {
                let Some((_, channel, since)) = this.lingering.pop_front() else {
                    break;
                };
                if channel.idle_since.load(Ordering::Acquire) == since
                    && let Some(hub) = this.hub.upgrade()
                {
                    hub.remove_if_idle(&channel);
                }
            }
            if let Some(&(at, ..)) = this.lingering.front() {
                if this.armed != Some(at) {
                    this.timer.as_mut().reset(at);
                    this.armed = Some(at);
                }
                if this.timer.as_mut().poll(cx).is_ready() {
                    continue;
                }
            }
            match this.feeds.poll_next_unpin(cx) {
                Poll::Ready(Some(())) => {}
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A channel's broker subscription as its pump polls it: subscribing, then handing every
/// delivery to the channel's sessions. It ends when the channel is removed or the subscription
/// fails or ends.
pub(super) struct Feed {
    pub(super) channel: Arc<ChannelInner>,
    state: FeedState,
}

enum FeedState {
    Subscribing(Pin<Box<dyn Future<Output = Result<Subscription>> + Send>>),
    Live(Subscription),
}

impl Feed {
    pub(super) fn new(channel: Arc<ChannelInner>, broker: Arc<dyn Broker>) -> Self {
        let topic = channel.topic.clone();
        Feed {
            channel,
            state: FeedState::Subscribing(Box::pin(async move { broker.subscribe(&topic).await })),
        }
    }
}

impl Future for Feed {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let channel = &this.channel;
        channel.feed.register(cx.waker());
        loop {
            if channel.is_removed() {
                return Poll::Ready(());
            }
            match &mut this.state {
                FeedState::Subscribing(subscribing) => match subscribing.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(sub)) => {
                        this.state = FeedState::Live(sub);
                        channel.set_ready(Ready::Live);
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::warn!(topic = %channel.topic, error = %e, "broker subscription failed");
                        if let Some(hub) = channel.hub.upgrade() {
                            hub.remove(channel);
                        }
                        channel.set_ready(Ready::Failed(Arc::new(e)));
                        return Poll::Ready(());
                    }
                },
                FeedState::Live(sub) => {
                    for _ in 0..FEED_BUDGET {
                        match sub.as_mut().poll_next(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Some(Delivery::Event(env))) => channel.deliver(&env),
                            Poll::Ready(Some(Delivery::Gap)) => {
                                channel.deliver_reset(ResetReason::BrokerGap);
                            }
                            Poll::Ready(None) => {
                                tracing::warn!(topic = %channel.topic, "broker subscription ended");
                                if let Some(hub) = channel.hub.upgrade() {
                                    hub.remove(channel);
                                }
                                channel.close_all(CloseReason::BrokerLost);
                                return Poll::Ready(());
                            }
                        }
                        if channel.is_removed() {
                            return Poll::Ready(());
                        }
                    }
                    // Many deliveries at once: let the pump's other feeds go first.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
    }
}
