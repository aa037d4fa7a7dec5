//! The layering of the crate, checked from its sources: the module graph built from the
//! code's `crate::` and `super::` paths (use lines and inline paths; `#[cfg(test)]`
//! modules left out), the way `module-cycles` builds it. It fails on
//!
//! - (a) any module cycle, in the binary's `src/` and in every engine crate;
//! - (b) an import from a core module to an app, network, adapter or root module;
//! - (c) an adapter importing a module of another adapter, and any import that goes up
//!   the layers (an adapter importing the root, the network layer importing an adapter);
//! - (d) a module naming `state::Handles` outside the commands, the channels that
//!   dispatch them, the root and `state` ([`may_name_handles`]);
//! - (e) the queue task's module calling a spool read or sync ([`DISK_CALLS`]).
//!
//! The layers, lowest first, each a folder of `src/`: **core** (`src/core/`: the domain —
//! configuration model, envelope, ids, clock, queue, scanning, quarantine service, CPQ
//! records, ledgers, inbox, migration and PKI, users, audit, events, the subsystem
//! handles), **app** (`src/commands/`), **net** (`src/net/`: what the network adapters
//! build on — TLS configurations, the CPQ trust and its verifiers, name resolution, the
//! outbound connect, the reply reader), **adapter** (`src/adapters/NAME/`, each one a
//! component: the SMTP server, the SMTP/CPQ client, clamd, the diagnostics probes, the
//! SSH client to gateways, the admin socket, the SSH shell, the web server, the CLI),
//! **root** (the files at the top of `src/`: node start-up, the running listeners and
//! servers it owns, quickstart). [`place`] reads a module's layer from its path, so a
//! module outside the folders and the root list has no place and fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Core,
    App,
    Net,
    Adapter,
    Root,
}

use Layer::*;

/// The modules of the composition root: the top of `src/`, beside the layer folders.
const ROOT: &[&str] = &["listeners", "node", "quickstart", "servers"];

/// The layer of a module is its folder: `core::…`, `commands::…` (the app), `net::…`,
/// `adapters::NAME::…` (component NAME), and the
/// root modules of [`ROOT`] at the top. Anything else has no place and fails the test.
fn place(module: &str) -> Option<(Layer, String)> {
    let mut segs = module.split("::");
    let first = segs.next()?;
    Some(match first {
        "core" => (Core, String::new()),
        "commands" => (App, String::new()),
        "net" => (Net, String::new()),
        "adapters" => (Adapter, segs.next().unwrap_or_default().to_string()),
        _ if ROOT.contains(&first) && segs.next().is_none() => (Root, String::new()),
        _ => return None,
    })
}

