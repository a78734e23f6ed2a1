//! A response: [`Reply`], encoded and written to the socket (`submit`,
//! retried while the network worker's queue is full), and a failed
//! request answered and its connection closed.

use super::State;
use super::body::abort_put;
use crate::http;
use crate::serve::NodeState;
use shared_nothing::io::{ConnId, NetClient, SubmitError};

/// A response not yet encoded.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: Vec<u8>,
    /// A HEAD: the head alone, `Content-Length` as for a GET.
    pub(super) head_only: bool,
    /// `Content-Length` when it is not the body's (HEAD metadata).
    pub(super) length: Option<u64>,
}

impl Reply {
    pub(super) fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type", content_type.to_owned())],
            body: body.into(),
            head_only: false,
            length: None,
        }
    }

    pub(super) fn text(status: u16, msg: &str) -> Reply {
        Reply::new(status, "text/plain", format!("{msg}\n"))
    }

    pub(super) fn json(value: &serde_json::Value) -> Reply {
        let body = serde_json::to_string_pretty(value).unwrap_or_default();
        Reply::new(200, "application/json", body)
    }

    pub(super) fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            head_only: false,
            length: None,
        }
    }

    pub(super) fn header(mut self, name: &'static str, value: impl ToString) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }

    pub(super) fn head_only(mut self, on: bool) -> Reply {
        self.head_only = on;
        self
    }

    pub(super) fn render(self, close: bool) -> Vec<u8> {
        let length = match self.status {
            204 => None,
            _ => Some(self.length.unwrap_or(self.body.len() as u64)),
        };
        let mut out = http::response_head(self.status, &self.headers, length, close);
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// Answers `status` with `Connection: close`, drops a PUT in progress,
/// and closes.
pub(super) fn fail(st: &mut NodeState, id: ConnId, status: u16, msg: &str) {
    if let Some(c) = st.conns.get_mut(&id) {
        let state = std::mem::replace(&mut c.state, State::Idle);
        let seq = c.seq;
        abort_put(st, id, seq, &state);
    }
    fail_plain(st, id, status, msg);
}

/// As [`fail`], the PUT (if any) already dropped.
pub(super) fn fail_plain(st: &mut NodeState, id: ConnId, status: u16, msg: &str) {
    if let Some(c) = st.conns.get_mut(&id) {
        tracing::debug!(peer = %c.peer, status, "{msg}");
        c.keep_alive = false;
        c.state = State::Idle;
        c.inbuf.clear();
    }
    send(st, id, Reply::text(status, msg));
    close(st, id);
}

pub(super) fn send(st: &mut NodeState, id: ConnId, reply: Reply) {
    if reply.status >= 400 {
        st.front.http_errors.inc();
    }
    let close = st.conns.get(&id).is_none_or(|c| !c.keep_alive);
    raw_send(st, id, reply.render(close));
}

pub(super) fn raw_send(st: &mut NodeState, id: ConnId, bytes: Vec<u8>) {
    submit(st, id, bytes, None);
}

pub(super) fn tracked_send(st: &mut NodeState, id: ConnId, bytes: Vec<u8>, tag: u64) {
    submit(st, id, bytes, Some(tag));
}

/// Writes `bytes` to `id`, retried while the network worker's queue is
/// full (it is draining); dropped once the connection is gone.
fn submit(st: &mut NodeState, id: ConnId, bytes: Vec<u8>, tag: Option<u64>) {
    if st.conns.get(&id).is_none_or(|c| c.closed) {
        return;
    }
    let n = st.clients.len().max(1);
    let Some(client) = st.clients.get_mut(id.worker() % n) else {
        return;
    };
    let mut buf = bytes;
    for _ in 0..1_000_000 {
        let sent = match tag {
            Some(t) => client.send_tracked(id, buf, t),
            None => client.send(id, buf),
        };
        match sent {
            Ok(()) => return,
            Err(e) if e.is_full() => {
                buf = e.into_inner();
                std::thread::yield_now();
            }
            Err(_) => return,
        }
    }
    tracing::warn!("network worker queue stayed full; response dropped");
}

/// Asks the network worker to close `id` after its queued sends.
pub(super) fn close(st: &mut NodeState, id: ConnId) {
    match st.conns.get_mut(&id) {
        Some(c) if !c.closed => c.closed = true,
        _ => return,
    }
    net_request(st, id, NetClient::close);
}

pub(super) fn net_request(
    st: &mut NodeState,
    id: ConnId,
    request: fn(&mut NetClient, ConnId) -> Result<(), SubmitError<ConnId>>,
) {
    let n = st.clients.len().max(1);
    let Some(client) = st.clients.get_mut(id.worker() % n) else {
        return;
    };
    let mut conn = id;
    for _ in 0..1_000_000 {
        match request(client, conn) {
            Ok(()) => return,
            Err(e) if e.is_full() => {
                conn = e.into_inner();
                std::thread::yield_now();
            }
            Err(_) => return,
        }
    }
}
