//! The last [`CAPACITY`] things that happened to the live state, for the dashboard: switches,
//! reloads (applied and refused, with the error), canary and mirror changes, shared state applied
//! from the cluster, health transitions, rollout steps and certificates loaded or issued.
//!
//! One [`Events`] lives in the live state (`State::events`); whoever makes the change records
//! it. Recording takes a short mutex (never on the request path) and wakes the subscribers
//! (the dashboard's `/events` streams) through a watch channel.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

/// How many events are kept: the oldest goes when a new one comes.
pub const CAPACITY: usize = 50;

/// What kind of thing happened (the `kind` of the JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The active pool changed through this instance.
    Switch,
    /// A config reload was applied.
    Reload,
    /// A config reload was refused; the running config was kept.
    ReloadRefused,
    /// A server's health changed.
    Health,
    /// A rollout started, stepped, passed, rolled back or was aborted.
    Rollout,
    /// A TLS certificate was loaded or issued.
    Cert,
    /// Shared state from the cluster's store was applied.
    Cluster,
    /// The canary split was set or ended.
    Canary,
    /// Mirroring was set or ended.
    Mirror,
}

/// One recorded event: `{"at": RFC 3339, "kind": ..., "text": ...}`.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// When it was recorded (RFC 3339, milliseconds, UTC).
    pub at: String,
    /// What kind of thing happened.
    pub kind: Kind,
    /// A sentence for people.
    pub text: String,
}

/// The ring of the last [`CAPACITY`] events, newest last.
#[derive(Debug)]
pub struct Events {
    ring: Mutex<VecDeque<Event>>,
    /// Counts the events recorded so far; wakes subscribers.
    recorded: tokio::sync::watch::Sender<u64>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            ring: Mutex::new(VecDeque::with_capacity(CAPACITY)),
            recorded: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Events {
    /// Records one event now, dropping the oldest beyond [`CAPACITY`].
    pub fn record(&self, kind: Kind, text: impl Into<String>) {
        let event = Event {
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            kind,
            text: text.into(),
        };
        {
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            if ring.len() >= CAPACITY {
                ring.pop_front();
            }
            ring.push_back(event);
        }
        self.recorded.send_modify(|n| *n += 1);
    }

    /// The events kept, oldest first.
    pub fn list(&self) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().cloned().collect()
    }

    /// A receiver that wakes on every recorded event.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.recorded.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ring keeps the newest [`CAPACITY`], oldest first, and wakes subscribers.
    #[test]
    fn ring_keeps_the_newest() {
        let events = Events::default();
        let rx = events.subscribe();
        for i in 0..CAPACITY + 5 {
            events.record(Kind::Switch, format!("event {i}"));
        }
        let list = events.list();
        assert_eq!(list.len(), CAPACITY);
        assert_eq!(list[0].text, "event 5");
        assert_eq!(list[CAPACITY - 1].text, format!("event {}", CAPACITY + 4));
        assert!(rx.has_changed().unwrap());
        let json = serde_json::to_value(&list[0]).unwrap();
        assert_eq!(json["kind"], "switch");
        assert!(json["at"].as_str().unwrap().ends_with('Z'));
        let refused = serde_json::to_value(Kind::ReloadRefused).unwrap();
        assert_eq!(refused, "reload_refused");
    }
}
