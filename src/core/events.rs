//! The catalogue of `mail_logs` lines: every line a node writes is one [`Event`], with
//! typed fields (ICID, MID, DCID, RIDs, addresses, counts, causes), and its wording is
//! here and nowhere else.
//!
//! The wording is a compatibility surface: administrators and their scripts grep for
//! `New SMTP ICID`, `Message finished MID`, `Bounced: DCID` and the like, as on the
//! commercial appliance, so a rendering must never change by accident. Each line form
//! has a test below with its exact text.
//!
//! An event is emitted with [`crate::core::mail_log::MailLog::emit`], which renders it, writes
//! the line at the event's [`Level`], bumps the node counters that count the same fact
//! ([`Tally`]: a recipient refused by the RAT, a bounced recipient, a message received),
//! and emits a `tracing` debug event carrying the event's ICID, MID and DCID as fields,
//! so debug output can be followed per connection, message and delivery connection.
//!
//! The quarantine lines whose words the quarantine engine shares with the manager
//! (`quarantined to`, `released from`, ...) are rendered by `pvo_quarantine::logline`,
//! which the engine's own tests pin; this catalogue names them as events like the rest.

use std::fmt::{self, Display};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pvo_quarantine::logline;
use pvo_quarantine::{ActionReport, Change, Outcome, Reason};

/// The level word of a line (`Info:`, `Warning:`, `Critical:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "Info",
            Level::Warning => "Warning",
            Level::Critical => "Critical",
        }
    }
}

/// The appliance's timestamp of a line and of times in lines:
/// `Fri Sep 13 15:08:02 2013` for a Unix time, in UTC.
pub fn ctime(secs: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS[t.weekday().number_days_from_monday() as usize],
        MONTHS[t.month() as usize - 1],
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.year()
    )
}

/// A cause or value shown as it displays itself (an error, a reply line, an address).
type D<'a> = &'a dyn Display;

/// Where a delivery goes: the next hop, the manager (CPQ transfer), or back to a gateway
/// (a CPQ release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    Next,
    Cpq,
    Release,
}

/// The SSH and web servers of a node, for their `listening` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Ssh,
    Web,
}

/// What start-up and the periodic writers found about the node's small state files: kept
/// until the log can take it (a failure is found where no log is at hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `run/ids` could be written again after a failure.
    IdsWrittenAgain { path: PathBuf },
    /// `run/ids` could not be written: numbers from `on_disk` (MID, ICID, DCID) could be
    /// given twice after a crash. `error` is the cause with its chain.
    IdsNotWritten {
        path: PathBuf,
        error: String,
        on_disk: [u64; 3],
    },
    /// The lifetime counters could be written again after a failure.
    CountersWrittenAgain { path: PathBuf },
    /// The lifetime counters could not be written; `error` is the cause with its chain.
    CountersNotWritten { path: PathBuf, error: String },
}

impl Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::IdsWrittenAgain { path } => write!(
                f,
                "MID, ICID and DCID counters written to {} again",
                path.display()
            ),
            Notice::IdsNotWritten {
                path,
                error,
                on_disk: d,
            } => write!(
                f,
                "MID, ICID and DCID counters could not be written to {}: {error}; numbers go on \
                 in memory, but a crash before the file is written again would give MIDs from \
                 {}, ICIDs from {} and DCIDs from {} a second time",
                path.display(),
                d[0],
                d[1],
                d[2]
            ),
            Notice::CountersWrittenAgain { path } => {
                write!(f, "Lifetime counters written to {} again", path.display())
            }
            Notice::CountersNotWritten { path, error } => write!(
                f,
                "Lifetime counters could not be written to {}: {error}; they are kept in memory \
                 and written again every 10 seconds",
                path.display()
            ),
        }
    }
}

/// One `mail_logs` line.
#[derive(Clone, Copy)]
pub enum Event<'a> {
    // --- the node ---
    Starting {
        version: &'a str,
        hostname: &'a str,
        role: &'a str,
    },
    ShuttingDown,
    Notice(&'a Notice),
    SpoolFileMovedAside {
        from: &'a Path,
        to: &'a Path,
        reason: D<'a>,
    },
    UnreadableEnvelope {
        mid: u64,
        error: D<'a>,
    },
    UnreadableProgress {
        mid: u64,
        error: D<'a>,
    },
    Recovered {
        messages: usize,
    },
    ListenerListening {
        name: &'a str,
        addr: SocketAddr,
    },
    ListenerRemoved {
        name: &'a str,
    },
    ServerListening {
        server: Server,
        addr: SocketAddr,
    },
    ServerStopped {
        server: Server,
        addr: SocketAddr,
        grace_secs: u64,
    },
    /// The writer's own report of lines it could not write (timestamps already rendered).
    LinesLost {
        lines: u64,
        path: &'a Path,
        first: &'a str,
        last: &'a str,
        error: &'a str,
    },

    // --- an inbound connection (ICID) ---
    Connection {
        icid: u64,
        cpq: bool,
        interface: &'a str,
        interface_address: IpAddr,
        address: IpAddr,
        rdns_host: Option<&'a str>,
        verified: bool,
    },
    HatNoMatch {
        icid: u64,
    },
    HatMatch {
        icid: u64,
        behavior: &'a str,
        group: &'a str,
        matched: D<'a>,
    },
    Refused {
        icid: u64,
        why: D<'a>,
    },
    Close {
        icid: u64,
    },
    IdleUnderPressure {
        icid: u64,
        idle_secs: u64,
        policy: &'a str,
        open: usize,
        max: usize,
    },
    TlsSuccess {
        icid: u64,
        protocol: D<'a>,
        cipher: D<'a>,
        /// The CPQ peer's verified certificate name.
        peer: Option<&'a str>,
    },
    TlsFailed {
        icid: u64,
        why: D<'a>,
    },
    TlsTimeout {
        icid: u64,
    },
    Timeout {
        icid: u64,
        which: &'a str,
    },
    BadCommandLimit {
        icid: u64,
    },
    CommandLimit {
        icid: u64,
        limit: u64,
    },
    CertificateNoLongerAccepted {
        icid: u64,
        why: D<'a>,
    },
    MetaRefusedIdMismatch {
        icid: u64,
        gateway: &'a str,
        peer: &'a str,
    },
    MetaRefusedNotEnrolled {
        icid: u64,
        gateway: &'a str,
    },
    MetaRefusedOtherGateway {
        icid: u64,
        release: &'a str,
        gateway: &'a str,
        own: &'a str,
    },

    // --- a transaction (MID within an ICID) ---
    Start {
        mid: u64,
        icid: u64,
    },
    From {
        mid: u64,
        icid: u64,
        sender: &'a str,
    },
    To {
        mid: u64,
        icid: u64,
        rid: usize,
        address: D<'a>,
    },
    RcptRejected {
        mid: u64,
        icid: u64,
        rid: usize,
        error: D<'a>,
    },
    RatRejected {
        mid: u64,
        icid: u64,
        address: D<'a>,
    },
    RatRejectedRouting {
        mid: u64,
        icid: u64,
        address: D<'a>,
    },
    Aborted {
        mid: u64,
        why: &'a str,
    },
    SizeExceeded {
        mid: u64,
        icid: u64,
        max: u64,
    },
    NulRefused {
        mid: u64,
        icid: u64,
        nuls: usize,
    },
    BareLineEndings {
        mid: u64,
        icid: u64,
        count: usize,
    },
    SpoolWriteFailed {
        mid: u64,
        icid: u64,
        why: D<'a>,
    },
    /// A message received over SMTP is spooled (the `ready` line, counted as received).
    Received {
        mid: u64,
        bytes: usize,
        sender: &'a str,
        recipients: usize,
    },

    // --- a message (MID) ---
    Ready {
        mid: u64,
        bytes: usize,
        sender: &'a str,
    },
    Queued {
        mid: u64,
    },
    Finished {
        mid: u64,
    },
    ScanReadFailed {
        mid: u64,
        error: D<'a>,
    },
    ScanDeferred {
        mid: u64,
        error: D<'a>,
        retry_secs: u64,
    },
    PolicyMatched {
        mid: u64,
        policy: &'a str,
        outgoing: bool,
    },
    AntivirusNegative {
        mid: u64,
    },
    AntivirusPositive {
        mid: u64,
        signature: &'a str,
    },
    AntivirusUnscannable {
        mid: u64,
        what: &'a dyn fmt::Debug,
    },
    Unscannable {
        mid: u64,
        why: D<'a>,
    },
    ContentFilterMatched {
        mid: u64,
        filter: &'a str,
    },
    DlpViolation {
        mid: u64,
        severity: &'a dyn fmt::Debug,
        risk: D<'a>,
        policy: &'a str,
    },
    OutbreakPositive {
        mid: u64,
        level: D<'a>,
        rule: &'a str,
    },
    OutbreakNegative {
        mid: u64,
    },
    Dropped {
        mid: u64,
        by: &'a str,
    },
    BouncedBy {
        mid: u64,
        by: &'a str,
    },
    Quarantined {
        mid: u64,
        quarantine: &'a str,
        reason: &'a Reason,
    },
    QuarantinedCentralized {
        mid: u64,
        quarantine: &'a str,
        reason: &'a Reason,
    },
    QuarantineFailed {
        mid: u64,
        error: D<'a>,
    },
    Rewritten {
        mid: u64,
        new_mid: u64,
        by: &'a str,
    },
    RewrittenByContentFilter {
        mid: u64,
        new_mid: u64,
    },
    RewrittenByQuarantine {
        mid: u64,
        new_mid: u64,
        quarantine: &'a str,
    },
    RewrittenCentralized {
        mid: u64,
        new_mid: u64,
    },
    RewrittenNotSpooled {
        mid: u64,
        error: D<'a>,
    },
    RewrittenNotSpooledRescan {
        mid: u64,
        error: D<'a>,
    },

    // --- delivery (DCID) ---
    DeliveryConnection {
        dcid: u64,
        interface: &'a str,
        address: IpAddr,
        port: u16,
    },
    DeliveryClose {
        dcid: u64,
    },
    TlsRequired {
        dcid: u64,
    },
    StartTlsRefused {
        dcid: u64,
        reply: D<'a>,
    },
    DeliveryTlsSuccess {
        dcid: u64,
        protocol: D<'a>,
        cipher: D<'a>,
        domain: &'a str,
    },
    DeliveryTlsFailed {
        dcid: u64,
        why: D<'a>,
    },
    DeliveryStart {
        dcid: u64,
        mid: u64,
        rids: &'a [u32],
        dest: Dest,
        /// The gateway of a release.
        gateway: &'a str,
    },
    MetaRefusedByPeer {
        dcid: u64,
        mid: u64,
        reply: D<'a>,
    },
    SenderUnsendable {
        dcid: u64,
        mid: u64,
        error: D<'a>,
    },
    RecipientUnsendable {
        dcid: u64,
        mid: u64,
        rid: u32,
        error: D<'a>,
    },
    Done {
        dcid: u64,
        mid: u64,
        rids: &'a [u32],
        dest: Dest,
    },
    CpqResponse {
        mid: u64,
        rids: &'a [u32],
        text: D<'a>,
    },
    ControlAnswered {
        dcid: u64,
        reply: D<'a>,
    },

    // --- the queue ---
    BouncedByServer {
        dcid: u64,
        mid: u64,
        rid: u32,
        reason: D<'a>,
    },
    BouncedUndeliverable {
        dcid: u64,
        mid: u64,
        rid: u32,
        why: D<'a>,
        reason: D<'a>,
    },
    BouncedByAdministrator {
        mid: u64,
        rid: u32,
    },
    Delayed {
        dcid: u64,
        mid: u64,
        rids: &'a [u32],
        reason: D<'a>,
    },
    DeletedByAdministrator {
        mid: u64,
        rid: u32,
    },
    BounceGenerated {
        mid: u64,
        of: u64,
    },
    BounceNotSpooled {
        of: u64,
        error: D<'a>,
    },
    NotificationGenerated {
        mid: u64,
        of: u64,
    },
    NotificationNotSpooled {
        of: u64,
        error: D<'a>,
    },

    // --- quarantines ---
    QuarantineChanged {
        mid: u64,
        change: &'a Change,
    },
    ReleasedFromAll {
        mid: u64,
    },
    QuarantineMoved {
        mid: u64,
        from: &'a str,
        to: &'a str,
    },
    InterruptedReleasesUnlisted {
        error: D<'a>,
    },
    SweepFailed {
        error: D<'a>,
    },
    /// This manager runs the deployment's expiry sweeps and free-up space now (it holds
    /// the leader lock of the shared store).
    SweepLeaderGained {
        deployment: &'a str,
    },
    /// Another manager runs them now (this one's lock was lost: its store connection broke).
    SweepLeaderLost {
        deployment: &'a str,
    },
    /// Releases another manager made but did not queue (it stopped), queued by this one.
    ReleasesTakenOver {
        count: usize,
    },
    ReleasedUnreadable {
        mid: u64,
        error: D<'a>,
    },
    ReleaseNotQueued {
        mid: u64,
        error: D<'a>,
    },
    ReleaseNotQueuedToGateway {
        mid: u64,
        gateway: &'a str,
        error: D<'a>,
    },
    QueuedToGatewayUnrecorded {
        mid: u64,
        error: D<'a>,
    },
    DeliveredUnrecorded {
        mid: u64,
        new_mid: u64,
        error: D<'a>,
    },
    StoreFailure {
        error: D<'a>,
    },
    QuarantineCreated {
        name: &'a str,
        by: D<'a>,
    },
    QuarantineSettingsChanged {
        name: &'a str,
        by: D<'a>,
    },
    QuarantineDeleted {
        name: &'a str,
        by: D<'a>,
    },
    CopySent {
        mid: u64,
        to: &'a [String],
        new_mid: u64,
        by: D<'a>,
    },

    // --- outbreak rules ---
    OutbreakRulesUpdated {
        version: &'a str,
        rules: usize,
        from: &'a Path,
        kept: Option<&'a Path>,
    },
    OutbreakCopyUnusable {
        dir: &'a Path,
        error: D<'a>,
    },
    NoOutbreakRules {
        why: D<'a>,
    },
    OutbreakRulesInForce {
        version: D<'a>,
        rules: usize,
        from: &'a Path,
        origin: &'a str,
        /// When the persisted copy was made and where it is.
        kept: Option<(u64, &'a Path)>,
        why: D<'a>,
    },
    OutbreakRulesChanged {
        version: &'a str,
        rules: usize,
        from: &'a Path,
        kept: Option<&'a Path>,
    },
    OutbreakRulesUnrecorded {
        error: D<'a>,
        dir: &'a Path,
    },
    OutbreakCopyNotKept {
        mid: u64,
        error: D<'a>,
    },
    RescannedClean {
        mid: u64,
    },
    RescanNotTold {
        clean: usize,
        error: D<'a>,
    },

    // --- CPQ, gateway side ---
    QueuedForCpq {
        mid: u64,
        host: &'a str,
    },
    ReleaseSettled {
        release: &'a str,
    },
    ReleaseRepeated {
        icid: u64,
        release: &'a str,
        mid: u64,
    },
    ReleaseNotPending {
        icid: u64,
        release: &'a str,
        error: D<'a>,
    },
    ReleaseReceived {
        mid: u64,
        icid: u64,
        by: D<'a>,
        peer: D<'a>,
        original: u64,
        release: &'a str,
    },
    ReleaseUnrecorded {
        mid: u64,
        release: &'a str,
        error: D<'a>,
    },
    ReleaseNotSpooled {
        icid: u64,
        release: &'a str,
        error: D<'a>,
    },
    GatewayEndpoint {
        gateway: &'a str,
        address: D<'a>,
        port: u16,
    },
    GatewayEndpointUnknown {
        gateway: &'a str,
        error: D<'a>,
    },
    GatewayStatusFailed {
        gateway: &'a str,
        why: D<'a>,
    },

    // --- CPQ, manager side ---
    TransferReceived {
        mid: u64,
        icid: u64,
        sender: &'a str,
        bytes: usize,
        gateway: &'a str,
        gateway_mid: u64,
        transfer: D<'a>,
    },
    TransferRepeated {
        icid: u64,
        transfer: D<'a>,
        gateway: &'a str,
        mid: u64,
    },
    TransferNotStored {
        icid: u64,
        transfer: D<'a>,
        gateway: &'a str,
        error: D<'a>,
    },
    Preflight {
        icid: u64,
        gateway: &'a str,
        answer: D<'a>,
    },
    ControlDone {
        icid: u64,
        release: bool,
        gateway: &'a str,
        mid: u64,
    },
    ControlFailed {
        icid: u64,
        error: D<'a>,
    },
    ReleaseQueued {
        mid: u64,
        manager_mid: u64,
        gateway: &'a str,
        gateway_mid: u64,
        host: &'a str,
    },
    ReleasesUnrecorded {
        error: D<'a>,
    },

    // --- migration of local quarantines to the manager ---
    MigrationUnreadable {
        error: D<'a>,
    },
    MigrationError {
        why: D<'a>,
    },
    MigrationStarted {
        messages: u64,
    },
    MigrationResumed {
        done: u64,
        total: u64,
    },
    MigrationFinished {
        messages: u64,
    },
    MigrationLeft {
        mid: u64,
        copy: u64,
    },
    Migrating {
        mid: u64,
        quarantines: &'a [&'a str],
        copy: u64,
        transfer: D<'a>,
    },
    MigrationNotified {
        mid: u64,
    },
    MigrationNotificationFailed {
        error: D<'a>,
    },

    // --- administration ---
    Committed {
        by: D<'a>,
        commit: u64,
        comment: D<'a>,
    },
    RolledBack {
        to: u64,
        by: D<'a>,
        commit: u64,
    },

    // --- feature keys (`featurekey`) ---
    FeatureKeyInstalled {
        /// The feature's title (`Anti-Virus`).
        feature: &'a str,
        key: D<'a>,
        /// `valid until 2027-12-31 23:59:59 GMT` or `no expiry`.
        until: D<'a>,
        by: D<'a>,
        renewed: bool,
    },
    FeatureKeyRemoved {
        feature: &'a str,
        /// The feature's name in commands (`antivirus`).
        command: &'a str,
        by: D<'a>,
    },
    FeatureKeyExpired {
        feature: &'a str,
        command: &'a str,
    },
    /// A mail policy would run an engine whose feature has no active key here.
    FeatureSkipped {
        mid: u64,
        feature: &'a str,
    },

    // --- cluster ---
    ClusterConnected {
        machine: D<'a>,
        store: D<'a>,
        revision: u64,
    },
    ClusterDisconnected {
        machine: D<'a>,
        why: D<'a>,
        revision: u64,
    },
    ClusterApplied {
        machine: D<'a>,
        revision: u64,
        by: D<'a>,
        level: D<'a>,
    },
    ClusterNotApplied {
        machine: D<'a>,
        revision: u64,
        why: D<'a>,
        running: u64,
    },
    ClusterCommitted {
        by: D<'a>,
        revision: u64,
        level: D<'a>,
        comment: D<'a>,
    },
    ClusterMembers {
        by: D<'a>,
        what: D<'a>,
    },
    /// A member took a revision of the cluster's user base.
    ClusterUsersApplied {
        machine: D<'a>,
        revision: u64,
        by: D<'a>,
        on: D<'a>,
        what: D<'a>,
    },
    /// A revision of the cluster's user base this member cannot use.
    ClusterUsersNotApplied {
        machine: D<'a>,
        revision: u64,
        why: D<'a>,
        running: u64,
    },
    /// A change of the cluster's user base made on this member.
    ClusterUsersCommitted {
        by: D<'a>,
        revision: u64,
        what: D<'a>,
    },
    /// `clusterconfig jointoken`: `token` is the first 8 hex digits of its hash.
    JoinTokenMade {
        token: &'a str,
        by: &'a str,
        expires: &'a str,
    },
    /// A joining machine logged in over SSH with a token that works.
    JoinTokenLogin {
        token: &'a str,
        from: D<'a>,
    },
    /// The member's joininfo claimed a token for the joining machine.
    JoinTokenClaimed {
        token: &'a str,
        machine: &'a str,
    },
    /// A machine joined with the token (it is spent).
    JoinTokenUsed {
        token: &'a str,
        machine: &'a str,
    },
    /// A token refused: at an SSH login (`what` = `an SSH login from ADDR`), a claim or
    /// a join (`what` = `machine NAME`).
    JoinTokenRefused {
        what: D<'a>,
        why: D<'a>,
    },
    JoinTokenRevoked {
        token: &'a str,
        by: &'a str,
    },
    LoginThrottled {
        user: &'a str,
        from: D<'a>,
        throttle: D<'a>,
    },
    CertificateRevoked {
        serial: D<'a>,
        subject: &'a str,
        by: &'a str,
    },
    Redirected {
        host: D<'a>,
        port: u16,
        recipients: usize,
    },
    ReceivingSuspended {
        listeners: &'a [String],
    },
    ReceivingResumed {
        listeners: &'a [String],
    },
    StaysSuspended {
        why: D<'a>,
    },
    DeliverySuspended,
    DeliveryResumed,
    AuditNotRecorded {
        what: D<'a>,
        error: D<'a>,
    },
    SelfSignedRenewed {
        hostname: &'a str,
        why: D<'a>,
    },
    SelfSignedNotRenewed {
        error: D<'a>,
    },
}

