//! Fills a store with N generated quarantined messages and prints search latencies.
//!
//! ```text
//! cargo run --release -p pvo-quarantine --example fill_and_search -- 200000 [DB_PATH | URL]
//! ```
//!
//! A `postgresql://…` (or `host=… dbname=…`) URL fills a PostgreSQL store instead of the
//! embedded one (a Unix socket or loopback: no TLS). Every result line names the backend.
//!
//! The corpus resembles a manager's: 20,000 senders over 2,000 domains, 1–3 recipients out
//! of 50,000, subjects of 3–8 words from a 3,000-word vocabulary with a skewed frequency,
//! 30 days of receive times, 5 gateways, Policy/Virus/Outbreak (5% in two quarantines),
//! 40% with attachments. Bodies are 1 KiB (they live in their own table and do not affect
//! search). Each query shape runs 50 times with different values; the store's sweep (which
//! refreshes the planner statistics, as the running sweeper does every minute) runs before
//! the last round. At the end it times releases from Outbreak, one per transaction and in
//! bulk (this changes the store).

use std::time::Instant;

use pvo_quarantine::{
    Action, Actor, AddrMatch, Attachment, Hold, NewMessage, OrderBy, Reason, ReasonKind, Scope,
    SearchQuery, Store,
};

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Skewed towards small values (word and sender popularity).
    fn skewed(&mut self, n: u64) -> u64 {
        let a = self.below(n);
        let b = self.below(n);
        (a * b) / n
    }
}

fn word(i: u64) -> String {
    const SYL: [&str; 16] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ba", "de", "fo", "gu", "hi", "jo", "pe",
        "qu",
    ];
    let mut s = String::new();
    let mut n = i + 16;
    while n > 0 {
        s.push_str(SYL[(n % 16) as usize]);
        n /= 16;
    }
    s
}

fn sender(i: u64) -> String {
    format!("user{}@dom{}.example", i, i % 2000)
}

fn recipient(i: u64) -> String {
    format!("rcpt{}@corp{}.example", i, i % 50)
}

const REASONS: [(&str, ReasonKind, &str); 3] = [
    ("Policy", ReasonKind::ContentFilter, "filter"),
    ("Virus", ReasonKind::Virus, "Win.Trojan.Agent-"),
    ("Outbreak", ReasonKind::Outbreak, "OUTBREAK_"),
];

const EXTS: [&str; 8] = ["pdf", "docx", "xlsx", "zip", "exe", "html", "png", "js"];

fn generate(rng: &mut Rng, n: u64, total: u64) -> NewMessage {
    let which = match rng.below(100) {
        0..=59 => 0,
        60..=74 => 1,
        _ => 2,
    };
    let mut holds = vec![hold(rng, which)];
    if rng.below(100) < 5 {
        holds.push(hold(rng, (which + 1) % 3));
    }
    let words = 3 + rng.below(6);
    let subject: Vec<String> = (0..words).map(|_| word(rng.skewed(3000))).collect();
    let attachments = if rng.below(100) < 40 {
        (0..1 + rng.below(2))
            .map(|_| Attachment {
                name: format!(
                    "{}_{}.{}",
                    word(rng.skewed(3000)),
                    rng.below(1000),
                    EXTS[rng.below(8) as usize]
                ),
                size: 1000 + rng.skewed(5_000_000),
            })
            .collect()
    } else {
        Vec::new()
    };
    let recipients = (0..1 + rng.below(3))
        .map(|_| recipient(rng.skewed(50_000)))
        .collect();
    NewMessage {
        idempotency_key: format!("transfer-{n}"),
        gateway: format!("gw{}", rng.below(5)),
        gateway_mid: n,
        sender: sender(rng.skewed(20_000)),
        recipients,
        received: NOW - 30 * DAY + n * (30 * DAY) / total.max(1),
        subject: subject.join(" "),
        attachments,
        meta: serde_json::json!({}),
        raw: vec![b'x'; 1024],
        holds,
    }
}