fn module_of(root: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(root).ok()?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    if parts.iter().any(|p| p == "tests") || stem == "tests" {
        return None;
    }
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    if parts == ["main"] || parts == ["lib"] {
        parts.clear();
    }
    Some(parts)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without `// comments` and without `#[cfg(test)] mod NAME { ... }` blocks.
fn strip(src: &str) -> String {
    let no_comments: String = src
        .lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string literal ("http://") ends the line early too; the
            // paths this test looks for are never in one.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = no_comments.as_str();
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ");
        match (is_mod, after.find('{')) {
            (true, Some(open)) if !after[..open].contains(';') => {
                let mut depth = 0usize;
                let mut end = after.len();
                for (j, c) in after[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + j + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => {
                out.push_str("#[cfg(test)]");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path after `crate::` or `super::` (the latter made absolute from `module`),
/// with `{a, b::c}` groups expanded.
fn paths(src: &str, module: &[String]) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    let text = src;
    for (kw, base) in [("crate::", Vec::new()), ("super::", parent_of(module))] {
        let mut from = 0;
        while let Some(i) = text[from..].find(kw) {
            let at = from + i;
            from = at + kw.len();
            let before = text[..at].chars().last();
            if before.is_some_and(|c| is_ident(c) || c == ':') {
                continue;
            }
            let mut base = base.clone();
            let mut j = from;
            // `super::super::x`
            while text[j..].starts_with("super::") && kw == "super::" {
                base.pop();
                j += "super::".len();
            }
            expand(text, j, base, &mut found);
        }
    }
    found
}

/// The parent of a file module: where `super::` points from its top level.
fn parent_of(module: &[String]) -> Vec<String> {
    let mut m = module.to_vec();
    m.pop();
    m
}

/// Reads a path (or a `{...}` group of paths) starting at `at`, prefixed by `prefix`.
fn expand(text: &str, mut at: usize, prefix: Vec<String>, found: &mut BTreeSet<Vec<String>>) {
    let mut path = prefix;
    loop {
        let rest = &text[at..];
        if rest.starts_with('{') {
            let mut depth = 0usize;
            let mut start = at + 1;
            for (j, c) in rest.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            expand_item(text, start, at + j, &path, found);
                            return;
                        }
                    }
                    ',' if depth == 1 => {
                        expand_item(text, start, at + j, &path, found);
                        start = at + j + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        let len = rest.chars().take_while(|c| is_ident(*c)).count();
        if len == 0 {
            break;
        }
        path.push(rest[..len].to_string());
        at += len;
        if text[at..].starts_with("::") {
            at += 2;
        } else {
            break;
        }
    }
    if !path.is_empty() {
        found.insert(path);
    }
}

fn expand_item(
    text: &str,
    start: usize,
    end: usize,
    prefix: &[String],
    found: &mut BTreeSet<Vec<String>>,
) {
    let item = &text[start..end];
    let offset = item.len() - item.trim_start().len();
    if item.trim().is_empty() {
        return;
    }
    if item.trim() == "self" {
        found.insert(prefix.to_vec());
        return;
    }
    // Only the part before `as` names something; `expand` stops at the first
    // character that is not part of a path anyway.
    expand(text, start + offset, prefix.to_vec(), found);
}

fn resolve(path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|k| path[..k].to_vec())
        .find(|p| modules.contains(p))
}

type Graph = BTreeMap<Vec<String>, BTreeSet<Vec<String>>>;

fn graph(root: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut mods = BTreeMap::new();
    for f in files {
        if let Some(m) = module_of(root, &f) {
            mods.insert(m, f);
        }
    }
    let names: BTreeSet<Vec<String>> = mods.keys().cloned().collect();
    let mut g = Graph::new();
    for (m, f) in &mods {
        let src = strip(&std::fs::read_to_string(f).unwrap());
        let edges = g.entry(m.clone()).or_default();
        for p in paths(&src, m) {
            if let Some(t) = resolve(&p, &names) {
                if &t != m && !t.is_empty() {
                    edges.insert(t);
                }
            }
        }
    }
    g
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Vec<String>) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(w.join("::"));
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// Why an import from `from` to `to` breaks the layering, if it does.
fn violation(from: &str, to: &str) -> Option<String> {
    let (lf, cf) = place(from)?;
    let (lt, ct) = place(to)?;
    match (lf, lt) {
        (Core, Core) | (App, Core | App) | (Net, Core | Net) | (Adapter, Core | App | Net) => None,
        (Core, _) => Some(format!("the core module {from} imports {lt:?} {to}")),
        (Adapter, Adapter) if cf == ct => None,
        (Adapter, Adapter) => Some(format!(
            "the adapter {from} ({cf}) imports another adapter, {to} ({ct})"
        )),
        (Root, _) => None,
        _ => Some(format!("{lf:?} {from} imports {lt:?} {to}, up the layers")),
    }
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_module_cycle_in_any_crate_of_the_workspace() {
    let mut roots = vec![manifest_dir().join("src")];
    let mut crates: Vec<PathBuf> = std::fs::read_dir(manifest_dir().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    crates.sort();
    assert!(!crates.is_empty(), "the engine crates are found");
    roots.extend(crates);
    let mut found = Vec::new();
    for root in &roots {
        for c in cycles(&graph(root)) {
            found.push(format!("{}: {}", root.display(), c.join(", ")));
        }
    }
    assert!(found.is_empty(), "module cycles: {found:#?}");
}

#[test]
fn every_module_has_a_layer_and_imports_go_down_the_layers() {
    let g = graph(&manifest_dir().join("src"));
    let unplaced: Vec<String> = g
        .keys()
        .filter(|m| !m.is_empty())
        .map(|m| m.join("::"))
        .filter(|m| place(m).is_none())
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules without a layer in LAYERS: {unplaced:?}"
    );
    let mut broken = Vec::new();
    for (m, targets) in &g {
        let from = m.join("::");
        for t in targets {
            if let Some(why) = violation(&from, &t.join("::")) {
                broken.push(why);
            }
        }
    }
    assert!(broken.is_empty(), "imports against the layers: {broken:#?}");
}

#[test]
fn the_rules_catch_what_they_are_meant_to() {
    // (b) the core reaching an adapter, the app, the net layer or the root.
    assert!(violation("core::queue", "adapters::delivery").is_some());
    assert!(violation("core::scanning::pipeline", "adapters::clamd").is_some());
    assert!(violation("core::state", "node").is_some());
    assert!(violation("core::cpq::gateways", "adapters::ssh_client").is_some());
    assert!(violation("core::envelope", "commands").is_some());
    assert!(violation("core::state", "net::tls").is_some());
    // (c) an adapter reaching another one, or anything reaching up.
    assert!(violation("adapters::delivery", "adapters::ssh_client").is_some());
    assert!(violation("adapters::ssh", "servers").is_some());
    assert!(violation("net::tls", "adapters::web").is_some());
    assert!(violation("net::tls", "commands").is_some());
    assert!(violation("commands", "node").is_some());
    assert!(violation("commands::status", "net::tls").is_some());
    // What the layering allows.
    assert!(violation("adapters::delivery", "core::queue").is_none());
    assert!(violation("adapters::web::ui", "adapters::web::jobs").is_none());
    assert!(violation("adapters::smtp_server::session", "net::tls").is_none());
    assert!(violation("adapters::ssh", "commands").is_none());
    assert!(violation("node", "adapters::delivery").is_none());
    // A module has the layer of its folder; one outside the folders and the root has none.
    assert_eq!(place("core::cpq::pki"), Some((Core, String::new())));
    assert_eq!(
        place("adapters::cli::client"),
        Some((Adapter, "cli".into()))
    );
    assert_eq!(place("node"), Some((Root, String::new())));
    assert_eq!(place("queue"), None);
    assert_eq!(place("node::x"), None);
}

#[test]
fn the_graph_reads_paths_the_way_the_code_writes_them() {
    let module = vec!["cpq".to_string(), "gateway".to_string()];
    let src = strip(
        "use crate::{queue::{self, Event}, state::Shared as S};\n\
         // crate::commented::out\n\
         fn f() { crate::clock::unix_now(); super::records::x(); }\n\
         #[cfg(test)]\nmod tests { use crate::node::Node; }\n",
    );
    let got = paths(&src, &module);
    let want: BTreeSet<Vec<String>> = [
        vec!["queue"],
        vec!["queue", "Event"],
        vec!["state", "Shared"],
        vec!["clock", "unix_now"],
        vec!["cpq", "records", "x"],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(String::from).collect())
    .collect();
    assert_eq!(got, want);
    let mut g = Graph::new();
    let m = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    g.entry(m("a")).or_default().insert(m("b"));
    g.entry(m("b")).or_default().insert(m("a"));
    g.entry(m("c")).or_default().insert(m("a"));
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".to_string()]]);
}

/// Whether `module` may name `state::Handles`, the struct of every subsystem handle:
/// `core::state`, which defines it; the command handlers (`commands` and below), whose
/// context it is; the channels that hand that context to `commands::dispatch` — the
/// admin socket (`adapters::admin` and below), the SSH shell (`adapters::ssh`) and the
/// web server with its sessions, jobs, UI and REST API (`adapters::web` and below, except
/// `adapters::web::metrics`, which reads its own handles); and the composition root (the
/// modules of [`ROOT`]), which builds it. Every other module receives the subsystem
/// handles it uses, as parameters or as a struct of them.
fn may_name_handles(module: &str) -> bool {
    let under = |top: &str| module == top || module.starts_with(&format!("{top}::"));
    module == "core::state"
        || under("commands")
        || under("adapters::admin")
        || under("adapters::ssh")
        || (under("adapters::web") && !under("adapters::web::metrics"))
        || ROOT.contains(&module)
}

/// Whether the identifier `name` appears in `src` (a whole word, not a part of one).
fn names(src: &str, name: &str) -> bool {
    src.match_indices(name).any(|(i, _)| {
        let before = src[..i].chars().last();
        let after = src[i + name.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// No module outside those of [`may_name_handles`] names `Handles` in its code (comments
/// and `#[cfg(test)]` modules left out): each part receives only the handles it uses.
#[test]
fn only_the_commands_their_channels_and_the_root_name_the_handles_struct() {
    let root = manifest_dir().join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut found = Vec::new();
    for f in files {
        let Some(m) = module_of(&root, &f) else {
            continue;
        };
        let module = m.join("::");
        let src = strip(&std::fs::read_to_string(&f).unwrap());
        if !module.is_empty() && !may_name_handles(&module) && names(&src, "Handles") {
            found.push(module);
        }
    }
    assert!(
        found.is_empty(),
        "modules that take `state::Handles` instead of the handles they use: {found:?}"
    );
}

#[test]
fn the_handles_rule_reads_what_it_is_meant_to() {
    assert!(may_name_handles("commands::status"));
    assert!(may_name_handles("adapters::web::ui::admin"));
    assert!(may_name_handles("adapters::ssh"));
    assert!(may_name_handles("node"));
    assert!(may_name_handles("core::state"));
    assert!(!may_name_handles("adapters::web::metrics"));
    assert!(!may_name_handles("adapters::ssh_client"));
    assert!(!may_name_handles("adapters::delivery"));
    assert!(!may_name_handles("core::queue"));
    assert!(!may_name_handles("core::state::x"));
    let src = strip("use crate::core::state::Handles;\n// Handles\n");
    assert!(names(&src, "Handles"));
    assert!(!names(&strip("// Handles\nstruct MailHandles;"), "Handles"));
}

/// What `core::queue` (the queue manager's task) must not call: the spool's reads and
/// its fsync, a blocking wait, or the file system. It reaches the disk only through the
/// spool's non-blocking `append`, `update` and `finish`.
const DISK_CALLS: &[&str] = &[
    ".read_body(",
    ".sync(",
    "Spool::open",
    "spawn_blocking",
    "std::fs",
    "File::",
];

/// The disk calls of [`DISK_CALLS`] in `src`.
fn disk_calls(src: &str) -> Vec<&'static str> {
    DISK_CALLS
        .iter()
        .copied()
        .filter(|c| src.contains(c))
        .collect()
}

/// The queue task never touches the disk (a body a DSN quotes is read by the DSN's own
/// task, `core::bounce`): its module's code names none of [`DISK_CALLS`].
#[test]
fn the_queue_task_calls_no_disk_read_or_sync() {
    let src = strip(&std::fs::read_to_string(manifest_dir().join("src/core/queue.rs")).unwrap());
    assert_eq!(disk_calls(&src), Vec::<&str>::new());
    assert_eq!(
        disk_calls("self.mail.spool.read_body(mid); spool.sync()"),
        vec![".read_body(", ".sync("]
    );
}