/// The ids an event is about, for `tracing` fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ids {
    pub icid: Option<u64>,
    pub mid: Option<u64>,
    pub dcid: Option<u64>,
}

/// The node counters that count what an event says (kept with the log, read by `status`
/// and `/metrics` through `node::Counters`).
#[derive(Debug, Default)]
pub struct Tally {
    pub connections_in: Arc<AtomicU64>,
    pub messages_received: Arc<AtomicU64>,
    pub recipients_received: Arc<AtomicU64>,
    pub rejected_recipients: Arc<AtomicU64>,
    pub bounced_rcpts: Arc<AtomicU64>,
}

impl Tally {
    /// Counts what `e` says happened.
    pub fn count(&self, e: &Event<'_>) {
        let add = |c: &AtomicU64, n: usize| {
            c.fetch_add(n as u64, Ordering::Relaxed);
        };
        match e {
            Event::Connection { .. } => add(&self.connections_in, 1),
            Event::RatRejected { .. } | Event::RatRejectedRouting { .. } => {
                add(&self.rejected_recipients, 1)
            }
            Event::Received { recipients, .. } => {
                add(&self.messages_received, 1);
                add(&self.recipients_received, *recipients);
            }
            Event::BouncedByServer { .. }
            | Event::BouncedUndeliverable { .. }
            | Event::BouncedByAdministrator { .. } => add(&self.bounced_rcpts, 1),
            _ => {}
        }
    }
}

/// The events of a quarantine action's report, in the order of
/// [`ActionReport::log_lines`]: one per changed membership, then `released from all
/// quarantines` when the message is to be delivered.
pub fn report_events(mid: u64, r: &ActionReport) -> impl Iterator<Item = Event<'_>> {
    r.changes
        .iter()
        .map(move |change| Event::QuarantineChanged { mid, change })
        .chain(
            matches!(r.outcome, Outcome::Deliver { .. }).then_some(Event::ReleasedFromAll { mid }),
        )
}

/// `1, 2, 3`
struct Rids<'a>(&'a [u32]);

