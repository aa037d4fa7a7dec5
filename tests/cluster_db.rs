//! The cluster's PostgreSQL store (`pvo::adapters::cluster_db`) against a real, private
//! PostgreSQL (`support::Postgres`): creating a cluster, commits and the stale-base
//! refusal, notifications, membership changes that are refused leaving nothing written,
//! who is connected, what a member sees when the server goes away, and TLS over TCP.

use std::time::Duration;

use pvo::adapters::cluster_db::{ClusterDb, Commit, DbError, Notice, UsersCommit};
use pvo_cluster::{Level, Members, Name};

use crate::support::{Namespace, Postgres};

fn n(s: &str) -> Name {
    Name::new(s).unwrap()
}

const GW1: &str = "[node]\nhostname = \"gw1\"\n";
const CLUSTER: &str = "[delivery]\nmax_concurrency = 10\n";

async fn created(pg: &Postgres) -> ClusterDb {
    let db = ClusterDb::connect(&pg.url(), "gw1", None).await.unwrap();
    let members = Members::create(n("east"), n("gw1"), "10.0.0.1".into());
    let head = db
        .create(
            &members,
            &[
                ("machine:gw1".parse().unwrap(), GW1.into()),
                (Level::Cluster, CLUSTER.into()),
            ],
            "admin",
        )
        .await
        .unwrap();
    assert_eq!(head, 2);
    db
}

fn commit(level: &str, base: u64, text: &str, author: &str) -> Commit {
    Commit {
        level: level.parse().unwrap(),
        base,
        text: Some(text.into()),
        author: author.into(),
        comment: format!("by {author}"),
    }
}

#[tokio::test]
async fn create_commit_and_read_back() {
    let pg = Postgres::start();
    let db = created(&pg).await;
    let again = db
        .create(&Members::create(n("x"), n("gw9"), "a".into()), &[], "admin")
        .await;
    assert!(
        matches!(again, Err(DbError::AlreadyCluster(ref c)) if c == "east"),
        "{again:?}"
    );

    let r = db
        .commit(&commit(
            "cluster",
            2,
            "[delivery]\nmax_concurrency = 20\n",
            "alice",
        ))
        .await
        .unwrap();
    assert_eq!((r.number, r.author.as_str()), (3, "alice"));
    assert!(r.at.ends_with(" UTC"), "{}", r.at);

    let snap = db.snapshot().await.unwrap();
    assert_eq!(snap.head, 3);
    let layers: Vec<(String, &str)> = snap
        .layers
        .iter()
        .map(|(l, t)| (l.to_string(), t.as_str()))
        .collect();
    assert_eq!(
        layers,
        [
            ("cluster".to_string(), "[delivery]\nmax_concurrency = 20\n"),
            ("machine:gw1".to_string(), GW1),
        ]
    );
    assert_eq!(snap.members.machines().count(), 1);
    assert_eq!(
        db.layer_at(&Level::Cluster, 2).await.unwrap().as_deref(),
        Some(CLUSTER)
    );
    let history = db.history(1).await.unwrap();
    assert_eq!(history.iter().map(|r| r.number).collect::<Vec<_>>(), [2, 3]);
}

#[tokio::test]
async fn the_second_of_two_stale_commits_is_refused_naming_the_first() {
    let pg = Postgres::start();
    let db = created(&pg).await;
    let other = ClusterDb::connect(&pg.url(), "gw2", None).await.unwrap();
    db.commit(&commit("cluster", 2, "[limits]\n", "alice"))
        .await
        .unwrap();
    let e = other
        .commit(&commit("cluster", 2, "[delivery]\n", "bob"))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("commit refused: cluster changed since revision 2"),
        "{text}"
    );
    assert!(text.contains("revision 3 at cluster by alice"), "{text}");
    // Nothing of bob's was written; a change at another level from the same base is not
    // a conflict.
    assert_eq!(db.snapshot().await.unwrap().head, 3);
    let r = other
        .commit(&commit("machine:gw1", 2, GW1, "bob"))
        .await
        .unwrap();
    assert_eq!(r.number, 4);
}

