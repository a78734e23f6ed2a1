//! What both network backends share: the connection table (slots with
//! generations, so a stale `ConnId` is an error) and the owners that
//! connection events go to.

use super::{ConnId, NetEvent, NetEventKind, NetRequest, NewListener};
use crate::io::IoError;
use crate::io::inbox::Inbox;
use crate::io::slots::Slots;
use crate::partition::Partitioner;
use crate::worker::ResultSink;
use std::net::SocketAddr;
use std::sync::Arc;

/// Who receives a connection's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The client that connected it (its inbox slot).
    Client(u32),
    /// A listener's target (index into `Owners::targets`).
    Target(usize),
}

pub(crate) struct Listener {
    pub(crate) local: SocketAddr,
    first_target: usize,
    targets: usize,
    partitioner: Arc<dyn Partitioner>,
    accepted: u64,
}

/// Listener targets, and delivery to any owner.
pub(crate) struct Owners {
    targets: Vec<ResultSink<NetEvent>>,
    pub(crate) listeners: Vec<Listener>,
}

impl Owners {
    pub(crate) fn new() -> Self {
        Self {
            targets: Vec::new(),
            listeners: Vec::new(),
        }
    }

    /// The listener bound at `local` (its index).
    pub(crate) fn listener_at(&self, local: SocketAddr) -> Option<usize> {
        self.listeners.iter().position(|l| l.local == local)
    }

    /// Records a listener's targets; returns the listener's index and the
    /// socket.
    pub(crate) fn add_listener(&mut self, l: NewListener) -> (usize, std::net::TcpListener) {
        let local = l
            .listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let first_target = self.targets.len();
        let targets = l.targets.len();
        self.targets.extend(l.targets);
        self.listeners.push(Listener {
            local,
            first_target,
            targets,
            partitioner: l.partitioner,
            accepted: 0,
        });
        (self.listeners.len() - 1, l.listener)
    }

    /// The owner of the next connection accepted on `listener`.
    pub(crate) fn pick(&mut self, listener: usize) -> Owner {
        let l = &mut self.listeners[listener];
        let n = l.accepted;
        l.accepted += 1;
        let i = l.partitioner.partition(n, l.targets).min(l.targets - 1);
        Owner::Target(l.first_target + i)
    }

    pub(crate) fn deliver(
        &mut self,
        inbox: &mut Inbox<NetRequest, NetEvent>,
        owner: Owner,
        ev: NetEvent,
    ) {
        match owner {
            Owner::Client(c) => inbox.deliver(c, ev),
            Owner::Target(t) => {
                if let Some(s) = self.targets.get_mut(t) {
                    crate::io::error::Completion::report(&ev, &inbox.shared.stats);
                    s.deliver(ev);
                }
            }
        }
    }

    /// Events waiting for room at `owner`.
    pub(crate) fn backlog(
        &mut self,
        inbox: &mut Inbox<NetRequest, NetEvent>,
        owner: Owner,
    ) -> usize {
        match owner {
            Owner::Client(c) => inbox.sink(c).map_or(0, |s| s.backlog()),
            Owner::Target(t) => self.targets.get(t).map_or(0, ResultSink::backlog),
        }
    }

    /// Retries backlogged events; returns how many still wait.
    pub(crate) fn flush(&mut self) -> usize {
        self.targets.iter_mut().map(ResultSink::flush).sum()
    }
}

/// Connections, by [`ConnId`]; completions find theirs by slot.
pub(crate) struct Conns<S> {
    slots: Slots<S>,
}

impl<S> Conns<S> {
    pub(crate) fn new(worker: usize) -> Self {
        Self {
            slots: Slots::new(worker),
        }
    }

    pub(crate) fn insert(&mut self, conn: S) -> ConnId {
        ConnId(self.slots.insert(conn))
    }

    /// The id of the connection now in `slot`.
    pub(crate) fn id(&self, slot: u32) -> ConnId {
        ConnId(self.slots.id(slot))
    }

    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut S> {
        self.slots.get_mut(id.0)
    }

    pub(crate) fn slot_mut(&mut self, slot: u32) -> Option<&mut S> {
        self.slots.slot_mut(slot)
    }

    pub(crate) fn remove(&mut self, slot: u32) -> Option<S> {
        self.slots.remove_slot(slot)
    }

    /// Slots in use.
    pub(crate) fn slots(&self) -> Vec<u32> {
        self.slots.occupied()
    }
}

/// A connection whose reads can pause while its owner is backlogged.
pub(crate) trait Pausable {
    fn owner(&self) -> Owner;
    fn set_paused(&mut self, paused: bool);
}

/// Takes out of `paused` the connections whose owners have drained to half
/// the backlog limit (their reads resume); the rest stay paused.
pub(crate) fn resumable<S: Pausable>(
    paused: &mut Vec<u32>,
    conns: &mut Conns<S>,
    owners: &mut Owners,
    inbox: &mut Inbox<NetRequest, NetEvent>,
    max_backlog: usize,
) -> Vec<u32> {
    let mut resume = Vec::new();
    for slot in std::mem::take(paused) {
        let Some(c) = conns.slot_mut(slot) else {
            continue;
        };
        if owners.backlog(inbox, c.owner()) * 2 < max_backlog {
            if let Some(c) = conns.slot_mut(slot) {
                c.set_paused(false);
            }
            resume.push(slot);
        } else {
            paused.push(slot);
        }
    }
    resume
}

/// Delivers what waits for room, to owners and to clients; records and
/// returns how much still waits.
pub(crate) fn flush_all(owners: &mut Owners, inbox: &mut Inbox<NetRequest, NetEvent>) -> usize {
    let backlog = owners.flush() + inbox.flush();
    inbox.shared.stats.backlog.set(backlog as u64);
    backlog
}

pub(crate) fn not_open(conn: ConnId) -> IoError {
    IoError::NotOpen {
        what: "connection",
        id: conn.raw(),
    }
}

/// An event for a request on a connection that is not open (closed
/// already, or another worker's): reported to the requester.
pub(crate) fn stale(conn: ConnId) -> NetEvent {
    NetEvent {
        conn,
        kind: NetEventKind::Error(not_open(conn)),
    }
}