impl Display for Rids<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl Event<'_> {
    /// The level the line is written at.
    pub fn level(&self) -> Level {
        use Event::*;
        match self {
            Notice(_)
            | SpoolFileMovedAside { .. }
            | UnreadableProgress { .. }
            | LinesLost { .. }
            | ScanDeferred { .. }
            | QueuedToGatewayUnrecorded { .. }
            | DeliveredUnrecorded { .. }
            | StoreFailure { .. }
            | OutbreakCopyUnusable { .. }
            | OutbreakRulesUnrecorded { .. }
            | OutbreakCopyNotKept { .. }
            | RescanNotTold { .. }
            | ReleaseUnrecorded { .. }
            | GatewayEndpointUnknown { .. }
            | GatewayStatusFailed { .. }
            | ReleasesUnrecorded { .. }
            | MigrationError { .. }
            | LoginThrottled { .. }
            | StaysSuspended { .. }
            | SelfSignedNotRenewed { .. }
            | ClusterDisconnected { .. }
            | ClusterNotApplied { .. }
            | ClusterUsersNotApplied { .. }
            | JoinTokenRefused { .. }
            | FeatureKeyRemoved { .. }
            | FeatureKeyExpired { .. }
            | SweepLeaderLost { .. } => Level::Warning,
            UnreadableEnvelope { .. }
            | SpoolWriteFailed { .. }
            | ScanReadFailed { .. }
            | QuarantineFailed { .. }
            | RewrittenNotSpooled { .. }
            | RewrittenNotSpooledRescan { .. }
            | BounceNotSpooled { .. }
            | NotificationNotSpooled { .. }
            | InterruptedReleasesUnlisted { .. }
            | SweepFailed { .. }
            | ReleasedUnreadable { .. }
            | ReleaseNotQueued { .. }
            | ReleaseNotQueuedToGateway { .. }
            | ReleaseNotPending { .. }
            | ReleaseNotSpooled { .. }
            | TransferNotStored { .. }
            | ControlFailed { .. }
            | MigrationUnreadable { .. }
            | MigrationNotificationFailed { .. }
            | AuditNotRecorded { .. } => Level::Critical,
            _ => Level::Info,
        }
    }

    /// The connection, message and delivery connection the event is about.
    pub fn ids(&self) -> Ids {
        use Event::*;
        let (icid, mid, dcid) = match *self {
            Connection { icid, .. }
            | HatNoMatch { icid }
            | HatMatch { icid, .. }
            | Refused { icid, .. }
            | Close { icid }
            | IdleUnderPressure { icid, .. }
            | TlsSuccess { icid, .. }
            | TlsFailed { icid, .. }
            | TlsTimeout { icid }
            | Timeout { icid, .. }
            | BadCommandLimit { icid }
            | CommandLimit { icid, .. }
            | CertificateNoLongerAccepted { icid, .. }
            | MetaRefusedIdMismatch { icid, .. }
            | MetaRefusedNotEnrolled { icid, .. }
            | MetaRefusedOtherGateway { icid, .. }
            | ReleaseNotPending { icid, .. }
            | ReleaseNotSpooled { icid, .. }
            | TransferRepeated { icid, .. }
            | TransferNotStored { icid, .. }
            | Preflight { icid, .. }
            | ControlFailed { icid, .. } => (Some(icid), None, None),
            Start { mid, icid }
            | From { mid, icid, .. }
            | To { mid, icid, .. }
            | RcptRejected { mid, icid, .. }
            | RatRejected { mid, icid, .. }
            | RatRejectedRouting { mid, icid, .. }
            | SizeExceeded { mid, icid, .. }
            | NulRefused { mid, icid, .. }
            | BareLineEndings { mid, icid, .. }
            | SpoolWriteFailed { mid, icid, .. }
            | ReleaseRepeated { mid, icid, .. }
            | ReleaseReceived { mid, icid, .. }
            | TransferReceived { mid, icid, .. }
            | ControlDone { mid, icid, .. } => (Some(icid), Some(mid), None),
            DeliveryConnection { dcid, .. }
            | DeliveryClose { dcid }
            | TlsRequired { dcid }
            | StartTlsRefused { dcid, .. }
            | DeliveryTlsSuccess { dcid, .. }
            | DeliveryTlsFailed { dcid, .. }
            | ControlAnswered { dcid, .. } => (None, None, Some(dcid)),
            DeliveryStart { dcid, mid, .. }
            | MetaRefusedByPeer { dcid, mid, .. }
            | SenderUnsendable { dcid, mid, .. }
            | RecipientUnsendable { dcid, mid, .. }
            | Done { dcid, mid, .. }
            | BouncedByServer { dcid, mid, .. }
            | BouncedUndeliverable { dcid, mid, .. }
            | Delayed { dcid, mid, .. } => (None, Some(mid), Some(dcid)),
            UnreadableEnvelope { mid, .. }
            | UnreadableProgress { mid, .. }
            | Aborted { mid, .. }
            | Received { mid, .. }
            | Ready { mid, .. }
            | Queued { mid }
            | Finished { mid }
            | ScanReadFailed { mid, .. }
            | ScanDeferred { mid, .. }
            | PolicyMatched { mid, .. }
            | AntivirusNegative { mid }
            | AntivirusPositive { mid, .. }
            | AntivirusUnscannable { mid, .. }
            | Unscannable { mid, .. }
            | ContentFilterMatched { mid, .. }
            | DlpViolation { mid, .. }
            | OutbreakPositive { mid, .. }
            | OutbreakNegative { mid }
            | Dropped { mid, .. }
            | BouncedBy { mid, .. }
            | Quarantined { mid, .. }
            | QuarantinedCentralized { mid, .. }
            | QuarantineFailed { mid, .. }
            | Rewritten { mid, .. }
            | RewrittenByContentFilter { mid, .. }
            | RewrittenByQuarantine { mid, .. }
            | RewrittenCentralized { mid, .. }
            | RewrittenNotSpooled { mid, .. }
            | RewrittenNotSpooledRescan { mid, .. }
            | CpqResponse { mid, .. }
            | BouncedByAdministrator { mid, .. }
            | DeletedByAdministrator { mid, .. }
            | BounceGenerated { mid, .. }
            | BounceNotSpooled { of: mid, .. }
            | NotificationGenerated { mid, .. }
            | NotificationNotSpooled { of: mid, .. }
            | QuarantineChanged { mid, .. }
            | ReleasedFromAll { mid }
            | QuarantineMoved { mid, .. }
            | ReleasedUnreadable { mid, .. }
            | ReleaseNotQueued { mid, .. }
            | ReleaseNotQueuedToGateway { mid, .. }
            | QueuedToGatewayUnrecorded { mid, .. }
            | DeliveredUnrecorded { mid, .. }
            | CopySent { mid, .. }
            | OutbreakCopyNotKept { mid, .. }
            | RescannedClean { mid }
            | QueuedForCpq { mid, .. }
            | ReleaseUnrecorded { mid, .. }
            | ReleaseQueued { mid, .. }
            | MigrationLeft { mid, .. }
            | Migrating { mid, .. }
            | MigrationNotified { mid }
            | FeatureSkipped { mid, .. } => (None, Some(mid), None),
            _ => (None, None, None),
        };
        Ids { icid, mid, dcid }
    }
}