#[tokio::test]
async fn members_hear_commits_and_membership_changes() {
    let pg = Postgres::start();
    let db = created(&pg).await;
    let mut listener = db.listen().await.unwrap();
    db.commit(&commit("cluster", 2, "[limits]\n", "alice"))
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(1), listener.next()).await;
    assert_eq!(heard.unwrap(), Some(Notice::Revision(3)));

    let members = db
        .change_members(|m| m.join(n("gw2"), "10.0.0.2".into(), None))
        .await
        .unwrap();
    assert_eq!(members.machines().count(), 2);
    let heard = tokio::time::timeout(Duration::from_secs(1), listener.next()).await;
    assert_eq!(heard.unwrap(), Some(Notice::Members));

    // The server goes away: the listener ends, it does not hang.
    drop(pg);
    let end = tokio::time::timeout(Duration::from_secs(10), listener.next()).await;
    assert_eq!(end.unwrap(), None);
    let e = db.snapshot().await.unwrap_err();
    assert!(matches!(e, DbError::Lost(_)), "{e:?}");
}

#[tokio::test]
async fn a_refused_membership_change_writes_nothing() {
    let pg = Postgres::start();
    let db = created(&pg).await;
    let e = db
        .change_members(|m| {
            m.add_group(n("west"))?;
            m.join(n("gw2"), "10.0.0.1".into(), Some(n("west")))
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "gw1 already has the address 10.0.0.1: each machine needs its own address"
    );
    let snap = db.snapshot().await.unwrap();
    assert_eq!(
        snap.members.groups().count(),
        1,
        "the group added first is not kept"
    );
    assert_eq!(snap.members.machines().count(), 1);
}

#[tokio::test]
async fn who_is_connected_and_what_they_run() {
    let pg = Postgres::start();
    let db = created(&pg).await;
    db.change_members(|m| m.join(n("gw2"), "10.0.0.2".into(), None))
        .await
        .unwrap();
    db.report(&n("gw1"), 2).await.unwrap();
    assert!(matches!(
        db.report(&n("gw9"), 2).await,
        Err(DbError::Members(_))
    ));
    let snap = db.snapshot().await.unwrap();
    let states: Vec<String> = snap
        .states
        .iter()
        .map(|s| format!("{} {:?} {}", s.name, s.applied, s.connected))
        .collect();
    assert_eq!(states, ["gw1 Some(2) true", "gw2 None false"]);
    let gw2 = ClusterDb::connect(&pg.url(), "gw2", None).await.unwrap();
    let snap = gw2.snapshot().await.unwrap();
    assert!(snap.states.iter().all(|s| s.connected));
}

#[tokio::test]
async fn members_starting_together_migrate_once() {
    let pg = Postgres::start();
    let url = pg.url();
    let (a, b, c) = tokio::join!(
        ClusterDb::connect(&url, "a", None),
        ClusterDb::connect(&url, "b", None),
        ClusterDb::connect(&url, "c", None)
    );
    for db in [a, b, c] {
        assert!(matches!(
            db.unwrap().snapshot().await,
            Err(DbError::NoCluster)
        ));
    }
}

#[tokio::test]
async fn an_unreachable_store_is_named_with_the_fix() {
    let empty = tempfile::tempdir().unwrap();
    let url = format!(
        "host={} port=5432 user=pvo dbname=postgres",
        empty.path().display()
    );
    let e = match ClusterDb::connect(&url, "gw1", None).await {
        Err(e) => e,
        Ok(_) => panic!("connected to nothing"),
    };
    let text = e.to_string();
    assert!(matches!(e, DbError::Unreachable { .. }), "{text}");
    assert!(text.contains(&empty.path().display().to_string()), "{text}");
    assert!(
        text.ends_with("check that it runs and that [cluster] url names it"),
        "{text}"
    );
    let bad = ClusterDb::connect("postgresql://[", "gw1", None).await;
    assert!(matches!(bad, Err(DbError::BadUrl { .. })));
}

/// A CA and a server certificate for `ip` signed by it: (CA DER, server cert PEM, key PEM).
fn certificates(ip: &str) -> (rustls::pki_types::CertificateDer<'static>, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "cluster store test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![ip.to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.der().clone(), cert.pem(), key.serialize_pem())
}

fn trusting(
    ca: rustls::pki_types::CertificateDer<'static>,
) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[tokio::test]
async fn over_tcp_only_with_tls_and_the_right_ca() {
    let ns = Namespace::create();
    let (ca, cert, key) = certificates(&ns.inside());
    let pg = Postgres::start_tls_in(&ns, &cert, &key);

    let db = ClusterDb::connect(&pg.tcp_url(), "gw1", Some(trusting(ca.clone())))
        .await
        .unwrap();
    let members = Members::create(n("east"), n("gw1"), ns.inside());
    db.create(&members, &[(Level::Cluster, CLUSTER.into())], "admin")
        .await
        .unwrap();
    let mut listener = db.listen().await.unwrap();
    db.commit(&commit("cluster", 1, "[limits]\n", "alice"))
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(1), listener.next()).await;
    assert_eq!(heard.unwrap(), Some(Notice::Revision(2)));

    // A certificate from another CA is refused, naming why.
    let (other_ca, _, _) = certificates(&ns.inside());
    let e = ClusterDb::connect(&pg.tcp_url(), "gw2", Some(trusting(other_ca)))
        .await
        .err()
        .expect("an unknown CA is refused");
    let text = e.to_string();
    assert!(matches!(e, DbError::Unreachable { .. }), "{text}");
    assert!(
        text.contains("UnknownIssuer") || text.contains("certificate"),
        "{text}"
    );

    // Plaintext over TCP: the server refuses the session.
    let e = ClusterDb::connect(&pg.plain_tcp_url(), "gw2", None)
        .await
        .err()
        .expect("plaintext is refused");
    assert!(e.to_string().contains("no encryption"), "{e}");

    // Asking for TLS without saying whom to trust is a configuration error.
    let e = ClusterDb::connect(&pg.tcp_url(), "gw2", None)
        .await
        .err()
        .unwrap();
    assert!(matches!(e, DbError::BadUrl { .. }), "{e}");
}

