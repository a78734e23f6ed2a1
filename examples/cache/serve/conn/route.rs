//! Routing: a request head to its [`Action`] (the `/cache`, `/sparse`,
//! `/stats`, `/metrics`, `/health` and `/cluster` routes).

use super::MAX_KEY;
use super::reply::Reply;
use crate::engine::Placement;
use crate::http::{self, BodyLen, ByteRange, Head, Method};
use crate::serve::{BodyEnd, Dest, NodeState, Op, PutEnd, RangeEnd, owner_of};
use std::time::Duration;

const CACHE_ALLOW: &str = "GET, PUT, POST, DELETE, HEAD, OPTIONS";

const SPARSE_ALLOW: &str = "GET, POST, PUT, PATCH, DELETE";

/// What a parsed request does.
#[derive(Debug)]
pub(super) enum Action {
    Respond(Reply),
    /// `op` at the first of `dests`; a lookup (GET, HEAD) falls over
    /// to the next on a miss or an unreachable node, a DELETE goes to
    /// all of them.
    Op {
        dests: Vec<Dest>,
        op: Op,
        head_only: bool,
        key: Vec<u8>,
        /// A GET's ranges when it asked for several ([`RangeReq::Many`]).
        ranges: Vec<ByteRange>,
    },
    /// `/stats`, or with `json_metrics` the JSON `/metrics`.
    Stats {
        json_metrics: bool,
    },
    /// A body for every one of `dests` (a key's replicas).
    Put {
        dests: Vec<Dest>,
        end: BodyEnd,
    },
}

/// Routes a request head to its action.
pub(super) fn route(st: &NodeState, head: &Head) -> Action {
    let m = &head.method;
    let not_allowed = |allow: &str| {
        Action::Respond(Reply::text(405, "Method Not Allowed").header("Allow", allow))
    };
    match head.path.as_str() {
        "/health" => match m {
            Method::Get | Method::Head => Action::Respond(
                Reply::json(&serde_json::json!({"status": "healthy"}))
                    .head_only(*m == Method::Head),
            ),
            _ => not_allowed("GET, HEAD"),
        },
        "/stats" => match m {
            Method::Get => Action::Stats {
                json_metrics: false,
            },
            _ => not_allowed("GET"),
        },
        "/metrics" => match m {
            Method::Get
                if head
                    .accept
                    .as_deref()
                    .is_some_and(|a| a.contains("application/json")) =>
            {
                Action::Stats { json_metrics: true }
            }
            Method::Get => {
                let openmetrics = head
                    .accept
                    .as_deref()
                    .is_some_and(|a| a.contains("application/openmetrics-text"));
                let kind = if openmetrics {
                    "application/openmetrics-text; version=1.0.0; charset=utf-8"
                } else {
                    "text/plain; version=0.0.4; charset=utf-8"
                };
                Action::Respond(Reply::new(200, kind, (st.text)()))
            }
            _ => not_allowed("GET"),
        },
        "/cluster" | "/cluster/nodes" => match m {
            Method::Get => Action::Respond(Reply::json(&match &st.cluster {
                Some(view) => view.json(),
                None => serde_json::json!({"mode": "standalone"}),
            })),
            _ => not_allowed("GET"),
        },
        path => {
            if let Some(key) = path.strip_prefix("/cache/")
                && !key.is_empty()
                && !key.contains('/')
            {
                return cache_route(st, head, key);
            }
            match path.strip_prefix("/sparse/").map(|k| {
                k.strip_suffix("/finalize")
                    .map_or((k, false), |k| (k, true))
            }) {
                Some((key, finalize)) if !key.is_empty() && !key.contains('/') => {
                    sparse_route(st, head, key, finalize)
                }
                _ => Action::Respond(Reply::text(404, "Not Found")),
            }
        }
    }
}

fn bad(msg: &str) -> Action {
    Action::Respond(Reply::text(400, msg))
}

fn cache_route(st: &NodeState, head: &Head, key: &str) -> Action {
    if key.len() > MAX_KEY {
        return bad("Key too long");
    }
    let key = key.as_bytes().to_vec();
    // `X-ElCache-No-Cluster: true` keeps the request on this node.
    let dests = st.dests(&key, head.no_cluster);
    let op = |op: Op, head_only: bool, key: Vec<u8>| Action::Op {
        dests: dests.clone(),
        op,
        head_only,
        key,
        ranges: Vec::new(),
    };
    match &head.method {
        Method::Get => {
            let query = match head.query.as_deref().map(http::parse_query_range) {
                Some(Err(e)) => return bad(&e.to_string()),
                Some(Ok(q)) => q,
                None => None,
            };
            // `?range=` overrides the header (ElCache's rule).
            let (range, ranges) = match query {
                Some(q) => (q, Vec::new()),
                None => http::range_request(head.range.as_deref()),
            };
            Action::Op {
                dests: dests.clone(),
                op: Op::Get {
                    key: key.clone(),
                    range,
                },
                head_only: false,
                key,
                ranges,
            }
        }
        Method::Head => op(Op::Head { key: key.clone() }, true, key),
        Method::Delete => op(Op::Delete { key }, false, Vec::new()),
        Method::Put | Method::Post => {
            let (ttl, flags) = match ttl_and_flags(head) {
                Ok((ttl, flags)) => (ttl.flatten(), flags.unwrap_or(0)),
                Err(e) => return bad(e),
            };
            let place = Placement {
                memory: !head.no_memory,
                disk: !head.no_disk,
            };
            Action::Put {
                dests: dests.clone(),
                end: BodyEnd::Store(PutEnd {
                    key,
                    ttl,
                    flags,
                    place,
                    only_new: false,
                }),
            }
        }
        Method::Options => Action::Respond(
            Reply::empty(200)
                .header("Allow", CACHE_ALLOW)
                .header("Accept-Ranges", "bytes"),
        ),
        Method::Patch | Method::Other(_) => {
            Action::Respond(Reply::text(405, "Method Not Allowed").header("Allow", CACHE_ALLOW))
        }
    }
}

