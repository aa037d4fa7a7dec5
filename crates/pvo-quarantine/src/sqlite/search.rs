//! Search as SQL, shaped so that every typical query is served by an index.
//!
//! Two shapes. With a quarantine, the query is driven by `memberships` through the partial
//! indexes `(quarantine_id, received | size | exit_at, msg_id) WHERE state = 0`, so the first
//! page of "newest in Policy" reads about as many index entries as it returns. Without one,
//! it is driven by `messages` through `(received | size | next_exit) WHERE state = 0`. Other
//! filters are equality or range conditions on indexed columns (sender, sender domain,
//! gateway — each `(column, received)` so the order comes free), or `id IN (...)` sub-queries
//! over an indexed table (recipients, attachments, the FTS5 index, reasons) which SQLite
//! either uses to drive the query when they are selective or probes per row when they are
//! not. Every condition is a bound parameter; user words reach FTS5 quoted.
//!
//! The total of an unfiltered search (all held messages, or all of one quarantine) comes
//! from the maintained counters instead of a count over the index; other totals are counted
//! up to `max_count`. Sub-query filters are the plan's lever: SQLite cannot estimate their
//! size, so we measure (cheaply, capped) and mark with a unary `+` the ones that must not
//! drive. For the count, the smallest drives; for a page of a large result, none does and
//! the sort index is read in order, probing them, so the first page stops early.

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OptionalExtension};

use crate::error::{QuarantineError, Result};
use crate::model::{MembershipState, MsgId};
use crate::search::{
    fts_query, AddrMatch, HitMembership, OrderBy, SearchHit, SearchPage, SearchQuery,
};

use super::{i, reason_parse, u};

/// The most hits one page returns.
pub const MAX_LIMIT: u64 = 10_000;

/// At or above this many matches, the page is read along the sort index, probing the other
/// filters, instead of collecting every match and sorting: the first page then costs about
/// `(offset + limit) × held / matches` index entries, a few thousand at most.
const SCAN_THRESHOLD: u64 = 1_000;

/// How far the size of a sub-query filter is counted when choosing which one drives.
const PROBE_CAP: i64 = 10_000;

/// A filter of the form `id IN (SELECT col FROM ...)`.
struct InFilter {
    /// The id column (`msg_id`, or `rowid` of the FTS table).
    col: &'static str,
    /// The sub-query after `SELECT col FROM`.
    from_where: String,
    params: Vec<Value>,
    /// Every id it yields is a held message (the FTS index, held memberships): counting
    /// through it needs no lookup in `messages` to check the state.
    held_only: bool,
}

struct Built {
    from: String,
    conds: Vec<String>,
    params: Vec<Value>,
    ins: Vec<InFilter>,
    /// `b.msg_id` when driven by memberships, `m.id` when by messages.
    id_col: &'static str,
    order: String,
    /// Only the quarantine (or nothing) is filtered: the counters give the total.
    unfiltered: Option<Option<u64>>,
    /// No condition besides the held state and the sub-query filters (no quarantine).
    only_subqueries: bool,
}

impl InFilter {
    fn sub(&self) -> String {
        format!("SELECT {} FROM {}", self.col, self.from_where)
    }
}

impl Built {
    /// FROM and WHERE; a `+` before the id of an IN filter keeps SQLite from driving the
    /// query with it (it then only probes it), which is how we choose the plan.
    fn render(&self, plus: &[bool]) -> (String, Vec<Value>) {
        let mut w = self.conds.clone();
        let mut p = self.params.clone();
        for (k, f) in self.ins.iter().enumerate() {
            let mark = if plus.get(k).copied().unwrap_or(false) {
                "+"
            } else {
                ""
            };
            w.push(format!("{mark}{} IN ({})", self.id_col, f.sub()));
            p.extend(f.params.iter().cloned());
        }
        (format!("{} WHERE {}", self.from, w.join(" AND ")), p)
    }
}

fn addr_condition(col_lc: &str, col_domain: &str, m: &AddrMatch, p: &mut Vec<Value>) -> String {
    match m {
        AddrMatch::Is(a) => {
            p.push(Value::Text(a.trim().to_lowercase()));
            format!("{col_lc} = ?")
        }
        AddrMatch::Domain(d) => {
            p.push(Value::Text(d.trim().trim_start_matches('@').to_lowercase()));
            format!("{col_domain} = ?")
        }
        AddrMatch::BeginsWith(prefix) => {
            let lo = prefix.trim().to_lowercase();
            // Every string that starts with `lo` sorts below `lo` + U+10FFFF (BINARY order
            // of UTF-8 is code point order), so the range is an index range scan.
            let hi = format!("{lo}\u{10FFFF}");
            p.push(Value::Text(lo));
            p.push(Value::Text(hi));
            format!("{col_lc} >= ? AND {col_lc} < ?")
        }
    }
}

