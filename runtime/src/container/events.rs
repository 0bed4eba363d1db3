//! GetContainerEvents: every container's lifecycle — created, started, stopped, deleted — sent
//! to each subscriber with its pod's status and its pod's container statuses after the event,
//! as the kubelet's Evented PLEG reads them. Each subscriber has a bounded buffer; one that does
//! not keep up is dropped with a log line (its stream ends and the kubelet relists), so a
//! container operation never waits for a reader. Exits found at recovery wait for the first
//! subscriber: its kubelet missed them while lockstepd was down.

use std::sync::Mutex;

use lockstep_cri::model;
use tokio::sync::mpsc;

/// Events buffered per subscriber before it counts as not keeping up.
pub const BUFFER: usize = 1024;

#[derive(Default)]
pub struct Events {
    subscribers: Mutex<Vec<mpsc::Sender<model::ContainerEventResponse>>>,
    /// Events from before any subscriber (exits found at recovery), for the first one.
    backlog: Mutex<Vec<model::ContainerEventResponse>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Events {
    /// A new subscriber's stream of events; the first one also gets the backlog.
    pub fn subscribe(&self) -> mpsc::Receiver<model::ContainerEventResponse> {
        let (sender, receiver) = mpsc::channel(BUFFER);
        for event in std::mem::take(&mut *lock(&self.backlog)).into_iter().take(BUFFER) {
            let _ = sender.try_send(event);
        }
        lock(&self.subscribers).push(sender);
        receiver
    }

    /// Whether anyone listens (subscribers that went away are forgotten here).
    pub fn has_subscribers(&self) -> bool {
        let mut subscribers = lock(&self.subscribers);
        subscribers.retain(|s| !s.is_closed());
        !subscribers.is_empty()
    }

    /// Sends `event` to every subscriber without waiting: a full buffer drops that subscriber.
    pub fn publish(&self, event: model::ContainerEventResponse) {
        lock(&self.subscribers).retain(|subscriber| match subscriber.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    buffered = BUFFER,
                    "a GetContainerEvents subscriber does not keep up: its stream is ended (the kubelet relists)"
                );
                false
            }
        });
    }

    /// Keeps `event` for the first subscriber (at most `BUFFER` are kept).
    pub fn remember(&self, event: model::ContainerEventResponse) {
        let mut backlog = lock(&self.backlog);
        if backlog.len() < BUFFER {
            backlog.push(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, kind: model::ContainerEventType) -> model::ContainerEventResponse {
        model::ContainerEventResponse {
            container_id: id.into(),
            container_event_type: kind as i32,
            ..Default::default()
        }
    }

    #[test]
    fn every_subscriber_gets_every_event_in_order_and_the_first_gets_the_backlog() {
        let events = Events::default();
        events.remember(event("lost", model::ContainerEventType::ContainerStoppedEvent));
        let mut first = events.subscribe();
        let mut second = events.subscribe();
        events.publish(event("c1", model::ContainerEventType::ContainerCreatedEvent));
        events.publish(event("c1", model::ContainerEventType::ContainerStartedEvent));
        let ids = |rx: &mut mpsc::Receiver<model::ContainerEventResponse>| {
            std::iter::from_fn(|| rx.try_recv().ok())
                .map(|e| (e.container_id, e.container_event_type))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&mut first), vec![("lost".into(), 2), ("c1".into(), 0), ("c1".into(), 1)]);
        assert_eq!(ids(&mut second), vec![("c1".into(), 0), ("c1".into(), 1)]);
    }

    #[test]
    fn a_subscriber_that_does_not_read_is_dropped_without_blocking_and_one_gone_is_forgotten() {
        let events = Events::default();
        let stalled = events.subscribe();
        let mut reading = events.subscribe();
        for _ in 0..BUFFER + 1 {
            events.publish(event("c1", model::ContainerEventType::ContainerCreatedEvent));
            while reading.try_recv().is_ok() {}
        }
        assert_eq!(lock(&events.subscribers).len(), 1, "the stalled subscriber was dropped");
        drop(stalled);
        drop(reading);
        assert!(!events.has_subscribers());
    }
}