/// `X-ElCache-TTL` (`Some(None)`: 0, no expiry) and `X-ElCache-Flags`
/// (cut to 32 bits, as ElCache does), each `None` when absent.
type TtlFlags = (Option<Option<Duration>>, Option<u32>);

/// Reads [`TtlFlags`] from `head`.
///
/// # Errors
/// The 400 text for a malformed one.
fn ttl_and_flags(head: &Head) -> Result<TtlFlags, &'static str> {
    let ttl = match head.ttl.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(0)) => Some(None),
        Some(Ok(n)) if n > 0 => Some(Some(Duration::from_secs(n.unsigned_abs()))),
        Some(_) => return Err("X-ElCache-TTL must be a whole number of seconds, 0 or more"),
    };
    let flags = match head.flags.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) => Some(n as u32),
        Some(Err(_)) => return Err("X-ElCache-Flags must be an unsigned number"),
    };
    Ok((ttl, flags))
}

/// The `/sparse/{key}` routes (spec sections 3.1 and 3.3), and
/// `/sparse/{key}/finalize` when `finalize`.
fn sparse_route(st: &NodeState, head: &Head, key: &str, finalize: bool) -> Action {
    let m = &head.method;
    let not_allowed = |allow: &str| {
        Action::Respond(Reply::text(405, "Method Not Allowed").header("Allow", allow))
    };
    if finalize && *m != Method::Post {
        return not_allowed("POST");
    }
    if !finalize
        && !matches!(
            m,
            Method::Get | Method::Post | Method::Put | Method::Patch | Method::Delete
        )
    {
        return not_allowed(SPARSE_ALLOW);
    }
    if key.len() > MAX_KEY {
        return bad("Key too long");
    }
    let key = key.as_bytes().to_vec();
    // Sparse values live on the node that is asked (not replicated).
    let owner = owner_of(&key, st.workers);
    let op = |op: Op, key: Vec<u8>| Action::Op {
        ranges: Vec::new(),
        dests: vec![Dest::Local(owner)],
        op,
        head_only: false,
        key,
    };
    let (ttl, flags) = match ttl_and_flags(head) {
        Ok(v) => v,
        Err(e) => return bad(e),
    };
    if finalize {
        return op(Op::SparseFinalize { key, ttl, flags }, Vec::new());
    }
    match m {
        Method::Post => {
            let total = match head.size.as_deref().map(str::parse::<u64>) {
                Some(Ok(n)) if n > 0 => n,
                _ => return bad("X-ElCache-Size must be a number of bytes above 0"),
            };
            if total > st.limits.max_body {
                return Action::Respond(Reply::text(
                    413,
                    &format!(
                        "X-ElCache-Size {total} is over the {}-byte limit",
                        st.limits.max_body
                    ),
                ));
            }
            op(
                Op::SparseCreate {
                    key,
                    total,
                    ttl: ttl.flatten(),
                    flags: flags.unwrap_or(0),
                },
                Vec::new(),
            )
        }
        Method::Put | Method::Patch => {
            if head.body == BodyLen::None {
                return bad("a sparse write needs a body");
            }
            let (offset, len, total) = match head.content_range.as_deref() {
                Some(v) => match http::parse_content_range(v) {
                    Ok(r) => (r.first, r.len(), r.total),
                    Err(e) => return bad(&e.to_string()),
                },
                None => match head.query.as_deref().map(http::parse_query_offset) {
                    Some(Err(e)) => return bad(&e.to_string()),
                    Some(Ok(o)) => (o.unwrap_or(0), None, None),
                    None => (0, None, None),
                },
            };
            Action::Put {
                dests: vec![Dest::Local(owner)],
                end: BodyEnd::WriteRange(RangeEnd {
                    key,
                    offset,
                    len,
                    total,
                    nonempty: true,
                }),
            }
        }
        Method::Get => op(Op::SparseStatus { key: key.clone() }, key),
        _ => op(Op::SparseDelete { key }, Vec::new()),
    }
}