fn build(conn: &Connection, q: &SearchQuery) -> Result<Built> {
    // Refused before any SQL: a filter that cannot be applied never widens the search.
    q.validate()?;
    let mut w: Vec<String> = Vec::new();
    let mut p: Vec<Value> = Vec::new();
    let mut ins: Vec<InFilter> = Vec::new();
    let qid = match &q.quarantine {
        Some(name) => {
            let id: Option<i64> = conn
                .prepare_cached("SELECT id FROM quarantines WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()?;
            Some(id.ok_or_else(|| QuarantineError::UnknownQuarantine(name.clone()))?)
        }
        None => None,
    };
    // With a quarantine, everything that can be is a condition on the membership row (a
    // held membership implies a held message), so counting never has to read `messages`.
    let by_membership = qid.is_some();
    let (received, size, exit, id_col) = if by_membership {
        ("b.received", "b.size", "b.exit_at", "b.msg_id")
    } else {
        ("m.received", "m.size", "m.next_exit", "m.id")
    };
    match qid {
        Some(id) => {
            w.push("b.quarantine_id = ?".into());
            p.push(Value::Integer(id));
            w.push("b.state = 0".into());
        }
        None => w.push("m.state = 0".into()),
    }
    let fixed = w.len();
    let mut needs_message = !by_membership;

    if q.reason.is_some() || q.reason_kind.is_some() {
        let mut cond = Vec::new();
        let mut cp = Vec::new();
        if let Some(r) = &q.reason {
            cond.push("reason_name = ?");
            cp.push(Value::Text(r.trim().to_string()));
        }
        if let Some(k) = q.reason_kind {
            cond.push("reason_kind = ?");
            cp.push(Value::Text(k.as_str().to_string()));
        }
        if by_membership {
            w.extend(cond.iter().map(|c| format!("b.{c}")));
            p.extend(cp);
        } else {
            ins.push(InFilter {
                col: "msg_id",
                from_where: format!("memberships WHERE state = 0 AND {}", cond.join(" AND ")),
                params: cp,
                held_only: true,
            });
        }
    }
    for (bound, op, col) in [
        (q.received_from, ">=", received),
        (q.received_to, "<=", received),
        (q.min_size, ">=", size),
        (q.max_size, "<=", size),
    ] {
        if let Some(v) = bound {
            w.push(format!("{col} {op} ?"));
            p.push(Value::Integer(i(v)));
        }
    }
    if let Some(s) = &q.sender {
        w.push(addr_condition("m.sender_lc", "m.sender_domain", s, &mut p));
        needs_message = true;
    }
    if let Some(g) = &q.gateway {
        w.push("m.gateway = ?".into());
        p.push(Value::Text(g.clone()));
        needs_message = true;
    }
    if let Some(r) = &q.recipient {
        let mut rp = Vec::new();
        let c = addr_condition("addr_lc", "domain", r, &mut rp);
        ins.push(InFilter {
            col: "msg_id",
            from_where: format!("recipients WHERE {c}"),
            params: rp,
            held_only: false,
        });
    }
    if let Some(names) = &q.within_quarantines {
        let marks = vec!["?"; names.len()].join(", ");
        ins.push(InFilter {
            col: "msg_id",
            from_where: format!(
                "memberships WHERE state = 0 AND quarantine_id IN (SELECT id FROM quarantines WHERE name IN ({marks}))"
            ),
            params: names.iter().map(|n| Value::Text(n.clone())).collect(),
            held_only: true,
        });
    }
    if let Some(domains) = &q.recipient_domains {
        let marks = vec!["?"; domains.len()].join(", ");
        ins.push(InFilter {
            col: "msg_id",
            from_where: format!("recipients WHERE domain IN ({marks})"),
            params: domains
                .iter()
                .map(|d| Value::Text(d.trim().trim_start_matches('@').to_lowercase()))
                .collect(),
            held_only: false,
        });
    }
    let fts: Vec<String> = [
        q.subject
            .as_deref()
            .map(|s| fts_query("subject", "subject", s)),
        q.attachment_name
            .as_deref()
            .map(|s| fts_query("attachments", "attachment", s)),
    ]
    .into_iter()
    .flatten()
    .collect::<Result<_, _>>()?;
    if !fts.is_empty() {
        // The FTS index holds held messages only (rows are deleted when a message leaves).
        ins.push(InFilter {
            col: "rowid",
            from_where: "message_fts WHERE message_fts MATCH ?".into(),
            params: vec![Value::Text(fts.join(" AND "))],
            held_only: true,
        });
    }
    if q.attachment_min_size.is_some() || q.attachment_max_size.is_some() {
        let mut cond = Vec::new();
        let mut ap = Vec::new();
        if let Some(min) = q.attachment_min_size {
            cond.push("size >= ?");
            ap.push(Value::Integer(i(min)));
        }
        if let Some(max) = q.attachment_max_size {
            cond.push("size <= ?");
            ap.push(Value::Integer(i(max)));
        }
        ins.push(InFilter {
            col: "msg_id",
            from_where: format!("attachments WHERE {}", cond.join(" AND ")),
            params: ap,
            held_only: false,
        });
    }

    let key = match q.order_by {
        OrderBy::Received => received,
        OrderBy::Size => size,
        OrderBy::Exit => exit,
    };
    let dir = if q.descending { "DESC" } else { "ASC" };
    let from = match (by_membership, needs_message) {
        (true, false) => "memberships b",
        (true, true) => "memberships b JOIN messages m ON m.id = b.msg_id",
        (false, _) => "messages m",
    };
    Ok(Built {
        from: from.to_string(),
        unfiltered: (w.len() == fixed && ins.is_empty()).then_some(qid.map(u)),
        only_subqueries: qid.is_none() && w.len() == fixed,
        conds: w,
        params: p,
        ins,
        id_col,
        order: format!("{key} {dir}, {id_col} {dir}"),
    })
}

/// Lets only the smallest sub-query filter drive the query (SQLite cannot estimate their
/// sizes, so with several it may pick a large one); each is counted up to [`PROBE_CAP`].
fn drive_smallest(conn: &Connection, b: &Built) -> Result<Vec<bool>> {
    if b.ins.len() < 2 {
        return Ok(vec![false; b.ins.len()]);
    }
    let mut sizes = Vec::new();
    for f in &b.ins {
        let n: i64 = conn
            .prepare_cached(&format!(
                "SELECT count(*) FROM ({} LIMIT {PROBE_CAP})",
                f.sub()
            ))?
            .query_row(params_from_iter(f.params.iter()), |r| r.get(0))?;
        sizes.push(n);
    }
    let min = (0..sizes.len()).min_by_key(|&k| sizes[k]).unwrap_or(0);
    Ok((0..sizes.len()).map(|k| k != min).collect())
}

/// The total, and whether it is exact.
fn count(tx: &Connection, q: &SearchQuery, b: &Built, plus: &[bool]) -> Result<(u64, bool)> {
    match b.unfiltered {
        Some(Some(qid)) => {
            let n = tx
                .prepare_cached("SELECT held_count FROM quarantines WHERE id = ?1")?
                .query_row([i(qid)], |r| r.get::<_, i64>(0))?;
            return Ok((u(n), true));
        }
        Some(None) => {
            let n = tx
                .prepare_cached("SELECT value FROM store_meta WHERE key = 'held_messages'")?
                .query_row([], |r| r.get::<_, i64>(0))?;
            return Ok((u(n), true));
        }
        None => {}
    }
    // Counting through a held-only filter alone: no lookup in `messages` per match.
    let driver = (0..b.ins.len()).find(|&k| !plus[k] && b.ins[k].held_only);
    let (fw, params) = match driver {
        Some(d) if b.only_subqueries => {
            let mut p = b.ins[d].params.clone();
            let mut w = Vec::new();
            for (_, f) in b.ins.iter().enumerate().filter(|(k, _)| *k != d) {
                w.push(format!("id IN ({})", f.sub()));
                p.extend(f.params.iter().cloned());
            }
            let cond = if w.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", w.join(" AND "))
            };
            let drv = &b.ins[d];
            // FTS rowids are unique; a message can hold two memberships with one reason.
            let distinct = if drv.col == "rowid" { "" } else { "DISTINCT " };
            let fw = format!(
                "(SELECT {distinct}{} AS id FROM {}){cond}",
                drv.col, drv.from_where
            );
            (fw, p)
        }
        _ => b.render(plus),
    };
    match q.max_count {
        Some(cap) => {
            let sql = format!(
                "SELECT count(*) FROM (SELECT 1 FROM {fw} LIMIT {})",
                i(cap).saturating_add(1)
            );
            let n = u(tx
                .prepare_cached(&sql)?
                .query_row(params_from_iter(params.iter()), |r| r.get::<_, i64>(0))?);
            Ok(if n > cap { (cap, false) } else { (n, true) })
        }
        None => {
            let n = tx
                .prepare_cached(&format!("SELECT count(*) FROM {fw}"))?
                .query_row(params_from_iter(params.iter()), |r| r.get::<_, i64>(0))?;
            Ok((u(n), true))
        }
    }
}