fn hold(rng: &mut Rng, which: usize) -> Hold {
    let (q, kind, prefix) = REASONS[which];
    Hold {
        quarantine: q.into(),
        reason: Reason::new(kind, format!("{prefix}{}", rng.skewed(100))),
        details: serde_json::json!({"score": rng.below(100)}),
        exit_at: None,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

type MakeQuery = Box<dyn Fn(&mut Rng) -> SearchQuery>;

fn shapes() -> Vec<(&'static str, MakeQuery)> {
    let base = SearchQuery::default;
    let span = 29 * DAY;
    let start = NOW - 30 * DAY;
    vec![
        (
            "Policy, newest first",
            Box::new(move |_| SearchQuery {
                quarantine: Some("Policy".into()),
                ..base()
            }),
        ),
        ("all held, newest first", Box::new(move |_| base())),
        (
            "sender is",
            Box::new(move |r| SearchQuery {
                sender: Some(AddrMatch::Is(sender(r.skewed(20_000)))),
                ..base()
            }),
        ),
        (
            "sender domain",
            Box::new(move |r| SearchQuery {
                sender: Some(AddrMatch::Domain(format!("dom{}.example", r.below(2000)))),
                ..base()
            }),
        ),
        (
            "recipient is",
            Box::new(move |r| SearchQuery {
                recipient: Some(AddrMatch::Is(recipient(r.skewed(50_000)))),
                ..base()
            }),
        ),
        (
            "subject word (common)",
            Box::new(move |r| SearchQuery {
                subject: Some(word(r.below(20))),
                ..base()
            }),
        ),
        (
            "subject word (rare)",
            Box::new(move |r| SearchQuery {
                subject: Some(word(1000 + r.below(2000))),
                ..base()
            }),
        ),
        (
            "Policy + one day",
            Box::new(move |r| {
                let from = start + r.below(span);
                SearchQuery {
                    quarantine: Some("Policy".into()),
                    received_from: Some(from),
                    received_to: Some(from + DAY),
                    ..base()
                }
            }),
        ),
        (
            "gateway + one day",
            Box::new(move |r| {
                let from = start + r.below(span);
                SearchQuery {
                    gateway: Some(format!("gw{}", r.below(5))),
                    received_from: Some(from),
                    received_to: Some(from + DAY),
                    ..base()
                }
            }),
        ),
        (
            "outbreak rule",
            Box::new(move |r| SearchQuery {
                reason: Some(format!("OUTBREAK_{}", r.skewed(100))),
                ..base()
            }),
        ),
        (
            "attachment word",
            Box::new(move |r| SearchQuery {
                attachment_name: Some(EXTS[r.below(8) as usize].into()),
                ..base()
            }),
        ),
        (
            "attachment size range",
            Box::new(move |r| {
                let lo = r.below(4_000_000);
                SearchQuery {
                    attachment_min_size: Some(lo),
                    attachment_max_size: Some(lo + 10_000),
                    ..base()
                }
            }),
        ),
        (
            "Virus by size desc",
            Box::new(move |_| SearchQuery {
                quarantine: Some("Virus".into()),
                order_by: OrderBy::Size,
                ..base()
            }),
        ),
        (
            "Policy + subject + 7 days",
            Box::new(move |r| {
                let from = start + r.below(span);
                SearchQuery {
                    quarantine: Some("Policy".into()),
                    subject: Some(word(r.below(200))),
                    received_from: Some(from),
                    received_to: Some(from + 7 * DAY),
                    ..base()
                }
            }),
        ),
        (
            "Outbreak page 11 by exit",
            Box::new(move |_| SearchQuery {
                quarantine: Some("Outbreak".into()),
                order_by: OrderBy::Exit,
                descending: false,
                offset: 250,
                ..base()
            }),
        ),
    ]
}

fn measure(store: &Store, backend: &str, round: &str) {
    println!("\n[{backend}] {round}");
    println!(
        "{:<42} {:>9} {:>9} {:>9} {:>10}",
        "query", "p50 ms", "p95 ms", "max ms", "avg total"
    );
    let mut all = Vec::new();
    for (name, make) in shapes() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut times = Vec::new();
        let mut totals = 0u64;
        for _ in 0..50 {
            let q = make(&mut rng);
            let t = Instant::now();
            let page = store.search(&q).expect("search");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            totals += page.total;
        }
        all.extend(times.iter().copied());
        times.sort_by(f64::total_cmp);
        let name = format!("[{backend}] {name}");
        println!(
            "{name:<42} {:>9.2} {:>9.2} {:>9.2} {:>10}",
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            times[times.len() - 1],
            totals / 50
        );
    }
    all.sort_by(f64::total_cmp);
    println!(
        "{:<42} {:>9.2} {:>9.2} {:>9.2}",
        format!("[{backend}] ALL QUERIES"),
        percentile(&all, 0.5),
        percentile(&all, 0.95),
        all[all.len() - 1]
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::TempDir::new().expect("temp dir");
    let target = args.next();
    let url = target
        .as_deref()
        .filter(|t| t.starts_with("postgres") || t.contains("host="));
    let path = target
        .as_deref()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("quarantine.db"));
    let (store, backend) = match url {
        Some(url) => (Store::open_postgres(url, NOW).expect("open"), "postgresql"),
        None => (Store::open_sqlite(&path, NOW).expect("open"), "sqlite"),
    };
    let existing = store.usage().expect("usage").total_messages;
    if existing < n {
        let mut rng = Rng(42 + existing);
        let t = Instant::now();
        let mut batch = Vec::with_capacity(1000);
        for i in existing..n {
            batch.push(generate(&mut rng, i, n));
            if batch.len() == 1000 || i + 1 == n {
                for r in store.quarantine_many(&batch, NOW).expect("insert") {
                    r.expect("valid message");
                }
                batch.clear();
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "[{backend}] filled {} messages in {secs:.1} s ({:.0} msg/s, batches of 1000, every commit durable)",
            n - existing,
            (n - existing) as f64 / secs
        );
    }
    if url.is_none() {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "[{backend}] database {} ({:.0} MiB)",
            path.display(),
            size as f64 / 1048576.0
        );
    }
    println!("{}", store.quarantine_table().expect("table"));

    measure(&store, backend, "round 1 (right after the fill)");
    measure(&store, backend, "round 2 (same queries again)");
    let t = Instant::now();
    store.sweep(NOW).expect("sweep");
    println!(
        "\n[{backend}] sweep (nothing due; refreshes planner statistics): {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    measure(
        &store,
        backend,
        "round 3 (after the sweep: fresh planner statistics)",
    );

    // Release rates: one transaction (one fsync) per release, and bulk (500 per transaction).
    let ids = store
        .search_ids(&SearchQuery {
            quarantine: Some("Outbreak".into()),
            ..SearchQuery::default()
        })
        .expect("ids");
    let actor = Actor::manual("bench");
    let single = ids.len().min(1000);
    let t = Instant::now();
    for &id in &ids[..single] {
        store
            .act(
                id,
                &Scope::Quarantine("Outbreak".into()),
                &Action::Release,
                &actor,
                NOW,
            )
            .expect("release");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "\n[{backend}] release one by one: {single} in {secs:.2} s ({:.0}/s)",
        single as f64 / secs
    );
    let bulk = &ids[single..ids.len().min(single + 20_000)];
    let t = Instant::now();
    store
        .bulk(
            bulk,
            &Scope::Quarantine("Outbreak".into()),
            &Action::Release,
            &actor,
            NOW,
        )
        .expect("bulk");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "[{backend}] release in bulk: {} in {secs:.2} s ({:.0}/s)",
        bulk.len(),
        bulk.len() as f64 / secs
    );
}