impl Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Event::*;
        match *self {
            // --- the node ---
            Starting {
                version,
                hostname,
                role,
            } => write!(f, "PVO {version} starting on {hostname} ({role})"),
            ShuttingDown => f.write_str("PVO shutting down"),
            Notice(n) => write!(f, "{n}"),
            SpoolFileMovedAside { from, to, reason } => write!(
                f,
                "Spool file {} moved aside to {}: {reason}",
                from.display(),
                to.display()
            ),
            UnreadableEnvelope { mid, error } => write!(
                f,
                "MID {mid} has an unreadable envelope in the spool ({error}); left in the spool for inspection"
            ),
            UnreadableProgress { mid, error } => write!(
                f,
                "MID {mid} has an unreadable progress record in the spool ({error}); ignored"
            ),
            Recovered { messages } => write!(f, "Recovered {messages} messages from the spool"),
            ListenerListening { name, addr } => write!(f, "Listener {name} listening on {addr}"),
            ListenerRemoved { name } => write!(f, "Listener {name} removed"),
            ServerListening {
                server: Server::Ssh,
                addr,
            } => write!(f, "SSH listening on {addr}"),
            ServerListening {
                server: Server::Web,
                addr,
            } => write!(f, "Web listening on https://{addr}"),
            ServerStopped {
                server,
                addr,
                grace_secs,
            } => write!(
                f,
                "{} stopped listening on {addr}; its open connections may finish within {grace_secs} seconds",
                match server {
                    Server::Ssh => "SSH",
                    Server::Web => "Web",
                }
            ),
            LinesLost {
                lines,
                path,
                first,
                last,
                error,
            } => write!(
                f,
                "{lines} lines could not be written to {} between {first} and {last} ({error}) and are lost",
                path.display()
            ),

            // --- an inbound connection ---
            Connection {
                icid,
                cpq,
                interface,
                interface_address,
                address,
                rdns_host,
                verified,
            } => write!(
                f,
                "New {} ICID {icid} interface {interface} ({interface_address}) address {address} reverse dns host {} verified {}",
                if cpq { "CPQ" } else { "SMTP" },
                rdns_host.unwrap_or("unknown"),
                if verified { "yes" } else { "no" }
            ),
            HatNoMatch { icid } => write!(f, "ICID {icid} REJECT SG None match none SBRS None"),
            HatMatch {
                icid,
                behavior,
                group,
                matched,
            } => write!(f, "ICID {icid} {behavior} SG {group} match {matched} SBRS None"),
            Refused { icid, why } => write!(f, "ICID {icid} refused: {why}"),
            Close { icid } => write!(f, "ICID {icid} close"),
            IdleUnderPressure {
                icid,
                idle_secs,
                policy,
                open,
                max,
            } => write!(
                f,
                "ICID {icid} idle for {idle_secs} s while policy {policy} is under pressure ({open} of {max} connections)"
            ),
            TlsSuccess {
                icid,
                protocol,
                cipher,
                peer,
            } => {
                write!(f, "ICID {icid} TLS success protocol {protocol} cipher {cipher}")?;
                match peer {
                    Some(cn) => write!(f, " peer {cn} verified"),
                    None => Ok(()),
                }
            }
            TlsFailed { icid, why } => write!(f, "ICID {icid} TLS failed: {why}"),
            TlsTimeout { icid } => write!(f, "ICID {icid} TLS failed: handshake timed out"),
            Timeout { icid, which } => write!(f, "ICID {icid} {which} timeout"),
            BadCommandLimit { icid } => write!(f, "ICID {icid} Exceeded bad SMTP command limit"),
            CommandLimit { icid, limit } => {
                write!(f, "ICID {icid} Exceeded the command limit of {limit}")
            }
            CertificateNoLongerAccepted { icid, why } => {
                write!(f, "ICID {icid} certificate no longer accepted: {why}")
            }
            MetaRefusedIdMismatch {
                icid,
                gateway,
                peer,
            } => write!(
                f,
                "ICID {icid} XPVO-META refused: gateway id {gateway} is not the certificate's {peer}"
            ),
            MetaRefusedNotEnrolled { icid, gateway } => write!(
                f,
                "ICID {icid} XPVO-META refused: gateway {gateway} is not enrolled"
            ),
            MetaRefusedOtherGateway {
                icid,
                release,
                gateway,
                own,
            } => write!(
                f,
                "ICID {icid} XPVO-META refused: release {release} is for gateway {gateway}, this is {own}"
            ),

            // --- a transaction ---
            Start { mid, icid } => write!(f, "Start MID {mid} ICID {icid}"),
            From { mid, icid, sender } => write!(f, "MID {mid} ICID {icid} From: <{sender}>"),
            To {
                mid,
                icid,
                rid,
                address,
            } => write!(f, "MID {mid} ICID {icid} RID {rid} To: <{address}>"),
            RcptRejected {
                mid,
                icid,
                rid,
                error,
            } => write!(f, "MID {mid} ICID {icid} RID {rid} Rejected: {error}"),
            RatRejected { mid, icid, address } => {
                write!(f, "MID {mid} ICID {icid} To: <{address}> Rejected by RAT")
            }
            RatRejectedRouting { mid, icid, address } => write!(
                f,
                "MID {mid} ICID {icid} To: <{address}> Rejected by RAT (sender-specified routing)"
            ),
            Aborted { mid, why } => write!(f, "Message aborted MID {mid} {why}"),
            SizeExceeded { mid, icid, max } => write!(
                f,
                "MID {mid} ICID {icid} Message aborted: size exceeds {max} bytes"
            ),
            NulRefused { mid, icid, nuls } => write!(
                f,
                "MID {mid} ICID {icid} Message aborted: {nuls} NUL characters in the message"
            ),
            BareLineEndings { mid, icid, count } => write!(
                f,
                "MID {mid} ICID {icid} {count} bare CR or LF normalized to CRLF"
            ),
            SpoolWriteFailed { mid, icid, why } => write!(
                f,
                "MID {mid} ICID {icid} could not be written to the spool: {why}"
            ),
            Received {
                mid, bytes, sender, ..
            }
            | Ready { mid, bytes, sender } => {
                write!(f, "MID {mid} ready {bytes} bytes from <{sender}>")
            }

            // --- a message ---
            Queued { mid } => write!(f, "MID {mid} queued for delivery"),
            Finished { mid } => write!(f, "Message finished MID {mid} done"),
            ScanReadFailed { mid, error } => write!(
                f,
                "MID {mid} cannot be read from the spool for scanning: {error}"
            ),
            ScanDeferred {
                mid,
                error,
                retry_secs,
            } => write!(
                f,
                "MID {mid} scanning deferred: {error}; the message stays queued and is scanned again in {retry_secs} s"
            ),
            PolicyMatched {
                mid,
                policy,
                outgoing,
            } => write!(
                f,
                "MID {mid} matched all recipients for per-recipient policy {policy} in the {} table",
                if outgoing { "outbound" } else { "inbound" }
            ),
            AntivirusNegative { mid } => write!(f, "MID {mid} antivirus negative"),
            AntivirusPositive { mid, signature } => {
                write!(f, "MID {mid} antivirus positive '{signature}'")
            }
            AntivirusUnscannable { mid, what } => {
                write!(f, "MID {mid} antivirus unscannable: {what:?}")
            }
            Unscannable { mid, why } => write!(f, "MID {mid} unscannable: {why}"),
            ContentFilterMatched { mid, filter } => write!(
                f,
                "MID {mid} Custom Log Entry: content filter '{filter}' matched"
            ),
            DlpViolation {
                mid,
                severity,
                risk,
                policy,
            } => write!(
                f,
                "MID {mid} DLP violation. Severity: {severity:?} (Risk Factor: {risk}). DLP policy match: '{policy}'"
            ),
            OutbreakPositive { mid, level, rule } => write!(
                f,
                "MID {mid} Outbreak Filters: verdict positive, threat level {level}, rule {rule}"
            ),
            OutbreakNegative { mid } => write!(f, "MID {mid} Outbreak Filters: verdict negative"),
            Dropped { mid, by } => write!(f, "MID {mid} dropped by {by}"),
            BouncedBy { mid, by } => write!(f, "MID {mid} bounced by {by}"),
            Quarantined {
                mid,
                quarantine,
                reason,
            } => f.write_str(&logline::quarantined(mid, quarantine, reason)),
            QuarantinedCentralized {
                mid,
                quarantine,
                reason,
            } => write!(
                f,
                "{} (centralized)",
                logline::quarantined(mid, quarantine, reason)
            ),
            QuarantineFailed { mid, error } => {
                write!(f, "MID {mid} could not be quarantined: {error}")
            }
            Rewritten { mid, new_mid, by } => {
                write!(f, "MID {mid} rewritten to MID {new_mid} by {by}")
            }
            RewrittenByContentFilter { mid, new_mid } => {
                write!(f, "MID {mid} rewritten to MID {new_mid} by content filter")
            }
            RewrittenByQuarantine {
                mid,
                new_mid,
                quarantine,
            } => write!(
                f,
                "MID {mid} rewritten to MID {new_mid} by {quarantine} Quarantine"
            ),
            RewrittenCentralized { mid, new_mid } => write!(
                f,
                "MID {mid} rewritten to MID {new_mid} by the Centralized Policy Quarantine"
            ),
            RewrittenNotSpooled { mid, error } => {
                write!(f, "MID {mid} rewritten copy could not be spooled: {error:#}")
            }
            RewrittenNotSpooledRescan { mid, error } => write!(
                f,
                "MID {mid} rewritten copy could not be spooled: {error}; scanned again later"
            ),

            // --- delivery ---
            DeliveryConnection {
                dcid,
                interface,
                address,
                port,
            } => write!(
                f,
                "New SMTP DCID {dcid} interface {interface} address {address} port {port}"
            ),
            DeliveryClose { dcid } => write!(f, "DCID {dcid} close"),
            TlsRequired { dcid } => write!(
                f,
                "DCID {dcid} TLS was required but could not be successfully negotiated"
            ),
            StartTlsRefused { dcid, reply } => {
                write!(f, "DCID {dcid} TLS failed: STARTTLS refused: {reply}")
            }
            DeliveryTlsSuccess {
                dcid,
                protocol,
                cipher,
                domain,
            } => write!(
                f,
                "DCID {dcid} TLS success protocol {protocol} cipher {cipher} {domain}"
            ),
            DeliveryTlsFailed { dcid, why } => write!(f, "DCID {dcid} TLS failed: {why}"),
            DeliveryStart {
                dcid,
                mid,
                rids,
                dest,
                gateway,
            } => {
                write!(f, "Delivery start DCID {dcid} MID {mid} to RID [{}]", Rids(rids))?;
                match dest {
                    Dest::Next => Ok(()),
                    Dest::Cpq => f.write_str(" to Centralized Policy Quarantine"),
                    Dest::Release => write!(
                        f,
                        " to gateway {gateway} (released from the Centralized Policy Quarantine)"
                    ),
                }
            }
            MetaRefusedByPeer { dcid, mid, reply } => {
                write!(f, "DCID {dcid} MID {mid} XPVO-META refused: {reply}")
            }
            SenderUnsendable { dcid, mid, error } => write!(
                f,
                "DCID {dcid} MID {mid} 553 5.1.7 the sender cannot be sent over SMTP: {error}"
            ),
            RecipientUnsendable {
                dcid,
                mid,
                rid,
                error,
            } => write!(
                f,
                "DCID {dcid} MID {mid} RID [{rid}] the recipient cannot be sent over SMTP: {error}"
            ),
            Done {
                dcid,
                mid,
                rids,
                dest,
            } => write!(
                f,
                "Message done DCID {dcid} MID {mid} to RID [{}]{}",
                Rids(rids),
                match dest {
                    Dest::Next => "",
                    Dest::Cpq => " (centralized policy quarantine)",
                    Dest::Release => " (released to its gateway)",
                }
            ),
            CpqResponse { mid, rids, text } => {
                write!(f, "MID {mid} RID [{}] Response '{text}'", Rids(rids))
            }
            ControlAnswered { dcid, reply } => {
                write!(f, "DCID {dcid} XPVO-CONTROL answered {reply}")
            }

            // --- the queue ---
            BouncedByServer {
                dcid,
                mid,
                rid,
                reason,
            } => write!(
                f,
                "Bounced: DCID {dcid} MID {mid} to RID {rid} - Bounced by destination server with response: {reason}"
            ),
            BouncedUndeliverable {
                dcid,
                mid,
                rid,
                why,
                reason,
            } => write!(
                f,
                "Bounced: DCID {dcid} MID {mid} to RID {rid} - Unable to deliver: {why}; last error: {reason}"
            ),
            BouncedByAdministrator { mid, rid } => write!(
                f,
                "Bounced: MID {mid} to RID {rid} - bounced by administrator (bouncerecipients)"
            ),
            Delayed {
                dcid,
                mid,
                rids,
                reason,
            } => write!(
                f,
                "Delayed: DCID {dcid} MID {mid} to RID [{}] - {reason}",
                Rids(rids)
            ),
            DeletedByAdministrator { mid, rid } => write!(
                f,
                "MID {mid} to RID [{rid}] deleted by administrator (deleterecipients)"
            ),
            BounceGenerated { mid, of } => {
                write!(f, "MID {mid} was generated for bounce of MID {of}")
            }
            BounceNotSpooled { of, error } => {
                write!(f, "MID {of} bounce could not be spooled: {error:#}")
            }
            NotificationGenerated { mid, of } => {
                write!(f, "MID {mid} was generated as a notification for MID {of}")
            }
            NotificationNotSpooled { of, error } => {
                write!(f, "MID {of} notification could not be spooled: {error:#}")
            }

            // --- quarantines ---
            QuarantineChanged { mid, change } => f.write_str(&match change {
                Change::Released {
                    quarantine, cause, ..
                } => logline::released(mid, quarantine, cause.as_str()),
                Change::Deleted { quarantine, cause } => {
                    logline::deleted(mid, quarantine, cause.as_str())
                }
                Change::Delayed { quarantine, to, .. } => logline::delayed(mid, quarantine, *to),
                Change::Moved { from, to } => logline::moved(mid, from, to),
            }),
            ReleasedFromAll { mid } => f.write_str(&logline::released_from_all(mid)),
            QuarantineMoved { mid, from, to } => f.write_str(&logline::moved(mid, from, to)),
            InterruptedReleasesUnlisted { error } => {
                write!(f, "Quarantine: cannot list interrupted releases: {error}")
            }
            SweepFailed { error } => write!(f, "Quarantine: the retention sweep failed: {error}"),
            SweepLeaderGained { deployment } => write!(
                f,
                "Quarantine: this manager now runs the expiry and free-up-space sweeps of deployment {deployment}"
            ),
            SweepLeaderLost { deployment } => write!(
                f,
                "Quarantine: another manager now runs the expiry and free-up-space sweeps of deployment {deployment}"
            ),
            ReleasesTakenOver { count } => write!(
                f,
                "Quarantine: {count} release{} interrupted on another manager queued by this one",
                if count == 1 { "" } else { "s" }
            ),
            ReleasedUnreadable { mid, error } => write!(
                f,
                "MID {mid} released but cannot be read from the quarantine: {error}"
            ),
            ReleaseNotQueued { mid, error } => write!(
                f,
                "MID {mid} released but could not be queued: {error:#}; it is handed over again at the next start"
            ),
            ReleaseNotQueuedToGateway {
                mid,
                gateway,
                error,
            } => write!(
                f,
                "MID {mid} released but could not be queued to gateway {gateway}: {error:#}; it is handed over again at the next start"
            ),
            QueuedToGatewayUnrecorded { mid, error } => write!(
                f,
                "MID {mid} queued to the gateway but the store could not record it: {error}"
            ),
            DeliveredUnrecorded {
                mid,
                new_mid,
                error,
            } => write!(
                f,
                "MID {mid} delivered as MID {new_mid} but the quarantine could not record it: {error}"
            ),
            StoreFailure { error } => write!(f, "Quarantine store failure in a command: {error}"),
            QuarantineCreated { name, by } => write!(f, "Quarantine \"{name}\" created by {by}"),
            QuarantineSettingsChanged { name, by } => {
                write!(f, "Quarantine \"{name}\" settings changed by {by}")
            }
            QuarantineDeleted { name, by } => write!(f, "Quarantine \"{name}\" deleted by {by}"),
            CopySent {
                mid,
                to,
                new_mid,
                by,
            } => write!(
                f,
                "MID {mid} copy sent to {} as MID {new_mid} (requested by {by})",
                to.join(", ")
            ),

            // --- outbreak rules ---
            OutbreakRulesUpdated {
                version,
                rules,
                from,
                kept,
            } => write!(
                f,
                "Outbreak rules updated to version {version} ({rules} rule{}) from {}, kept in {}",
                if rules == 1 { "" } else { "s" },
                from.display(),
                kept.map(|p| p.display().to_string()).unwrap_or_default()
            ),
            OutbreakCopyUnusable { dir, error } => write!(
                f,
                "Outbreak rules persisted in {} cannot be used: {error}; the configured rules are in force instead. To fix: load the rules again with `pvo outbreakupdate FILE` (it rewrites the copy), or remove {} to keep the configured rules",
                dir.display(),
                dir.display()
            ),
            NoOutbreakRules { why } => write!(f, "No outbreak rules in force: {why}"),
            OutbreakRulesInForce {
                version,
                rules,
                from,
                origin,
                kept,
                why,
            } => {
                write!(
                    f,
                    "Outbreak rules in force: version {version} ({rules} rules) from {} ({origin}",
                    from.display()
                )?;
                if let Some((at, copy)) = kept {
                    write!(
                        f,
                        " at {}, kept in {}",
                        ctime(at),
                        copy.display()
                    )?;
                }
                write!(f, "): {why}")
            }
            OutbreakRulesChanged {
                version,
                rules,
                from,
                kept,
            } => write!(
                f,
                "Outbreak rules in force: version {version} ({rules} rules) from {} (configuration), kept in {}: the configuration's rules file changed",
                from.display(),
                kept.map(|p| p.display().to_string()).unwrap_or_default()
            ),
            OutbreakRulesUnrecorded { error, dir } => write!(
                f,
                "Outbreak rules: {error}; the rules in force are not recorded in {}, so a restart may put other rules in force. To fix: free space or fix permissions there, then run `pvo outbreakupdate FILE`",
                dir.display()
            ),
            OutbreakCopyNotKept { mid, error } => write!(
                f,
                "MID {mid} no local copy kept for outbreak rescans: {error:#}"
            ),
            RescannedClean { mid } => write!(
                f,
                "MID {mid} rescanned clean: the manager releases it from the Outbreak quarantine (rescan)"
            ),
            RescanNotTold { clean, error } => write!(
                f,
                "Outbreak rescan: {clean} messages are clean now but the manager could not be told: {error}; they are tried again at the next outbreakupdate"
            ),

            // --- CPQ, gateway side ---
            QueuedForCpq { mid, host } => write!(
                f,
                "MID {mid} queued for the Centralized Policy Quarantine ({host})"
            ),
            ReleaseSettled { release } => write!(
                f,
                "Release {release} was spooled before a restart but not recorded; recorded now, so a repeat of it is not delivered again"
            ),
            ReleaseRepeated { icid, release, mid } => write!(
                f,
                "ICID {icid} release {release} of MID {mid} already received; not delivered again"
            ),
            ReleaseNotPending {
                icid,
                release,
                error,
            } => write!(
                f,
                "ICID {icid} release {release} could not be recorded as pending in the release ledger: {error}"
            ),
            ReleaseReceived {
                mid,
                icid,
                by,
                peer,
                original,
                release,
            } => write!(
                f,
                "MID {mid} ICID {icid} released from the Centralized Policy Quarantine ({by}) by the manager {peer}: original MID {original} release {release}"
            ),
            ReleaseUnrecorded {
                mid,
                release,
                error,
            } => write!(
                f,
                "MID {mid} release {release} could not be recorded ({error}); a repeat of it would be delivered again"
            ),
            ReleaseNotSpooled {
                icid,
                release,
                error,
            } => write!(
                f,
                "ICID {icid} release {release} could not be spooled: spool: {error}"
            ),
            GatewayEndpoint {
                gateway,
                address,
                port,
            } => write!(
                f,
                "Gateway {gateway} delivers released mail to {address}:{port} (asked over SSH)"
            ),
            GatewayEndpointUnknown { gateway, error } => write!(
                f,
                "Gateway {gateway}: cannot ask over SSH where released mail goes: {error:#}"
            ),
            GatewayStatusFailed { gateway, why } => {
                write!(f, "Gateway {gateway}: status check over SSH failed: {why}")
            }

            // --- CPQ, manager side ---
            TransferReceived {
                mid,
                icid,
                sender,
                bytes,
                gateway,
                gateway_mid,
                transfer,
            } => write!(
                f,
                "MID {mid} ICID {icid} From: <{sender}> {bytes} bytes from gateway {gateway} MID {gateway_mid} (transfer {transfer})"
            ),
            TransferRepeated {
                icid,
                transfer,
                gateway,
                mid,
            } => write!(
                f,
                "ICID {icid} transfer {transfer} from gateway {gateway} already stored as MID {mid}"
            ),
            TransferNotStored {
                icid,
                transfer,
                gateway,
                error,
            } => write!(
                f,
                "ICID {icid} transfer {transfer} from gateway {gateway} could not be stored: {error}"
            ),
            Preflight {
                icid,
                gateway,
                answer,
            } => write!(
                f,
                "ICID {icid} enable preflight of gateway {gateway}: {answer}"
            ),
            ControlDone {
                icid,
                release,
                gateway,
                mid,
            } => write!(
                f,
                "ICID {icid} control {} for gateway {gateway} MID {mid} carried out",
                if release { "release" } else { "expire" }
            ),
            ControlFailed { icid, error } => {
                write!(f, "ICID {icid} control could not be carried out: {error}")
            }
            ReleaseQueued {
                mid,
                manager_mid,
                gateway,
                gateway_mid,
                host,
            } => write!(
                f,
                "MID {mid} released MID {manager_mid} of gateway {gateway} (gateway MID {gateway_mid}) queued to {host}"
            ),
            ReleasesUnrecorded { error } => write!(
                f,
                "released messages queued to their gateways but the store could not record it: {error}"
            ),

            // --- migration ---
            MigrationUnreadable { error } => write!(
                f,
                "Migration of local quarantines to the manager: cannot read the local store: {error}"
            ),
            MigrationError { why } => {
                write!(f, "Migration of local quarantines to the manager: {why}")
            }
            MigrationStarted { messages } => write!(
                f,
                "Migration of local quarantines to the manager started: {messages} messages"
            ),
            MigrationResumed { done, total } => write!(
                f,
                "Migration of local quarantines to the manager resumed: {done} of {total} messages migrated"
            ),
            MigrationFinished { messages } => write!(
                f,
                "Migration of local quarantines to the manager finished: {messages} messages"
            ),
            MigrationLeft { mid, copy } => write!(
                f,
                "MID {mid} left the local quarantines meanwhile: not migrated (copy MID {copy} dropped)"
            ),
            Migrating {
                mid,
                quarantines,
                copy,
                transfer,
            } => {
                write!(
                    f,
                    "MID {mid} migrating from quarantine{} ",
                    if quarantines.len() > 1 { "s" } else { "" }
                )?;
                for (i, q) in quarantines.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "\"{q}\"")?;
                }
                write!(
                    f,
                    " to the Centralized Policy Quarantine as MID {copy} (transfer {transfer})"
                )
            }
            MigrationNotified { mid } => write!(
                f,
                "MID {mid} was generated as a notification: migration of local quarantines to the manager finished"
            ),
            MigrationNotificationFailed { error } => write!(
                f,
                "The notification that the migration finished could not be spooled: {error:#}"
            ),

            // --- administration ---
            Committed {
                by,
                commit,
                comment,
            } => write!(
                f,
                "Configuration committed by {by} (commit {commit}): {comment}"
            ),
            RolledBack { to, by, commit } => write!(
                f,
                "Configuration rolled back to commit {to} by {by} (commit {commit})"
            ),

            // --- feature keys ---
            FeatureKeyInstalled {
                feature,
                key,
                until,
                by,
                renewed,
            } => write!(
                f,
                "Feature key for {feature} {} by {by} (key {key}, {until}); {feature} is on on this machine",
                if renewed { "renewed" } else { "installed" }
            ),
            FeatureKeyRemoved {
                feature,
                command,
                by,
            } => write!(
                f,
                "The feature key for {feature} was removed by {by}; {feature} is off on this machine (`featurekey add {command}` turns it on)"
            ),
            FeatureKeyExpired { feature, command } => write!(
                f,
                "The feature key for {feature} has expired; {feature} is off on this machine (`featurekey add {command}` renews it)"
            ),
            FeatureSkipped { mid, feature } => write!(
                f,
                "MID {mid} {feature} skipped: no feature key on this machine"
            ),

            // --- cluster ---
            ClusterConnected {
                machine,
                store,
                revision,
            } => write!(
                f,
                "Cluster: machine {machine} connected to the cluster's store ({store}); it runs revision {revision}"
            ),
            ClusterDisconnected {
                machine,
                why,
                revision,
            } => write!(
                f,
                "Cluster: machine {machine} is disconnected from the cluster's store: {why}; it keeps running revision {revision} and refuses configuration commits until it is back"
            ),
            ClusterApplied {
                machine,
                revision,
                by,
                level,
            } => write!(
                f,
                "Cluster: machine {machine} applied revision {revision} ({level}, committed by {by})"
            ),
            ClusterNotApplied {
                machine,
                revision,
                why,
                running,
            } => write!(
                f,
                "Cluster: machine {machine} cannot apply revision {revision}: {why}; it keeps running revision {running}"
            ),
            ClusterCommitted {
                by,
                revision,
                level,
                comment,
            } => write!(
                f,
                "Cluster configuration committed by {by} (revision {revision}, {level}): {comment}"
            ),
            ClusterMembers { by, what } => write!(f, "Cluster membership changed by {by}: {what}"),
            ClusterUsersApplied {
                machine,
                revision,
                by,
                on,
                what,
            } => write!(
                f,
                "Cluster: machine {machine} took the cluster's users at users revision {revision} (by {by} on {on}: {what})"
            ),
            ClusterUsersNotApplied {
                machine,
                revision,
                why,
                running,
            } => write!(
                f,
                "Cluster: machine {machine} cannot take the cluster's users at users revision {revision}: {why}; it keeps logging users in with its copy (users revision {running})"
            ),
            ClusterUsersCommitted { by, revision, what } => write!(
                f,
                "Cluster users changed by {by} (users revision {revision}): {what}"
            ),
            JoinTokenMade { token, by, expires } => write!(
                f,
                "Cluster: join token {token} made by {by}, valid until {expires}"
            ),
            JoinTokenLogin { token, from } => write!(
                f,
                "Cluster: join token {token} accepted for an SSH login from {from}"
            ),
            JoinTokenClaimed { token, machine } => write!(
                f,
                "Cluster: join token {token} claimed by machine {machine}, which is joining"
            ),
            JoinTokenUsed { token, machine } => write!(
                f,
                "Cluster: join token {token} used: machine {machine} joined with it"
            ),
            JoinTokenRefused { what, why } => {
                write!(f, "Cluster: join token refused for {what}: {why}")
            }
            JoinTokenRevoked { token, by } => {
                write!(f, "Cluster: join token {token} revoked by {by}")
            }
            LoginThrottled {
                user,
                from,
                throttle,
            } => write!(
                f,
                "Login throttled: user {user:?} from {from}: {throttle} (further attempts are refused without checking the password)"
            ),
            CertificateRevoked {
                serial,
                subject,
                by,
            } => {
                write!(f, "CPQ certificate {serial}")?;
                if !subject.is_empty() {
                    write!(f, " ({subject})")?;
                }
                write!(
                    f,
                    " revoked by {}: refused from the next handshake",
                    if by.is_empty() { "admin" } else { by }
                )
            }
            Redirected {
                host,
                port,
                recipients,
            } => write!(
                f,
                "All queued recipients redirected to {host}:{port} by administrator ({recipients} recipients)"
            ),
            ReceivingSuspended { listeners } => {
                write!(f, "Receiving suspended for {}.", listeners.join(", "))
            }
            ReceivingResumed { listeners } => {
                write!(f, "Receiving resumed for {}.", listeners.join(", "))
            }
            StaysSuspended { why } => write!(f, "{why}; it stays suspended."),
            DeliverySuspended => f.write_str("Delivery suspended."),
            DeliveryResumed => f.write_str("Delivery resumed."),
            AuditNotRecorded { what, error } => {
                write!(f, "The audit trail could not record {what}: {error:#}")
            }
            SelfSignedRenewed { hostname, why } => write!(
                f,
                "TLS: a new self-signed certificate for {hostname} is in force ({why})"
            ),
            SelfSignedNotRenewed { error } => write!(
                f,
                "TLS: the self-signed certificate could not be renewed: {error:#}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvo_quarantine::{Cause, ReasonKind};
    use std::io;

    fn err(text: &str) -> anyhow::Error {
        anyhow::anyhow!(io::Error::other("disk on fire")).context(text.to_string())
    }

    /// Every line form with today's exact wording (copied from the appliance-format
    /// texts the node has always written; the e2e tests grep for many of them).
    #[test]
    fn each_line_form_renders_its_exact_text() {
        let e = err("spool");
        let io_e = io::Error::other("No space left on device");
        let reason = Reason::new(ReasonKind::ContentFilter, "policy_violation");
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let addr: SocketAddr = "127.0.0.1:2222".parse().unwrap();
        let listeners = vec!["euq_listener".to_string(), "cpq_listener".to_string()];
        let to = vec!["a@example.com".to_string(), "b@example.com".to_string()];
        let notice = Notice::IdsWrittenAgain {
            path: "/d/run/ids".into(),
        };
        let released = Change::Released {
            quarantine: "Policy".into(),
            cause: Cause::Manual,
            early: false,
        };
        let deleted = Change::Deleted {
            quarantine: "Virus".into(),
            cause: Cause::Expired,
        };
        let delayed = Change::Delayed {
            quarantine: "Policy".into(),
            from: 1,
            to: 1_700_000_000,
        };
        let moved = Change::Moved {
            from: "Policy".into(),
            to: "Custom".into(),
        };
        let cases: Vec<(Event, &str, Level)> = vec![
            (Event::Starting { version: "0.1.0", hostname: "mx.example.com", role: "gateway" }, "PVO 0.1.0 starting on mx.example.com (gateway)", Level::Info),
            (Event::ShuttingDown, "PVO shutting down", Level::Info),
            (Event::Notice(&notice), "MID, ICID and DCID counters written to /d/run/ids again", Level::Warning),
            (Event::SpoolFileMovedAside { from: Path::new("/s/1.seg"), to: Path::new("/s/corrupt/1.seg"), reason: &"bad checksum" }, "Spool file /s/1.seg moved aside to /s/corrupt/1.seg: bad checksum", Level::Warning),
            (Event::UnreadableEnvelope { mid: 5, error: &"eof" }, "MID 5 has an unreadable envelope in the spool (eof); left in the spool for inspection", Level::Critical),
            (Event::UnreadableProgress { mid: 5, error: &"eof" }, "MID 5 has an unreadable progress record in the spool (eof); ignored", Level::Warning),
            (Event::Recovered { messages: 3 }, "Recovered 3 messages from the spool", Level::Info),
            (Event::ListenerListening { name: "IncomingMail", addr }, "Listener IncomingMail listening on 127.0.0.1:2222", Level::Info),
            (Event::ListenerRemoved { name: "IncomingMail" }, "Listener IncomingMail removed", Level::Info),
            (Event::ServerListening { server: Server::Ssh, addr }, "SSH listening on 127.0.0.1:2222", Level::Info),
            (Event::ServerListening { server: Server::Web, addr }, "Web listening on https://127.0.0.1:2222", Level::Info),
            (Event::ServerStopped { server: Server::Web, addr, grace_secs: 30 }, "Web stopped listening on 127.0.0.1:2222; its open connections may finish within 30 seconds", Level::Info),
            (Event::LinesLost { lines: 7, path: Path::new("/l/mail_logs"), first: "Fri Sep 13 15:08:02 2013", last: "Fri Sep 13 15:08:09 2013", error: "No space left on device (os error 28)" }, "7 lines could not be written to /l/mail_logs between Fri Sep 13 15:08:02 2013 and Fri Sep 13 15:08:09 2013 (No space left on device (os error 28)) and are lost", Level::Warning),
            (Event::Connection { icid: 9, cpq: false, interface: "Management", interface_address: local, address: ip, rdns_host: None, verified: false }, "New SMTP ICID 9 interface Management (127.0.0.1) address 192.0.2.7 reverse dns host unknown verified no", Level::Info),
            (Event::Connection { icid: 9, cpq: true, interface: "Data1", interface_address: local, address: ip, rdns_host: Some("gw.example.com"), verified: true }, "New CPQ ICID 9 interface Data1 (127.0.0.1) address 192.0.2.7 reverse dns host gw.example.com verified yes", Level::Info),
            (Event::HatNoMatch { icid: 9 }, "ICID 9 REJECT SG None match none SBRS None", Level::Info),
            (Event::HatMatch { icid: 9, behavior: "RELAY", group: "RELAYLIST", matched: &"127.0.0.1" }, "ICID 9 RELAY SG RELAYLIST match 127.0.0.1 SBRS None", Level::Info),
            (Event::Refused { icid: 9, why: &"too many connections" }, "ICID 9 refused: too many connections", Level::Info),
            (Event::Close { icid: 9 }, "ICID 9 close", Level::Info),
            (Event::IdleUnderPressure { icid: 9, idle_secs: 10, policy: "ACCEPTED", open: 90, max: 100 }, "ICID 9 idle for 10 s while policy ACCEPTED is under pressure (90 of 100 connections)", Level::Info),
            (Event::TlsSuccess { icid: 9, protocol: &"TLSv1.3", cipher: &"TLS13_AES_256_GCM_SHA384", peer: None }, "ICID 9 TLS success protocol TLSv1.3 cipher TLS13_AES_256_GCM_SHA384", Level::Info),
            (Event::TlsSuccess { icid: 9, protocol: &"TLSv1.3", cipher: &"X", peer: Some("gw1") }, "ICID 9 TLS success protocol TLSv1.3 cipher X peer gw1 verified", Level::Info),
            (Event::TlsFailed { icid: 9, why: &"bad cert" }, "ICID 9 TLS failed: bad cert", Level::Info),
            (Event::TlsTimeout { icid: 9 }, "ICID 9 TLS failed: handshake timed out", Level::Info),
            (Event::Timeout { icid: 9, which: "command" }, "ICID 9 command timeout", Level::Info),
            (Event::BadCommandLimit { icid: 9 }, "ICID 9 Exceeded bad SMTP command limit", Level::Info),
            (Event::CommandLimit { icid: 9, limit: 1000 }, "ICID 9 Exceeded the command limit of 1000", Level::Info),
            (Event::CertificateNoLongerAccepted { icid: 9, why: &"revoked" }, "ICID 9 certificate no longer accepted: revoked", Level::Info),
            (Event::MetaRefusedIdMismatch { icid: 9, gateway: "gw2", peer: "gw1" }, "ICID 9 XPVO-META refused: gateway id gw2 is not the certificate's gw1", Level::Info),
            (Event::MetaRefusedNotEnrolled { icid: 9, gateway: "gw2" }, "ICID 9 XPVO-META refused: gateway gw2 is not enrolled", Level::Info),
            (Event::MetaRefusedOtherGateway { icid: 9, release: "m-release-4", gateway: "gw2", own: "gw1" }, "ICID 9 XPVO-META refused: release m-release-4 is for gateway gw2, this is gw1", Level::Info),
            (Event::Start { mid: 4, icid: 9 }, "Start MID 4 ICID 9", Level::Info),
            (Event::From { mid: 4, icid: 9, sender: "a@example.com" }, "MID 4 ICID 9 From: <a@example.com>", Level::Info),
            (Event::To { mid: 4, icid: 9, rid: 0, address: &"b@example.com" }, "MID 4 ICID 9 RID 0 To: <b@example.com>", Level::Info),
            (Event::RcptRejected { mid: 4, icid: 9, rid: 1, error: &"553 5.6.7 bad" }, "MID 4 ICID 9 RID 1 Rejected: 553 5.6.7 bad", Level::Info),
            (Event::RatRejected { mid: 4, icid: 9, address: &"x@elsewhere.com" }, "MID 4 ICID 9 To: <x@elsewhere.com> Rejected by RAT", Level::Info),
            (Event::RatRejectedRouting { mid: 4, icid: 9, address: &"x%y@example.com" }, "MID 4 ICID 9 To: <x%y@example.com> Rejected by RAT (sender-specified routing)", Level::Info),
            (Event::Aborted { mid: 4, why: "Receiving aborted by sender" }, "Message aborted MID 4 Receiving aborted by sender", Level::Info),
            (Event::SizeExceeded { mid: 4, icid: 9, max: 1024 }, "MID 4 ICID 9 Message aborted: size exceeds 1024 bytes", Level::Info),
            (Event::NulRefused { mid: 4, icid: 9, nuls: 2 }, "MID 4 ICID 9 Message aborted: 2 NUL characters in the message", Level::Info),
            (Event::BareLineEndings { mid: 4, icid: 9, count: 3 }, "MID 4 ICID 9 3 bare CR or LF normalized to CRLF", Level::Info),
            (Event::SpoolWriteFailed { mid: 4, icid: 9, why: &"spool/1.seg: No space left on device" }, "MID 4 ICID 9 could not be written to the spool: spool/1.seg: No space left on device", Level::Critical),
            (Event::Received { mid: 4, bytes: 120, sender: "a@example.com", recipients: 2 }, "MID 4 ready 120 bytes from <a@example.com>", Level::Info),
            (Event::Ready { mid: 4, bytes: 120, sender: "" }, "MID 4 ready 120 bytes from <>", Level::Info),
            (Event::Queued { mid: 4 }, "MID 4 queued for delivery", Level::Info),
            (Event::Finished { mid: 4 }, "Message finished MID 4 done", Level::Info),
            (Event::ScanReadFailed { mid: 4, error: &"gone" }, "MID 4 cannot be read from the spool for scanning: gone", Level::Critical),
            (Event::ScanDeferred { mid: 4, error: &"clamd down", retry_secs: 10 }, "MID 4 scanning deferred: clamd down; the message stays queued and is scanned again in 10 s", Level::Warning),
            (Event::PolicyMatched { mid: 4, policy: "DEFAULT", outgoing: false }, "MID 4 matched all recipients for per-recipient policy DEFAULT in the inbound table", Level::Info),
            (Event::PolicyMatched { mid: 4, policy: "OUT", outgoing: true }, "MID 4 matched all recipients for per-recipient policy OUT in the outbound table", Level::Info),
            (Event::AntivirusNegative { mid: 4 }, "MID 4 antivirus negative", Level::Info),
            (Event::AntivirusPositive { mid: 4, signature: "Eicar-Signature" }, "MID 4 antivirus positive 'Eicar-Signature'", Level::Info),
            (Event::AntivirusUnscannable { mid: 4, what: &"too big" }, "MID 4 antivirus unscannable: \"too big\"", Level::Info),
            (Event::Unscannable { mid: 4, why: &"MIME depth" }, "MID 4 unscannable: MIME depth", Level::Info),
            (Event::ContentFilterMatched { mid: 4, filter: "no_exe" }, "MID 4 Custom Log Entry: content filter 'no_exe' matched", Level::Info),
            (Event::DlpViolation { mid: 4, severity: &ReasonKind::Dlp, risk: &75, policy: "PCI" }, "MID 4 DLP violation. Severity: Dlp (Risk Factor: 75). DLP policy match: 'PCI'", Level::Info),
            (Event::OutbreakPositive { mid: 4, level: &4, rule: "OUTBREAK_1" }, "MID 4 Outbreak Filters: verdict positive, threat level 4, rule OUTBREAK_1", Level::Info),
            (Event::OutbreakNegative { mid: 4 }, "MID 4 Outbreak Filters: verdict negative", Level::Info),
            (Event::Dropped { mid: 4, by: "content filter:no_exe" }, "MID 4 dropped by content filter:no_exe", Level::Info),
            (Event::BouncedBy { mid: 4, by: "content filter:no_exe" }, "MID 4 bounced by content filter:no_exe", Level::Info),
            (Event::Quarantined { mid: 482, quarantine: "Policy", reason: &reason }, "MID 482 quarantined to \"Policy\" (content filter:policy_violation)", Level::Info),
            (Event::QuarantinedCentralized { mid: 482, quarantine: "Policy", reason: &reason }, "MID 482 quarantined to \"Policy\" (content filter:policy_violation) (centralized)", Level::Info),
            (Event::QuarantineFailed { mid: 4, error: &"locked" }, "MID 4 could not be quarantined: locked", Level::Critical),
            (Event::Rewritten { mid: 4, new_mid: 5, by: "content filter:tag" }, "MID 4 rewritten to MID 5 by content filter:tag", Level::Info),
            (Event::RewrittenByContentFilter { mid: 4, new_mid: 5 }, "MID 4 rewritten to MID 5 by content filter", Level::Info),
            (Event::RewrittenByQuarantine { mid: 4, new_mid: 5, quarantine: "Policy" }, "MID 4 rewritten to MID 5 by Policy Quarantine", Level::Info),
            (Event::RewrittenCentralized { mid: 4, new_mid: 5 }, "MID 4 rewritten to MID 5 by the Centralized Policy Quarantine", Level::Info),
            (Event::RewrittenNotSpooled { mid: 4, error: &e }, "MID 4 rewritten copy could not be spooled: spool: disk on fire", Level::Critical),
            (Event::RewrittenNotSpooledRescan { mid: 4, error: &io_e }, "MID 4 rewritten copy could not be spooled: No space left on device; scanned again later", Level::Critical),
            (Event::DeliveryConnection { dcid: 3, interface: "127.0.0.1", address: ip, port: 25 }, "New SMTP DCID 3 interface 127.0.0.1 address 192.0.2.7 port 25", Level::Info),
            (Event::DeliveryClose { dcid: 3 }, "DCID 3 close", Level::Info),
            (Event::TlsRequired { dcid: 3 }, "DCID 3 TLS was required but could not be successfully negotiated", Level::Info),
            (Event::StartTlsRefused { dcid: 3, reply: &"454 4.7.0 no" }, "DCID 3 TLS failed: STARTTLS refused: 454 4.7.0 no", Level::Info),
            (Event::DeliveryTlsSuccess { dcid: 3, protocol: &"TLSv1.2", cipher: &"C", domain: "example.com" }, "DCID 3 TLS success protocol TLSv1.2 cipher C example.com", Level::Info),
            (Event::DeliveryTlsFailed { dcid: 3, why: &"handshake" }, "DCID 3 TLS failed: handshake", Level::Info),
            (Event::DeliveryStart { dcid: 3, mid: 4, rids: &[0, 1], dest: Dest::Next, gateway: "" }, "Delivery start DCID 3 MID 4 to RID [0, 1]", Level::Info),
            (Event::DeliveryStart { dcid: 3, mid: 4, rids: &[0], dest: Dest::Cpq, gateway: "" }, "Delivery start DCID 3 MID 4 to RID [0] to Centralized Policy Quarantine", Level::Info),
            (Event::DeliveryStart { dcid: 3, mid: 4, rids: &[0], dest: Dest::Release, gateway: "gw1" }, "Delivery start DCID 3 MID 4 to RID [0] to gateway gw1 (released from the Centralized Policy Quarantine)", Level::Info),
            (Event::MetaRefusedByPeer { dcid: 3, mid: 4, reply: &"550 5.7.1 no" }, "DCID 3 MID 4 XPVO-META refused: 550 5.7.1 no", Level::Info),
            (Event::SenderUnsendable { dcid: 3, mid: 4, error: &"not ASCII" }, "DCID 3 MID 4 553 5.1.7 the sender cannot be sent over SMTP: not ASCII", Level::Info),
            (Event::RecipientUnsendable { dcid: 3, mid: 4, rid: 2, error: &"not ASCII" }, "DCID 3 MID 4 RID [2] the recipient cannot be sent over SMTP: not ASCII", Level::Info),
            (Event::Done { dcid: 3, mid: 4, rids: &[0, 1], dest: Dest::Next }, "Message done DCID 3 MID 4 to RID [0, 1]", Level::Info),
            (Event::Done { dcid: 3, mid: 4, rids: &[0], dest: Dest::Cpq }, "Message done DCID 3 MID 4 to RID [0] (centralized policy quarantine)", Level::Info),
            (Event::Done { dcid: 3, mid: 4, rids: &[0], dest: Dest::Release }, "Message done DCID 3 MID 4 to RID [0] (released to its gateway)", Level::Info),
            (Event::CpqResponse { mid: 4, rids: &[0], text: &"2.0.0 Ok: MID 77" }, "MID 4 RID [0] Response '2.0.0 Ok: MID 77'", Level::Info),
            (Event::ControlAnswered { dcid: 3, reply: &"250 2.0.0 ok" }, "DCID 3 XPVO-CONTROL answered 250 2.0.0 ok", Level::Info),
            (Event::BouncedByServer { dcid: 3, mid: 4, rid: 0, reason: &"550 5.1.1 unknown user" }, "Bounced: DCID 3 MID 4 to RID 0 - Bounced by destination server with response: 550 5.1.1 unknown user", Level::Info),
            (Event::BouncedUndeliverable { dcid: 3, mid: 4, rid: 0, why: &"too many retries", reason: &"421 busy" }, "Bounced: DCID 3 MID 4 to RID 0 - Unable to deliver: too many retries; last error: 421 busy", Level::Info),
            (Event::BouncedByAdministrator { mid: 4, rid: 1 }, "Bounced: MID 4 to RID 1 - bounced by administrator (bouncerecipients)", Level::Info),
            (Event::Delayed { dcid: 3, mid: 4, rids: &[0, 2], reason: &"421 busy" }, "Delayed: DCID 3 MID 4 to RID [0, 2] - 421 busy", Level::Info),
            (Event::DeletedByAdministrator { mid: 4, rid: 1 }, "MID 4 to RID [1] deleted by administrator (deleterecipients)", Level::Info),
            (Event::BounceGenerated { mid: 8, of: 4 }, "MID 8 was generated for bounce of MID 4", Level::Info),
            (Event::BounceNotSpooled { of: 4, error: &e }, "MID 4 bounce could not be spooled: spool: disk on fire", Level::Critical),
            (Event::NotificationGenerated { mid: 8, of: 4 }, "MID 8 was generated as a notification for MID 4", Level::Info),
            (Event::NotificationNotSpooled { of: 4, error: &e }, "MID 4 notification could not be spooled: spool: disk on fire", Level::Critical),
            (Event::QuarantineChanged { mid: 483, change: &released }, "MID 483 released from quarantine \"Policy\" (manual)", Level::Info),
            (Event::QuarantineChanged { mid: 484, change: &deleted }, "MID 484 deleted from quarantine \"Virus\" (expired)", Level::Info),
            (Event::QuarantineChanged { mid: 483, change: &delayed }, "MID 483 quarantine \"Policy\" scheduled exit delayed to 1700000000", Level::Info),
            (Event::QuarantineChanged { mid: 483, change: &moved }, "MID 483 moved from quarantine \"Policy\" to \"Custom\"", Level::Info),
            (Event::ReleasedFromAll { mid: 483 }, "MID 483 released from all quarantines", Level::Info),
            (Event::QuarantineMoved { mid: 483, from: "Old", to: "Unclassified" }, "MID 483 moved from quarantine \"Old\" to \"Unclassified\"", Level::Info),
            (Event::InterruptedReleasesUnlisted { error: &"locked" }, "Quarantine: cannot list interrupted releases: locked", Level::Critical),
            (Event::SweepFailed { error: &"locked" }, "Quarantine: the retention sweep failed: locked", Level::Critical),
            (Event::SweepLeaderGained { deployment: "pvo-0123456789abcdef" }, "Quarantine: this manager now runs the expiry and free-up-space sweeps of deployment pvo-0123456789abcdef", Level::Info),
            (Event::SweepLeaderLost { deployment: "pvo-0123456789abcdef" }, "Quarantine: another manager now runs the expiry and free-up-space sweeps of deployment pvo-0123456789abcdef", Level::Warning),
            (Event::ReleasesTakenOver { count: 2 }, "Quarantine: 2 releases interrupted on another manager queued by this one", Level::Info),
            (Event::ReleasedUnreadable { mid: 4, error: &"gone" }, "MID 4 released but cannot be read from the quarantine: gone", Level::Critical),
            (Event::ReleaseNotQueued { mid: 4, error: &e }, "MID 4 released but could not be queued: spool: disk on fire; it is handed over again at the next start", Level::Critical),
            (Event::ReleaseNotQueuedToGateway { mid: 4, gateway: "gw1", error: &e }, "MID 4 released but could not be queued to gateway gw1: spool: disk on fire; it is handed over again at the next start", Level::Critical),
            (Event::QueuedToGatewayUnrecorded { mid: 4, error: &"locked" }, "MID 4 queued to the gateway but the store could not record it: locked", Level::Warning),
            (Event::DeliveredUnrecorded { mid: 4, new_mid: 5, error: &"locked" }, "MID 4 delivered as MID 5 but the quarantine could not record it: locked", Level::Warning),
            (Event::StoreFailure { error: &"locked" }, "Quarantine store failure in a command: locked", Level::Warning),
            (Event::QuarantineCreated { name: "Custom", by: &"admin" }, "Quarantine \"Custom\" created by admin", Level::Info),
            (Event::QuarantineSettingsChanged { name: "Custom", by: &"admin" }, "Quarantine \"Custom\" settings changed by admin", Level::Info),
            (Event::QuarantineDeleted { name: "Custom", by: &"admin" }, "Quarantine \"Custom\" deleted by admin", Level::Info),
            (Event::CopySent { mid: 4, to: &to, new_mid: 5, by: &"admin" }, "MID 4 copy sent to a@example.com, b@example.com as MID 5 (requested by admin)", Level::Info),
            (Event::OutbreakRulesUpdated { version: "7", rules: 1, from: Path::new("/r.json"), kept: Some(Path::new("/d/outbreak/rules.json")) }, "Outbreak rules updated to version 7 (1 rule) from /r.json, kept in /d/outbreak/rules.json", Level::Info),
            (Event::OutbreakRulesUpdated { version: "7", rules: 2, from: Path::new("/r.json"), kept: None }, "Outbreak rules updated to version 7 (2 rules) from /r.json, kept in ", Level::Info),
            (Event::OutbreakCopyUnusable { dir: Path::new("/d/outbreak"), error: &"bad json" }, "Outbreak rules persisted in /d/outbreak cannot be used: bad json; the configured rules are in force instead. To fix: load the rules again with `pvo outbreakupdate FILE` (it rewrites the copy), or remove /d/outbreak to keep the configured rules", Level::Warning),
            (Event::NoOutbreakRules { why: &"none configured" }, "No outbreak rules in force: none configured", Level::Info),
            (Event::OutbreakRulesInForce { version: &"7", rules: 2, from: Path::new("/r.json"), origin: "outbreakupdate", kept: Some((1_379_084_882, Path::new("/d/outbreak/rules.json"))), why: &"the newest" }, "Outbreak rules in force: version 7 (2 rules) from /r.json (outbreakupdate at Fri Sep 13 15:08:02 2013, kept in /d/outbreak/rules.json): the newest", Level::Info),
            (Event::OutbreakRulesInForce { version: &"7", rules: 2, from: Path::new("/r.json"), origin: "configuration", kept: None, why: &"configured" }, "Outbreak rules in force: version 7 (2 rules) from /r.json (configuration): configured", Level::Info),
            (Event::OutbreakRulesChanged { version: "8", rules: 3, from: Path::new("/r8.json"), kept: Some(Path::new("/d/o.json")) }, "Outbreak rules in force: version 8 (3 rules) from /r8.json (configuration), kept in /d/o.json: the configuration's rules file changed", Level::Info),
            (Event::OutbreakRulesUnrecorded { error: &"disk full", dir: Path::new("/d/outbreak") }, "Outbreak rules: disk full; the rules in force are not recorded in /d/outbreak, so a restart may put other rules in force. To fix: free space or fix permissions there, then run `pvo outbreakupdate FILE`", Level::Warning),
            (Event::OutbreakCopyNotKept { mid: 4, error: &e }, "MID 4 no local copy kept for outbreak rescans: spool: disk on fire", Level::Warning),
            (Event::RescannedClean { mid: 4 }, "MID 4 rescanned clean: the manager releases it from the Outbreak quarantine (rescan)", Level::Info),
            (Event::RescanNotTold { clean: 3, error: &"refused" }, "Outbreak rescan: 3 messages are clean now but the manager could not be told: refused; they are tried again at the next outbreakupdate", Level::Warning),
            (Event::QueuedForCpq { mid: 4, host: "the.cpq.host" }, "MID 4 queued for the Centralized Policy Quarantine (the.cpq.host)", Level::Info),
            (Event::ReleaseSettled { release: "m-release-4" }, "Release m-release-4 was spooled before a restart but not recorded; recorded now, so a repeat of it is not delivered again", Level::Info),
            (Event::ReleaseRepeated { icid: 9, release: "m-release-4", mid: 4 }, "ICID 9 release m-release-4 of MID 4 already received; not delivered again", Level::Info),
            (Event::ReleaseNotPending { icid: 9, release: "m-release-4", error: &"locked" }, "ICID 9 release m-release-4 could not be recorded as pending in the release ledger: locked", Level::Critical),
            (Event::ReleaseReceived { mid: 10, icid: 9, by: &"admin", peer: &"manager1", original: 4, release: "m-release-4" }, "MID 10 ICID 9 released from the Centralized Policy Quarantine (admin) by the manager manager1: original MID 4 release m-release-4", Level::Info),
            (Event::ReleaseUnrecorded { mid: 10, release: "m-release-4", error: &"locked" }, "MID 10 release m-release-4 could not be recorded (locked); a repeat of it would be delivered again", Level::Warning),
            (Event::ReleaseNotSpooled { icid: 9, release: "m-release-4", error: &"full" }, "ICID 9 release m-release-4 could not be spooled: spool: full", Level::Critical),
            (Event::GatewayEndpoint { gateway: "gw1", address: &"192.0.2.7", port: 25 }, "Gateway gw1 delivers released mail to 192.0.2.7:25 (asked over SSH)", Level::Info),
            (Event::GatewayEndpointUnknown { gateway: "gw1", error: &e }, "Gateway gw1: cannot ask over SSH where released mail goes: spool: disk on fire", Level::Warning),
            (Event::GatewayStatusFailed { gateway: "gw1", why: &"refused" }, "Gateway gw1: status check over SSH failed: refused", Level::Warning),
            (Event::TransferReceived { mid: 20, icid: 9, sender: "a@example.com", bytes: 300, gateway: "gw1", gateway_mid: 4, transfer: &"t-1" }, "MID 20 ICID 9 From: <a@example.com> 300 bytes from gateway gw1 MID 4 (transfer t-1)", Level::Info),
            (Event::TransferRepeated { icid: 9, transfer: &"t-1", gateway: "gw1", mid: 20 }, "ICID 9 transfer t-1 from gateway gw1 already stored as MID 20", Level::Info),
            (Event::TransferNotStored { icid: 9, transfer: &"t-1", gateway: "gw1", error: &"locked" }, "ICID 9 transfer t-1 from gateway gw1 could not be stored: locked", Level::Critical),
            (Event::Preflight { icid: 9, gateway: "gw1", answer: &"250 2.0.0 ready" }, "ICID 9 enable preflight of gateway gw1: 250 2.0.0 ready", Level::Info),
            (Event::ControlDone { icid: 9, release: true, gateway: "gw1", mid: 4 }, "ICID 9 control release for gateway gw1 MID 4 carried out", Level::Info),
            (Event::ControlDone { icid: 9, release: false, gateway: "gw1", mid: 4 }, "ICID 9 control expire for gateway gw1 MID 4 carried out", Level::Info),
            (Event::ControlFailed { icid: 9, error: &"locked" }, "ICID 9 control could not be carried out: locked", Level::Critical),
            (Event::ReleaseQueued { mid: 30, manager_mid: 20, gateway: "gw1", gateway_mid: 4, host: "the.cpq.release.host" }, "MID 30 released MID 20 of gateway gw1 (gateway MID 4) queued to the.cpq.release.host", Level::Info),
            (Event::ReleasesUnrecorded { error: &"locked" }, "released messages queued to their gateways but the store could not record it: locked", Level::Warning),
            (Event::MigrationUnreadable { error: &"locked" }, "Migration of local quarantines to the manager: cannot read the local store: locked", Level::Critical),
            (Event::MigrationError { why: &"manager down" }, "Migration of local quarantines to the manager: manager down", Level::Warning),
            (Event::MigrationStarted { messages: 12 }, "Migration of local quarantines to the manager started: 12 messages", Level::Info),
            (Event::MigrationResumed { done: 5, total: 12 }, "Migration of local quarantines to the manager resumed: 5 of 12 messages migrated", Level::Info),
            (Event::MigrationFinished { messages: 12 }, "Migration of local quarantines to the manager finished: 12 messages", Level::Info),
            (Event::MigrationLeft { mid: 4, copy: 40 }, "MID 4 left the local quarantines meanwhile: not migrated (copy MID 40 dropped)", Level::Info),
            (Event::Migrating { mid: 4, quarantines: &["Policy"], copy: 40, transfer: &"t-4" }, "MID 4 migrating from quarantine \"Policy\" to the Centralized Policy Quarantine as MID 40 (transfer t-4)", Level::Info),
            (Event::Migrating { mid: 4, quarantines: &["Policy", "Outbreak"], copy: 40, transfer: &"t-4" }, "MID 4 migrating from quarantines \"Policy\", \"Outbreak\" to the Centralized Policy Quarantine as MID 40 (transfer t-4)", Level::Info),
            (Event::MigrationNotified { mid: 41 }, "MID 41 was generated as a notification: migration of local quarantines to the manager finished", Level::Info),
            (Event::MigrationNotificationFailed { error: &e }, "The notification that the migration finished could not be spooled: spool: disk on fire", Level::Critical),
            (Event::Committed { by: &"admin", commit: 3, comment: &"new route" }, "Configuration committed by admin (commit 3): new route", Level::Info),
            (Event::RolledBack { to: 2, by: &"admin", commit: 4 }, "Configuration rolled back to commit 2 by admin (commit 4)", Level::Info),
            (Event::ClusterConnected { machine: &"gw1", store: &"db:5432/pvo as pvo", revision: 7 }, "Cluster: machine gw1 connected to the cluster's store (db:5432/pvo as pvo); it runs revision 7", Level::Info),
            (Event::ClusterDisconnected { machine: &"gw1", why: &"connection refused", revision: 7 }, "Cluster: machine gw1 is disconnected from the cluster's store: connection refused; it keeps running revision 7 and refuses configuration commits until it is back", Level::Warning),
            (Event::ClusterApplied { machine: &"gw1", revision: 8, by: &"alice", level: &"cluster" }, "Cluster: machine gw1 applied revision 8 (cluster, committed by alice)", Level::Info),
            (Event::ClusterNotApplied { machine: &"gw1", revision: 8, why: &"cluster (revision 8) line 2: bad", running: 7 }, "Cluster: machine gw1 cannot apply revision 8: cluster (revision 8) line 2: bad; it keeps running revision 7", Level::Warning),
            (Event::ClusterCommitted { by: &"alice", revision: 8, level: &"group:east", comment: &"new route" }, "Cluster configuration committed by alice (revision 8, group:east): new route", Level::Info),
            (Event::FeatureKeyInstalled { feature: "Anti-Virus", key: &"pvo-antivirus-0a1b2c3d4e5f6071", until: &"valid until 2027-12-31 23:59:59 GMT", by: &"admin", renewed: false }, "Feature key for Anti-Virus installed by admin (key pvo-antivirus-0a1b2c3d4e5f6071, valid until 2027-12-31 23:59:59 GMT); Anti-Virus is on on this machine", Level::Info),
            (Event::FeatureKeyInstalled { feature: "Data Loss Prevention", key: &"LIC-7", until: &"no expiry", by: &"alice", renewed: true }, "Feature key for Data Loss Prevention renewed by alice (key LIC-7, no expiry); Data Loss Prevention is on on this machine", Level::Info),
            (Event::FeatureKeyRemoved { feature: "Anti-Virus", command: "antivirus", by: &"admin" }, "The feature key for Anti-Virus was removed by admin; Anti-Virus is off on this machine (`featurekey add antivirus` turns it on)", Level::Warning),
            (Event::FeatureKeyExpired { feature: "Anti-Virus", command: "antivirus" }, "The feature key for Anti-Virus has expired; Anti-Virus is off on this machine (`featurekey add antivirus` renews it)", Level::Warning),
            (Event::FeatureSkipped { mid: 4, feature: "Outbreak Filters" }, "MID 4 Outbreak Filters skipped: no feature key on this machine", Level::Info),
            (Event::ClusterMembers { by: &"admin", what: &"machine gw2 joined group Main_Group" }, "Cluster membership changed by admin: machine gw2 joined group Main_Group", Level::Info),
            (Event::ClusterUsersApplied { machine: &"gw2", revision: 4, by: &"admin", on: &"gw1", what: &"userconfig new bob" }, "Cluster: machine gw2 took the cluster's users at users revision 4 (by admin on gw1: userconfig new bob)", Level::Info),
            (Event::ClusterUsersNotApplied { machine: &"gw2", revision: 4, why: &"the cluster's user base is not usable: no enabled user has the Administrator role", running: 3 }, "Cluster: machine gw2 cannot take the cluster's users at users revision 4: the cluster's user base is not usable: no enabled user has the Administrator role; it keeps logging users in with its copy (users revision 3)", Level::Warning),
            (Event::ClusterUsersCommitted { by: &"admin", revision: 4, what: &"userconfig new bob" }, "Cluster users changed by admin (users revision 4): userconfig new bob", Level::Info),
            (Event::JoinTokenMade { token: "1a2b3c4d", by: "admin", expires: "2025-01-31 13:00:00 UTC" }, "Cluster: join token 1a2b3c4d made by admin, valid until 2025-01-31 13:00:00 UTC", Level::Info),
            (Event::JoinTokenLogin { token: "1a2b3c4d", from: &"127.0.0.1:50000" }, "Cluster: join token 1a2b3c4d accepted for an SSH login from 127.0.0.1:50000", Level::Info),
            (Event::JoinTokenClaimed { token: "1a2b3c4d", machine: "gw2" }, "Cluster: join token 1a2b3c4d claimed by machine gw2, which is joining", Level::Info),
            (Event::JoinTokenUsed { token: "1a2b3c4d", machine: "gw2" }, "Cluster: join token 1a2b3c4d used: machine gw2 joined with it", Level::Info),
            (Event::JoinTokenRefused { what: &"an SSH login from 127.0.0.1:50000", why: &"the join token expired at 2025-01-31 13:00:00 UTC" }, "Cluster: join token refused for an SSH login from 127.0.0.1:50000: the join token expired at 2025-01-31 13:00:00 UTC", Level::Warning),
            (Event::JoinTokenRevoked { token: "1a2b3c4d", by: "admin" }, "Cluster: join token 1a2b3c4d revoked by admin", Level::Info),
            (Event::LoginThrottled { user: "admin", from: &"ssh 127.0.0.1", throttle: &"5 failures" }, "Login throttled: user \"admin\" from ssh 127.0.0.1: 5 failures (further attempts are refused without checking the password)", Level::Warning),
            (Event::CertificateRevoked { serial: &"0a1b", subject: "gw1", by: "" }, "CPQ certificate 0a1b (gw1) revoked by admin: refused from the next handshake", Level::Info),
            (Event::CertificateRevoked { serial: &"0a1b", subject: "", by: "ops" }, "CPQ certificate 0a1b revoked by ops: refused from the next handshake", Level::Info),
            (Event::Redirected { host: &"relay.example.com", port: 25, recipients: 3 }, "All queued recipients redirected to relay.example.com:25 by administrator (3 recipients)", Level::Info),
            (Event::ReceivingSuspended { listeners: &listeners }, "Receiving suspended for euq_listener, cpq_listener.", Level::Info),
            (Event::ReceivingResumed { listeners: &listeners }, "Receiving resumed for euq_listener, cpq_listener.", Level::Info),
            (Event::StaysSuspended { why: &"Listener IncomingMail cannot bind 127.0.0.1:25" }, "Listener IncomingMail cannot bind 127.0.0.1:25; it stays suspended.", Level::Warning),
            (Event::DeliverySuspended, "Delivery suspended.", Level::Info),
            (Event::DeliveryResumed, "Delivery resumed.", Level::Info),
            (Event::AuditNotRecorded { what: &"commit by admin", error: &e }, "The audit trail could not record commit by admin: spool: disk on fire", Level::Critical),
            (Event::SelfSignedRenewed { hostname: "mx.example.com", why: &"expires soon" }, "TLS: a new self-signed certificate for mx.example.com is in force (expires soon)", Level::Info),
            (Event::SelfSignedNotRenewed { error: &e }, "TLS: the self-signed certificate could not be renewed: spool: disk on fire", Level::Warning),
        ];
        for (event, text, level) in &cases {
            assert_eq!(event.to_string(), *text);
            assert_eq!(event.level(), *level, "{text}");
        }
    }

    /// The state-file notices, as `run/ids` and the counters file report them.
    #[test]
    fn notices_render_their_exact_text() {
        let cases = [
            (
                Notice::IdsNotWritten {
                    path: "/d/run/ids".into(),
                    error: "disk full".into(),
                    on_disk: [7, 8, 9],
                },
                "MID, ICID and DCID counters could not be written to /d/run/ids: disk full; numbers go on in memory, but a crash before the file is written again would give MIDs from 7, ICIDs from 8 and DCIDs from 9 a second time",
            ),
            (
                Notice::CountersWrittenAgain {
                    path: "/d/run/counters.json".into(),
                },
                "Lifetime counters written to /d/run/counters.json again",
            ),
            (
                Notice::CountersNotWritten {
                    path: "/d/run/counters.json".into(),
                    error: "disk full".into(),
                },
                "Lifetime counters could not be written to /d/run/counters.json: disk full; they are kept in memory and written again every 10 seconds",
            ),
        ];
        for (notice, text) in cases {
            assert_eq!(notice.to_string(), text);
            assert_eq!(Event::Notice(&notice).to_string(), text);
        }
    }

    /// A report's events are its `log_lines`, in the same order.
    #[test]
    fn report_events_are_the_report_lines() {
        let r = ActionReport {
            msg_id: 1,
            gateway_mid: 483,
            changes: vec![
                Change::Released {
                    quarantine: "Policy".into(),
                    cause: Cause::Manual,
                    early: true,
                },
                Change::Deleted {
                    quarantine: "Virus".into(),
                    cause: Cause::Rescan,
                },
            ],
            outcome: Outcome::Deliver {
                msg_id: 1,
                early_release_actions: vec![],
            },
        };
        let lines: Vec<String> = report_events(483, &r).map(|e| e.to_string()).collect();
        assert_eq!(lines, r.log_lines(483));
        assert_eq!(lines.len(), 3);
    }

    /// The counters bumped by an event are the ones that count its fact, once.
    #[test]
    fn events_bump_the_counters_of_their_fact() {
        let t = Tally::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        t.count(&Event::Connection {
            icid: 1,
            cpq: false,
            interface: "Management",
            interface_address: ip,
            address: ip,
            rdns_host: None,
            verified: false,
        });
        t.count(&Event::RatRejected {
            mid: 1,
            icid: 1,
            address: &"x@y",
        });
        t.count(&Event::RatRejectedRouting {
            mid: 1,
            icid: 1,
            address: &"x%z@y",
        });
        t.count(&Event::Received {
            mid: 1,
            bytes: 10,
            sender: "",
            recipients: 3,
        });
        // A message that was not received over SMTP is not counted as received.
        t.count(&Event::Ready {
            mid: 2,
            bytes: 10,
            sender: "",
        });
        t.count(&Event::BouncedByServer {
            dcid: 1,
            mid: 1,
            rid: 0,
            reason: &"550",
        });
        t.count(&Event::BouncedUndeliverable {
            dcid: 1,
            mid: 1,
            rid: 1,
            why: &"old",
            reason: &"421",
        });
        t.count(&Event::BouncedByAdministrator { mid: 1, rid: 2 });
        t.count(&Event::Delayed {
            dcid: 1,
            mid: 1,
            rids: &[0],
            reason: &"421",
        });
        assert_eq!(n(&t.connections_in), 1);
        assert_eq!(n(&t.rejected_recipients), 2);
        assert_eq!(n(&t.messages_received), 1);
        assert_eq!(n(&t.recipients_received), 3);
        assert_eq!(n(&t.bounced_rcpts), 3);
    }

    /// The ids an event carries to `tracing`.
    #[test]
    fn events_name_their_connection_message_and_delivery() {
        let cases = [
            (
                Event::Close { icid: 9 }.ids(),
                Ids {
                    icid: Some(9),
                    ..Ids::default()
                },
            ),
            (
                Event::Start { mid: 4, icid: 9 }.ids(),
                Ids {
                    icid: Some(9),
                    mid: Some(4),
                    dcid: None,
                },
            ),
            (
                Event::Done {
                    dcid: 3,
                    mid: 4,
                    rids: &[0],
                    dest: Dest::Next,
                }
                .ids(),
                Ids {
                    icid: None,
                    mid: Some(4),
                    dcid: Some(3),
                },
            ),
            (
                Event::DeliveryClose { dcid: 3 }.ids(),
                Ids {
                    dcid: Some(3),
                    ..Ids::default()
                },
            ),
            (
                Event::Finished { mid: 4 }.ids(),
                Ids {
                    mid: Some(4),
                    ..Ids::default()
                },
            ),
            (Event::ShuttingDown.ids(), Ids::default()),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
