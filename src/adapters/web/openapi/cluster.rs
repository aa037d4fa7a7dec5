//! The cluster endpoints' requests as the OpenAPI document describes them and `api::cluster`
//! checks them: which keys each changing `clusterconfig` action takes and needs, each
//! key's pattern, and the reply type of each action. A table of its own, imported by
//! both, so neither imports the other.

/// The changing actions of `clusterconfig`: (action, the body keys it takes, those it
/// needs). `level` is not a `clusterconfig` argument but the request's cluster level.
pub const CHANGES: &[(&str, &[&str], &[&str])] = &[
    (
        "create",
        &["name", "url", "ca", "machine", "address"],
        &["name", "url"],
    ),
    (
        "join",
        &[
            "url", "ca", "machine", "address", "group", "member", "user", "password", "host_key",
            "token",
        ],
        &[],
    ),
    ("addgroup", &["name"], &["name"]),
    ("setgroup", &["machine", "group"], &["machine", "group"]),
    ("renamegroup", &["name", "to"], &["name", "to"]),
    ("deletegroup", &["name", "to"], &["name"]),
    ("removemachine", &["name"], &["name"]),
    ("disconnect", &[], &[]),
    ("reconnect", &[], &[]),
    (
        "copysettings",
        &["section", "from", "to"],
        &["section", "from", "to"],
    ),
    (
        "movesettings",
        &["section", "from", "to"],
        &["section", "from", "to"],
    ),
    (
        "deletesettings",
        &["section", "level"],
        &["section", "level"],
    ),
    ("jointoken", &["expires"], &[]),
    ("jointoken-revoke", &["hash"], &["hash"]),
];

/// The largest name the cluster takes (`pvo_cluster::Name`).
pub const NAME: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$";
/// A cluster level as `--level` reads it.
pub const LEVEL: &str = "^(cluster|machine|machine:[A-Za-z0-9][A-Za-z0-9._-]{0,62}|group:[A-Za-z0-9][A-Za-z0-9._-]{0,62})$";
/// A configuration section's name.
pub const SECTION: &str = "^[a-z][a-z0-9_]{0,63}$";
/// The store's address: a URL, or PostgreSQL's `key=value` words separated by a space.
pub const URL: &str = "^(postgres(ql)?://[^\\s]{1,1000}|[a-z_]{1,32}=[^\\s]{0,1000}( [a-z_]{1,32}=[^\\s]{0,1000}){0,15})$";
/// A password: anything, on one line.
pub const PASSWORD: &str = "^[^\\r\\n]{1,1024}$";
/// A join token as `clusterconfig jointoken` prints it.
pub const TOKEN: &str = "^pvojoin1\\.[A-Za-z0-9_-]{1,400}\\.[A-Za-z0-9_-]{43}\\.[A-Za-z0-9_-]{43}$";
/// Minutes a join token works, 1 to 1440.
pub const MINUTES: &str = "^(14[0-3][0-9]|1440|1[0-3][0-9]{2}|[1-9][0-9]{0,2})$";
/// The beginning of a join token's hash (hex).
pub const HASH: &str = "^[0-9a-f]{8,64}$";
/// Anything but white space (an address, a CA file's name).
pub const WORD: &str = "^[^\\s]{1,255}$";

/// What a body key of `action` is: (pattern, description).
pub fn key_schema(action: &str, key: &str) -> (&'static str, &'static str) {
    match (action, key) {
        ("create", "name") => (NAME, "The cluster's name."),
        (_, "url") => (
            URL,
            "The cluster's PostgreSQL: postgresql://USER@HOST:PORT/DATABASE (or a Unix socket directory as host=).",
        ),
        (_, "ca") => (
            WORD,
            "The CA that signed the store's certificate: a file next to the configuration file.",
        ),
        (_, "machine") => (
            NAME,
            "The machine's name in the cluster (create and join: default its host name).",
        ),
        (_, "address") => (
            WORD,
            "The address this machine is known by in the cluster (default: its first interface's).",
        ),
        (_, "member") => (
            WORD,
            "Join over SSH: a member's SSH address (IP[:PORT]); it says where the store is (instead of url).",
        ),
        (_, "user") => (
            WORD,
            "Join over SSH: the Administrator account on the member (default admin).",
        ),
        (_, "password") => (
            PASSWORD,
            "Join over SSH: that account's password (not stored).",
        ),
        (_, "host_key") => (
            WORD,
            "Join over SSH: the member's SSH host key to pin (SHA256:...).",
        ),
        (_, "token") => (
            TOKEN,
            "Join with a single-use join token from `clusterconfig jointoken` on a member (instead of url or member).",
        ),
        (_, "expires") => (MINUTES, "Minutes the token works, 1 to 1440 (default 60)."),
        (_, "hash") => (
            HASH,
            "The beginning of the token's hash, at least 8 hex digits (`jointoken-list`).",
        ),
        ("join", "group") => (
            NAME,
            "The group to join (default: the cluster's main group).",
        ),
        (_, "group") => (NAME, "The group."),
        ("removemachine", "name") => (NAME, "The machine to remove."),
        (_, "name") => (NAME, "The group."),
        ("renamegroup", "to") => (NAME, "The group's new name."),
        ("deletegroup", "to") => (NAME, "The group its machines move to."),
        (_, "section") => (
            SECTION,
            "The section to copy, move or delete (listener, content_filter, tls, ...).",
        ),
        (_, "from") => (
            LEVEL,
            "The level it is taken from: cluster, group:NAME, machine or machine:NAME.",
        ),
        (_, "to") => (
            LEVEL,
            "The level it is put at: cluster, group:NAME, machine or machine:NAME.",
        ),
        (_, "level") => (
            LEVEL,
            "The level it is deleted from: cluster, group:NAME, machine or machine:NAME.",
        ),
        _ => (WORD, ""),
    }
}

/// The reply type of each changing action, for the document.
pub fn reply_of(action: &str) -> &'static str {
    match action {
        "create" => "ClusterCreated",
        "join" => "ClusterJoined",
        "joininfo" => "ClusterJoinInfo",
        "removemachine" => "ClusterMachineRemoved",
        "disconnect" | "reconnect" => "ClusterHold",
        "copysettings" | "movesettings" | "deletesettings" => "ClusterSettingsChanged",
        "jointoken" => "ClusterJoinToken",
        "jointoken-revoke" => "ClusterJoinTokenRevoked",
        _ => "ClusterMembersChanged",
    }
}

/// The patterns of [`key_schema`].
pub const PATTERNS: [&str; 9] = [
    NAME, LEVEL, SECTION, URL, WORD, PASSWORD, TOKEN, MINUTES, HASH,
];
