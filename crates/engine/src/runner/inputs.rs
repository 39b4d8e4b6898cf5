//! The inputs of an operator task: bounded channels polled in turn, any of which can be
//! parked. Barrier alignment parks an input that delivered the barrier: it is not polled
//! until the barrier has come on every input, so its channel fills and its upstream waits
//! (backpressure) instead of the task buffering what it sends meanwhile.

use std::future::poll_fn;
use std::task::{Context, Poll};

use tokio::sync::mpsc::Receiver;

use crate::message::Message;

/// What [`InputSet::next`] yields: an input's number and its next message, or `None` once,
/// when that input's channel closed.
pub(super) type Tagged = (usize, Option<Message>);

/// The input channels of one task.
///
/// Contract: messages of one input come in the order they were sent; inputs are served in
/// turn (after a message of input `i`, polling starts at `i + 1`), so a busy input cannot
/// starve the others. A parked input is not polled at all. `next` is cancel-safe (a message
/// is never lost when its future is dropped), so it can be raced against a timer.
pub(super) struct InputSet {
    /// `None` once the channel closed and that was reported.
    inputs: Vec<Option<Receiver<Message>>>,
    parked: Vec<bool>,
    /// Where the next poll starts.
    start: usize,
}

impl InputSet {
    pub(super) fn new(inputs: Vec<Receiver<Message>>) -> Self {
        let n = inputs.len();
        InputSet {
            inputs: inputs.into_iter().map(Some).collect(),
            parked: vec![false; n],
            start: 0,
        }
    }

    /// Stops polling input `i` until [`InputSet::unpark_all`].
    pub(super) fn park(&mut self, i: usize) {
        self.parked[i] = true;
    }

    /// Polls every input again.
    pub(super) fn unpark_all(&mut self) {
        self.parked.iter_mut().for_each(|p| *p = false);
    }

    /// Whether input `i` is parked.
    #[cfg(test)]
    pub(super) fn is_parked(&self, i: usize) -> bool {
        self.parked[i]
    }

    /// The next message of an input that is not parked; waits while there is none (also
    /// while every open input is parked: the caller must unpark before that can happen).
    /// `None` when every channel has closed.
    pub(super) async fn next(&mut self) -> Option<Tagged> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Tagged>> {
        let n = self.inputs.len();
        let mut open = false;
        for k in 0..n {
            let i = (self.start + k) % n;
            let Some(rx) = self.inputs[i].as_mut() else {
                continue;
            };
            open = true;
            if self.parked[i] {
                continue;
            }
            match rx.poll_recv(cx) {
                Poll::Ready(Some(m)) => {
                    self.start = (i + 1) % n;
                    return Poll::Ready(Some((i, Some(m))));
                }
                Poll::Ready(None) => {
                    self.inputs[i] = None;
                    return Poll::Ready(Some((i, None)));
                }
                Poll::Pending => {}
            }
        }
        if open {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{CheckpointBarrier, Watermark};
    use std::time::Duration;
    use tokio::sync::mpsc::channel;

    fn mark(t: i64) -> Message {
        Message::Watermark(Watermark::EventTime(t))
    }

    fn time_of(m: &Message) -> i64 {
        match m {
            Message::Watermark(Watermark::EventTime(t)) => *t,
            other => panic!("not a watermark: {other:?}"),
        }
    }

    #[tokio::test]
    async fn inputs_take_turns_and_closed_channels_are_reported_once() {
        let (a, ra) = channel(8);
        let (b, rb) = channel(8);
        for t in 0..3 {
            a.send(mark(t)).await.unwrap();
            b.send(mark(10 + t)).await.unwrap();
        }
        drop(a);
        let mut set = InputSet::new(vec![ra, rb]);
        let mut seen = Vec::new();
        for _ in 0..7 {
            let (i, m) = set.next().await.unwrap();
            seen.push((i, m.as_ref().map(time_of)));
        }
        assert_eq!(
            seen,
            vec![
                (0, Some(0)),
                (1, Some(10)),
                (0, Some(1)),
                (1, Some(11)),
                (0, Some(2)),
                (1, Some(12)),
                (0, None),
            ]
        );
        drop(b);
        assert_eq!(
            set.next().await.map(|(i, m)| (i, m.is_none())),
            Some((1, true))
        );
        assert!(set.next().await.is_none(), "every channel closed");
    }

    #[tokio::test]
    async fn a_parked_input_is_not_polled_so_its_sender_waits() {
        let (a, ra) = channel(2);
        let (b, rb) = channel(2);
        let barrier = CheckpointBarrier {
            id: 1,
            started_at_ms: 0,
            base: None,
        };
        a.send(Message::Barrier(barrier)).await.unwrap();
        let mut set = InputSet::new(vec![ra, rb]);
        let (i, _) = set.next().await.unwrap();
        assert_eq!(i, 0);
        set.park(0);
        // The parked input's channel fills: its third message waits for room.
        a.send(mark(1)).await.unwrap();
        a.send(mark(2)).await.unwrap();
        let blocked = tokio::time::timeout(Duration::from_millis(50), a.send(mark(3))).await;
        assert!(blocked.is_err(), "the sender of a parked input waits");
        // Nothing comes from the parked input, only from the other one.
        b.send(mark(7)).await.unwrap();
        let (i, m) = set.next().await.unwrap();
        assert_eq!((i, time_of(&m.unwrap())), (1, 7));
        let waiting = tokio::time::timeout(Duration::from_millis(50), set.next()).await;
        assert!(
            waiting.is_err(),
            "the parked input's messages stay in its channel"
        );
        assert!(set.is_parked(0));
        set.unpark_all();
        let (i, m) = set.next().await.unwrap();
        assert_eq!((i, time_of(&m.unwrap())), (0, 1), "in order, none lost");
    }
}