#[tokio::test]
async fn each_machine_reports_its_features_and_enrollment_and_several_changes_commit_together_or_not_at_all(
) {
    let pg = Postgres::start();
    let db = created(&pg).await;
    let snap = db.snapshot().await.unwrap();
    assert!(snap.features.is_empty() && snap.cpq.is_empty());
    let enrolled = r#"{"id":"gw1","certificate":"gw1"}"#;
    db.report_facts(
        &n("gw1"),
        &["antivirus".into(), "dlp".into()],
        Some(enrolled),
    )
    .await
    .unwrap();
    let snap = db.snapshot().await.unwrap();
    assert_eq!(
        snap.features,
        vec![(n("gw1"), vec!["antivirus".to_string(), "dlp".to_string()])]
    );
    assert_eq!(snap.cpq, vec![(n("gw1"), enrolled.to_string())]);

    // Two levels in one transaction: consecutive revisions, one notice for the last.
    let mut listener = db.listen().await.unwrap();
    let both = db
        .commit_all(&[
            commit("cluster", 2, "[limits]\n", "alice"),
            commit("machine:gw1", 2, GW1, "alice"),
        ])
        .await
        .unwrap();
    assert_eq!(both.iter().map(|r| r.number).collect::<Vec<_>>(), [3, 4]);
    let heard = tokio::time::timeout(Duration::from_secs(5), listener.next()).await;
    assert_eq!(heard.unwrap(), Some(Notice::Revision(4)));
    // One stale change refuses the other too.
    let e = db
        .commit_all(&[
            commit("group:Main_Group", 4, "[logs]\n", "bob"),
            commit("cluster", 2, "[logs]\n", "bob"),
        ])
        .await
        .unwrap_err();
    assert!(matches!(e, DbError::Conflict(_)), "{e}");
    assert_eq!(db.snapshot().await.unwrap().head, 4);
}

#[tokio::test]
async fn a_store_a_newer_pvo_set_up_is_refused_naming_the_versions() {
    let pg = Postgres::start();
    let db = created(&pg).await;
    drop(db);
    let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "INSERT INTO pvo_cluster.migration (version) VALUES (99)",
            &[],
        )
        .await
        .unwrap();
    let e = ClusterDb::connect(&pg.url(), "gw2", None)
        .await
        .err()
        .expect("a newer schema is refused");
    assert!(matches!(e, DbError::TooNew { schema: 99, .. }), "{e}");
    assert!(e.to_string().contains("upgrade this machine"), "{e}");
}

fn users_change(base: u64, users: &str, author: &str, machine: &str, what: &str) -> UsersCommit {
    UsersCommit {
        base,
        users: users.into(),
        author: author.into(),
        machine: machine.into(),
        what: what.into(),
    }
}