pub(crate) fn search(conn: &Connection, q: &SearchQuery) -> Result<SearchPage> {
    // One snapshot for the total and the page.
    let tx = conn.unchecked_transaction()?;
    let b = build(&tx, q)?;
    let plus = drive_smallest(&tx, &b)?;
    let (total, total_exact) = count(&tx, q, &b, &plus)?;
    let limit = q.limit.min(MAX_LIMIT);
    let mut hits = Vec::new();
    if limit > 0 && (q.offset < total || !total_exact) {
        let page_plus = if total >= SCAN_THRESHOLD {
            vec![true; b.ins.len()]
        } else {
            plus
        };
        let (fw, mut params) = b.render(&page_plus);
        let sql = format!(
            "SELECT {} FROM {fw} ORDER BY {} LIMIT ? OFFSET ?",
            b.id_col, b.order
        );
        params.push(Value::Integer(i(limit)));
        params.push(Value::Integer(i(q.offset)));
        let ids: Vec<MsgId> = {
            let mut st = tx.prepare_cached(&sql)?;
            let rows = st.query_map(params_from_iter(params.iter()), |r| Ok(u(r.get(0)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for msg_id in ids {
            hits.push(hit(&tx, msg_id)?);
        }
    }
    Ok(SearchPage {
        total,
        total_exact,
        hits,
    })
}

fn hit(conn: &Connection, msg_id: MsgId) -> Result<SearchHit> {
    let (gateway, gateway_mid, sender, subject, received, size, node_mid) = conn
        .prepare_cached(
            "SELECT gateway, gateway_mid, sender, subject, received, size,
                    json_extract(meta, '$.mid')
             FROM messages WHERE id = ?1",
        )?
        .query_row([i(msg_id)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                u(r.get(1)?),
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                u(r.get(4)?),
                u(r.get(5)?),
                r.get::<_, Option<i64>>(6)?.map(u),
            ))
        })?;
    Ok(SearchHit {
        msg_id,
        recipients: recipients(conn, msg_id)?,
        held_in: held(conn, msg_id)?,
        gateway,
        gateway_mid,
        node_mid,
        sender,
        subject,
        received,
        size,
    })
}

pub(crate) fn search_ids(conn: &Connection, q: &SearchQuery) -> Result<Vec<MsgId>> {
    let tx = conn.unchecked_transaction()?;
    let b = build(&tx, q)?;
    let plus = drive_smallest(&tx, &b)?;
    let (fw, params) = b.render(&plus);
    let sql = format!("SELECT {} FROM {fw} ORDER BY {}", b.id_col, b.order);
    let mut st = tx.prepare(&sql)?;
    let rows = st.query_map(params_from_iter(params.iter()), |r| Ok(u(r.get(0)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn recipients(conn: &Connection, msg_id: MsgId) -> Result<Vec<String>> {
    let mut st =
        conn.prepare_cached("SELECT addr FROM recipients WHERE msg_id = ?1 ORDER BY pos")?;
    let rows = st.query_map([i(msg_id)], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn held(conn: &Connection, msg_id: MsgId) -> Result<Vec<HitMembership>> {
    let mut st = conn.prepare_cached(
        "SELECT q.name, b.reason_kind, b.reason_name, b.exit_at
         FROM memberships b JOIN quarantines q ON q.id = b.quarantine_id
         WHERE b.msg_id = ?1 AND b.state = ?2 ORDER BY b.id",
    )?;
    let rows = st.query_map([i(msg_id), MembershipState::Held.code()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            u(r.get(3)?),
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (quarantine, kind, name, exit_at) = row?;
        out.push(HitMembership {
            quarantine,
            reason: reason_parse(&kind, name)?,
            exit_at,
        });
    }
    Ok(out)
}
