//! Search as PostgreSQL SQL: the same filters, orders and totals as `sqlite::search`.
//!
//! With a quarantine the query is driven by `memberships` (partial indexes
//! `(quarantine_id, received | size | exit_at, msg_id) WHERE state = 0`), joined to
//! `messages`; without one by `messages` (`(received | size | next_exit, id) WHERE state = 0`).
//! Recipients, attachments, reasons and "within quarantines" are `EXISTS` sub-queries over
//! indexed tables, which PostgreSQL's planner costs itself. Subject and attachment words
//! match the normalized word columns with `LIKE '% w1 w2 %'` (a phrase; a trailing `*` makes
//! the last word a prefix): the words are letters and digits only, so the pattern carries
//! no LIKE wildcard from the user. Every value is a bound parameter.
//!
//! Totals: an unfiltered search (all held, or all of one quarantine) reads the maintained
//! counters; others count up to `max_count` (`LIMIT cap + 1`).

use postgres::types::ToSql;
use postgres::GenericClient;

use crate::error::{QuarantineError, Result};
use crate::model::{MembershipState, MsgId};
use crate::search::{
    fts_query, AddrMatch, FilterError, HitMembership, OrderBy, SearchHit, SearchPage, SearchQuery,
};
use crate::sqlite::{i, reason_parse, u};

use super::tokens;

/// The most hits one page returns (as for SQLite).
const MAX_LIMIT: u64 = 10_000;

type Param = Box<dyn ToSql + Sync>;

struct Built {
    from: &'static str,
    conds: Vec<String>,
    params: Vec<Param>,
    id_col: &'static str,
    order: String,
    /// Only the quarantine (or nothing) is filtered: the counters give the total.
    unfiltered: Option<Option<i64>>,
}

impl Built {
    fn push(&mut self, v: impl ToSql + Sync + 'static) -> String {
        self.params.push(Box::new(v));
        format!("${}", self.params.len())
    }

    fn where_sql(&self) -> String {
        format!("{} WHERE {}", self.from, self.conds.join(" AND "))
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref()).collect()
    }
}

fn addr_condition(b: &mut Built, col_lc: &str, col_domain: &str, m: &AddrMatch) -> String {
    match m {
        AddrMatch::Is(a) => {
            let p = b.push(a.trim().to_lowercase());
            format!("{col_lc} = {p}")
        }
        AddrMatch::Domain(d) => {
            let p = b.push(d.trim().trim_start_matches('@').to_lowercase());
            format!("{col_domain} = {p}")
        }
        AddrMatch::BeginsWith(prefix) => {
            // A range, not LIKE: the prefix is the user's text and may hold `%` or `_`. The
            // column is `COLLATE "C"` (code point order), so the range is exact.
            let lo = prefix.trim().to_lowercase();
            let hi = format!("{lo}\u{10FFFF}");
            let pl = b.push(lo);
            let ph = b.push(hi);
            format!("{col_lc} >= {pl} AND {col_lc} < {ph}")
        }
    }
}

/// `LIKE` patterns for the words of a subject or attachment filter, one per word (all
/// required). The text is checked by the same rules as the SQLite full-text query, so a
/// value that cannot be a filter is refused the same way.
fn word_patterns(field: &str, text: &str) -> Result<Vec<String>, FilterError> {
    fts_query(field, field, text)?;
    Ok(text
        .split_whitespace()
        .filter_map(|w| {
            let prefix = w.ends_with('*');
            let t = tokens(w.trim_end_matches('*'));
            if t.is_empty() {
                return None;
            }
            Some(format!(
                "% {}{}",
                t.join(" "),
                if prefix { "%" } else { " %" }
            ))
        })
        .collect())
}