#[tokio::test]
async fn the_user_base_is_a_sequence_of_revisions_refusing_a_stale_base() {
    let pg = Postgres::start();
    let db = created(&pg).await;
    let other = ClusterDb::connect(&pg.url(), "gw2", None).await.unwrap();
    assert_eq!(db.users().await.unwrap(), None);
    let mut listener = other.listen().await.unwrap();

    let r = db
        .commit_users(&users_change(
            0,
            "{\"v\":1}",
            "admin",
            "gw1",
            "the users of gw1",
        ))
        .await
        .unwrap();
    assert_eq!((r.number, r.machine.as_str()), (1, "gw1"));
    assert!(r.at.ends_with(" UTC"), "{}", r.at);
    let heard = tokio::time::timeout(Duration::from_secs(1), listener.next()).await;
    assert_eq!(heard.unwrap(), Some(Notice::Users(1)));

    // Two members from the same revision: the first is written, the second refused
    // naming who changed what on which machine, and nothing of it is written.
    let first = other
        .commit_users(&users_change(
            1,
            "{\"v\":2}",
            "alice",
            "gw2",
            "userconfig new carol",
        ))
        .await
        .unwrap();
    assert_eq!(first.number, 2);
    let e = db
        .commit_users(&users_change(
            1,
            "{\"v\":3}",
            "bob",
            "gw1",
            "userconfig new dave",
        ))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, DbError::UsersConflict(ref c) if c.base == 1 && c.between.len() == 1),
        "{text}"
    );
    assert!(
        text.starts_with("the cluster's users changed since users revision 1, which this machine's copy is from:\n  users revision 2 by alice on gw2 ("),
        "{text}"
    );
    assert!(text.ends_with("): userconfig new carol\nThis machine takes them within a second: look at them (`userconfig list`) and make your change again."), "{text}");
    let now = db.users().await.unwrap().unwrap();
    assert_eq!((now.revision.number, now.users.as_str()), (2, "{\"v\":2}"));
    assert_eq!(now.revision.what, "userconfig new carol");
    // From the newest revision it goes through; configuration revisions are another
    // sequence and do not conflict with it.
    db.commit(&commit("cluster", 2, "[limits]\n", "bob"))
        .await
        .unwrap();
    let r = db
        .commit_users(&users_change(
            2,
            "{\"v\":4}",
            "bob",
            "gw1",
            "userconfig new dave",
        ))
        .await
        .unwrap();
    assert_eq!(r.number, 3);
    let history = db.users_history(0).await.unwrap();
    let whats: Vec<&str> = history.iter().map(|r| r.what.as_str()).collect();
    assert_eq!(
        whats,
        [
            "the users of gw1",
            "userconfig new carol",
            "userconfig new dave"
        ]
    );
    assert_eq!(db.snapshot().await.unwrap().head, 3);
}

#[tokio::test]
async fn a_user_change_while_the_store_is_stopped_is_unavailable_and_later_goes_through() {
    let mut pg = Postgres::start();
    let db = created(&pg).await;
    db.commit_users(&users_change(0, "{}", "admin", "gw1", "first"))
        .await
        .unwrap();
    pg.stop();
    let e = db
        .commit_users(&users_change(1, "{}", "admin", "gw1", "second"))
        .await
        .unwrap_err();
    assert!(e.unavailable(), "{e:?}");
    pg.start_again();
    let db = ClusterDb::connect(&pg.url(), "gw1", None).await.unwrap();
    let r = db
        .commit_users(&users_change(1, "{}", "admin", "gw1", "second"))
        .await
        .unwrap();
    assert_eq!(r.number, 2);
}

fn hash(byte: u8) -> String {
    pvo::core::cluster::store::token_hash(&[byte; 32])
}

fn spend(h: &str, machine: &str) -> pvo::adapters::cluster_db::TokenUse {
    pvo::adapters::cluster_db::TokenUse {
        hash: h.into(),
        machine: machine.into(),
    }
}