fn build(c: &mut impl GenericClient, q: &SearchQuery) -> Result<Built> {
    q.validate()?;
    let qid: Option<i64> = match &q.quarantine {
        Some(name) => Some(
            c.query_opt(
                "SELECT id FROM quarantines WHERE lower(name) = lower($1)",
                &[name],
            )?
            .map(|r| r.get(0))
            .ok_or_else(|| QuarantineError::UnknownQuarantine(name.clone()))?,
        ),
        None => None,
    };
    let by_membership = qid.is_some();
    let (received, size, exit, id_col) = if by_membership {
        ("b.received", "b.size", "b.exit_at", "b.msg_id")
    } else {
        ("m.received", "m.size", "m.next_exit", "m.id")
    };
    let mut b = Built {
        from: if by_membership {
            "memberships b JOIN messages m ON m.id = b.msg_id"
        } else {
            "messages m"
        },
        conds: Vec::new(),
        params: Vec::new(),
        id_col,
        order: String::new(),
        unfiltered: None,
    };
    match qid {
        Some(id) => {
            let p = b.push(id);
            b.conds.push(format!("b.quarantine_id = {p}"));
            b.conds.push("b.state = 0".into());
        }
        None => b.conds.push("m.state = 0".into()),
    }
    let fixed = b.conds.len();

    if q.reason.is_some() || q.reason_kind.is_some() {
        let mut cond = Vec::new();
        let prefix = if by_membership { "b." } else { "r." };
        if let Some(r) = &q.reason {
            let p = b.push(r.trim().to_string());
            cond.push(format!("lower({prefix}reason_name) = lower({p})"));
        }
        if let Some(k) = q.reason_kind {
            let p = b.push(k.as_str().to_string());
            cond.push(format!("{prefix}reason_kind = {p}"));
        }
        if by_membership {
            b.conds.extend(cond);
        } else {
            b.conds.push(format!(
                "EXISTS (SELECT 1 FROM memberships r WHERE r.msg_id = m.id AND r.state = 0 AND {})",
                cond.join(" AND ")
            ));
        }
    }
    for (bound, op, col) in [
        (q.received_from, ">=", received),
        (q.received_to, "<=", received),
        (q.min_size, ">=", size),
        (q.max_size, "<=", size),
    ] {
        if let Some(v) = bound {
            let p = b.push(i(v));
            b.conds.push(format!("{col} {op} {p}"));
        }
    }
    if let Some(s) = &q.sender {
        let c = addr_condition(&mut b, "m.sender_lc", "m.sender_domain", s);
        b.conds.push(c);
    }
    if let Some(g) = &q.gateway {
        let p = b.push(g.clone());
        b.conds.push(format!("m.gateway = {p}"));
    }
    if let Some(r) = &q.recipient {
        let c = addr_condition(&mut b, "t.addr_lc", "t.domain", r);
        b.conds.push(format!(
            "EXISTS (SELECT 1 FROM recipients t WHERE t.msg_id = m.id AND {c})"
        ));
    }
    if let Some(names) = &q.within_quarantines {
        let lowered: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
        let p = b.push(lowered);
        b.conds.push(format!(
            "EXISTS (SELECT 1 FROM memberships w JOIN quarantines wq ON wq.id = w.quarantine_id
                     WHERE w.msg_id = m.id AND w.state = 0 AND lower(wq.name) = ANY({p}))"
        ));
    }
    if let Some(domains) = &q.recipient_domains {
        let d: Vec<String> = domains
            .iter()
            .map(|d| d.trim().trim_start_matches('@').to_lowercase())
            .collect();
        let p = b.push(d);
        b.conds.push(format!(
            "EXISTS (SELECT 1 FROM recipients t WHERE t.msg_id = m.id AND t.domain = ANY({p}))"
        ));
    }
    for (text, field, col) in [
        (&q.subject, "subject", "m.subject_words"),
        (&q.attachment_name, "attachment", "m.attach_words"),
    ] {
        if let Some(text) = text {
            for pat in word_patterns(field, text)? {
                let p = b.push(pat);
                b.conds.push(format!("{col} LIKE {p}"));
            }
        }
    }
    if q.attachment_min_size.is_some() || q.attachment_max_size.is_some() {
        let mut cond = Vec::new();
        if let Some(min) = q.attachment_min_size {
            let p = b.push(i(min));
            cond.push(format!("a.size >= {p}"));
        }
        if let Some(max) = q.attachment_max_size {
            let p = b.push(i(max));
            cond.push(format!("a.size <= {p}"));
        }
        b.conds.push(format!(
            "EXISTS (SELECT 1 FROM attachments a WHERE a.msg_id = m.id AND {})",
            cond.join(" AND ")
        ));
    }
    let key = match q.order_by {
        OrderBy::Received => received,
        OrderBy::Size => size,
        OrderBy::Exit => exit,
    };
    let dir = if q.descending { "DESC" } else { "ASC" };
    b.order = format!("{key} {dir}, {id_col} {dir}");
    b.unfiltered = (b.conds.len() == fixed).then_some(qid);
    Ok(b)
}