/// Join tokens: made, listed (only those that work), claimed by one machine, spent in
/// the join's own transaction (a refused join spends nothing, a spent token joins
/// nothing), revoked by a prefix.
#[tokio::test]
async fn a_join_token_is_claimed_and_spent_in_the_join_transaction() {
    use pvo::adapters::cluster_db::TokenRefused as T;
    let pg = Postgres::start();
    let db = created(&pg).await;
    let (a, b) = (hash(1), hash(2));
    let made = db.make_token(&a, 60, "admin").await.unwrap();
    assert_eq!((made.short(), made.created_by.as_str()), (&a[..8], "admin"));
    db.make_token(&b, 5, "alice").await.unwrap();
    let listed: Vec<String> = db
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.hash)
        .collect();
    assert_eq!(listed, [a.clone(), b.clone()]);
    db.check_token(&a).await.unwrap();
    assert!(matches!(
        db.check_token(&hash(3)).await,
        Err(DbError::Token(T::Unknown))
    ));

    // Claimed by gw2: gw3 is refused naming gw2; gw2 may claim again.
    db.claim_token(&a, "gw2").await.unwrap();
    db.claim_token(&a, "gw2").await.unwrap();
    let e = db.claim_token(&a, "gw3").await.unwrap_err();
    assert!(
        matches!(&e, DbError::Token(T::Claimed { by }) if by == "gw2"),
        "{e}"
    );

    // gw3 cannot spend it in a join either; nothing is written.
    let e = db
        .join_with(
            |m| m.join(n("gw3"), "10.0.0.3".into(), None),
            &[],
            Some(&spend(&a, "gw3")),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DbError::Token(T::Claimed { .. })), "{e}");
    assert!(db
        .snapshot()
        .await
        .unwrap()
        .members
        .machine(&n("gw3"))
        .is_err());

    // A join refused for another reason (the address is taken) spends nothing.
    let e = db
        .join_with(
            |m| m.join(n("gw2"), "10.0.0.1".into(), None),
            &[],
            Some(&spend(&a, "gw2")),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DbError::Members(_)), "{e}");
    db.check_token(&a).await.unwrap();

    // gw2 joins with it: spent, no longer listed, and refused naming gw2 from then on.
    db.join_with(
        |m| m.join(n("gw2"), "10.0.0.2".into(), None),
        &[commit(
            "machine:gw2",
            2,
            "[node]\nhostname = \"gw2\"\n",
            "admin",
        )],
        Some(&spend(&a, "gw2")),
    )
    .await
    .unwrap();
    let listed: Vec<String> = db
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.hash)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&b));
    let e = db.check_token(&a).await.unwrap_err();
    assert!(
        matches!(&e, DbError::Token(T::Used { by, .. }) if by == "gw2"),
        "{e}"
    );
    assert!(e.to_string().contains("machine gw2 joined with it"), "{e}");
    let e = db
        .join_with(
            |m| m.join(n("gw4"), "10.0.0.4".into(), None),
            &[],
            Some(&spend(&a, "gw4")),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DbError::Token(T::Used { .. })), "{e}");

    // Revoke by prefix: a prefix of no token, then the token's own.
    assert!(matches!(
        db.revoke_token("ffffffffzz", "admin").await,
        Err(DbError::Token(T::NoPrefix(_)))
    ));
    let r = db.revoke_token(&b[..8], "admin").await.unwrap();
    assert_eq!(r.hash, b);
    let e = db.check_token(&b).await.unwrap_err();
    assert!(
        matches!(&e, DbError::Token(T::Revoked { by, .. }) if by == "admin"),
        "{e}"
    );
    assert!(db.tokens().await.unwrap().is_empty());
}

/// Two machines spending one token at once: exactly one joins.
#[tokio::test]
async fn of_two_joins_with_one_token_one_wins() {
    let pg = Postgres::start();
    let db = created(&pg).await;
    let db2 = ClusterDb::connect(&pg.url(), "gw3", None).await.unwrap();
    let t = hash(7);
    db.make_token(&t, 60, "admin").await.unwrap();
    let (s2, s3) = (spend(&t, "gw2"), spend(&t, "gw3"));
    let (r2, r3) = tokio::join!(
        db.join_with(
            |m| m.join(n("gw2"), "10.0.0.2".into(), None),
            &[],
            Some(&s2)
        ),
        db2.join_with(
            |m| m.join(n("gw3"), "10.0.0.3".into(), None),
            &[],
            Some(&s3)
        ),
    );
    assert_eq!(r2.is_ok() as u8 + r3.is_ok() as u8, 1, "{r2:?} {r3:?}");
    let loser = r2.err().or(r3.err()).unwrap();
    assert!(
        matches!(
            loser,
            DbError::Token(pvo::adapters::cluster_db::TokenRefused::Used { .. })
        ),
        "{loser}"
    );
    assert_eq!(db.snapshot().await.unwrap().members.machines().count(), 2);
}