fn count(c: &mut impl GenericClient, q: &SearchQuery, b: &Built) -> Result<(u64, bool)> {
    match b.unfiltered {
        Some(Some(qid)) => {
            let n: i64 = c
                .query_one("SELECT held_count FROM quarantines WHERE id = $1", &[&qid])?
                .get(0);
            return Ok((u(n), true));
        }
        Some(None) => {
            let n: i64 = c
                .query_one(
                    "SELECT value FROM store_meta WHERE key = 'held_messages'",
                    &[],
                )?
                .get(0);
            return Ok((u(n), true));
        }
        None => {}
    }
    let fw = b.where_sql();
    match q.max_count {
        Some(cap) => {
            let sql = format!(
                "SELECT count(*) FROM (SELECT 1 FROM {fw} LIMIT {}) AS capped",
                i(cap).saturating_add(1)
            );
            let n = u(c.query_one(&sql, &b.refs())?.get(0));
            Ok(if n > cap { (cap, false) } else { (n, true) })
        }
        None => {
            let n: i64 = c
                .query_one(&format!("SELECT count(*) FROM {fw}"), &b.refs())?
                .get(0);
            Ok((u(n), true))
        }
    }
}

pub(crate) fn search(c: &mut impl GenericClient, q: &SearchQuery) -> Result<SearchPage> {
    let mut b = build(c, q)?;
    let (total, total_exact) = count(c, q, &b)?;
    let limit = q.limit.min(MAX_LIMIT);
    let mut hits = Vec::new();
    if limit > 0 && (q.offset < total || !total_exact) {
        let fw = b.where_sql();
        let order = b.order.clone();
        let id_col = b.id_col;
        let pl = b.push(i(limit));
        let po = b.push(i(q.offset));
        let sql = format!("SELECT {id_col} FROM {fw} ORDER BY {order} LIMIT {pl} OFFSET {po}");
        let ids: Vec<MsgId> = c
            .query(&sql, &b.refs())?
            .iter()
            .map(|r| u(r.get(0)))
            .collect();
        hits = page_hits(c, &ids)?;
    }
    Ok(SearchPage {
        total,
        total_exact,
        hits,
    })
}

pub(crate) fn search_ids(c: &mut impl GenericClient, q: &SearchQuery) -> Result<Vec<MsgId>> {
    let b = build(c, q)?;
    let sql = format!(
        "SELECT {} FROM {} ORDER BY {}",
        b.id_col,
        b.where_sql(),
        b.order
    );
    Ok(c.query(&sql, &b.refs())?
        .iter()
        .map(|r| u(r.get(0)))
        .collect())
}

/// The hits of one page, in the page's order: three queries for the whole page (each
/// statement is a round trip to the server, so not three per hit).
fn page_hits(c: &mut impl GenericClient, ids: &[MsgId]) -> Result<Vec<SearchHit>> {
    use std::collections::HashMap;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<i64> = ids.iter().map(|&id| i(id)).collect();
    let mut recipients: HashMap<i64, Vec<String>> = HashMap::new();
    for r in c.query(
        "SELECT msg_id, addr FROM recipients WHERE msg_id = ANY($1) ORDER BY msg_id, pos",
        &[&keys],
    )? {
        recipients.entry(r.get(0)).or_default().push(r.get(1));
    }
    let mut held_in: HashMap<i64, Vec<HitMembership>> = HashMap::new();
    for m in c.query(
        "SELECT b.msg_id, q.name, b.reason_kind, b.reason_name, b.exit_at
         FROM memberships b JOIN quarantines q ON q.id = b.quarantine_id
         WHERE b.msg_id = ANY($1) AND b.state = $2 ORDER BY b.msg_id, b.id",
        &[&keys, &MembershipState::Held.code()],
    )? {
        held_in.entry(m.get(0)).or_default().push(HitMembership {
            quarantine: m.get(1),
            reason: reason_parse(m.get(2), m.get(3))?,
            exit_at: u(m.get(4)),
        });
    }
    let mut rows: HashMap<i64, SearchHit> = HashMap::new();
    for r in c.query(
        "SELECT id, gateway, gateway_mid, sender, subject, received, size, node_mid
         FROM messages WHERE id = ANY($1)",
        &[&keys],
    )? {
        let id: i64 = r.get(0);
        rows.insert(
            id,
            SearchHit {
                msg_id: u(id),
                recipients: recipients.remove(&id).unwrap_or_default(),
                held_in: held_in.remove(&id).unwrap_or_default(),
                gateway: r.get(1),
                gateway_mid: u(r.get(2)),
                node_mid: r.get::<_, Option<i64>>(7).map(u),
                sender: r.get(3),
                subject: r.get(4),
                received: u(r.get(5)),
                size: u(r.get(6)),
            },
        );
    }
    Ok(keys.iter().filter_map(|id| rows.remove(id)).collect())
}
