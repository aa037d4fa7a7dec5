//! File arguments of commands (`outbreakupdate FILE`): over SSH (the real OpenSSH
//! client) only a plain name in the node's import directory `DATA_DIR/import/`, with one
//! answer for anything that is not a file there; locally an absolute path too. Errors
//! name the file, line and column, never the content of a file that is not a rules file.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;

const RULES: &str = r#"version = "2026-12-06.1"

[[rule]]
id = "OUTB-FILES-1"
description = "A marker"
threat_level = 4
body_regex = ["(?i)files-marker-3"]
"#;

/// What a shadow file looks like; the secret must never be printed.
const SHADOW: &str = "root:$y$j9T$Sh4dowS3cret$hashhash:19000:0:99999:7:::\n";
const SECRET: &str = "Sh4dowS3cret";

/// An ed25519 key pair made by ssh-keygen: (private key path, public key line).
fn keygen(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("files_key");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "files@test", "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {}", printed(&out));
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_string())
}

/// `ssh admin@127.0.0.1 -p PORT COMMAND` with the key, no user configuration.
fn ssh(port: u16, key: &Path, command: &str) -> Output {
    openssh()
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(key)
        .args(["-p", &port.to_string(), "-l", "admin", "127.0.0.1", command])
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .expect("run ssh")
}

fn pvo(node: &Node, args: &[&str], cwd: &Path) -> Output {
    Command::new(pvo_bin())
        .arg("--dir")
        .arg(node.data_dir())
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run pvo")
}

/// Asserts a failure whose output says `says` and none of `secrets`.
#[track_caller]
fn refused(out: &Output, says: &str, secrets: &[&str]) -> String {
    let t = printed(out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains(says), "{says:?} in:\n{t}");
    for s in secrets {
        assert!(!t.contains(s), "leaks {s:?}:\n{t}");
    }
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn file_arguments_over_ssh_come_from_the_import_directory_and_errors_never_echo_a_file() {
    let sink = Sink::accepting();
    let node = Node::start(&GatewayToml::new(&sink).ssh().build());
    let data = node.data_dir();
    let import = data.join("import");
    assert!(import.is_dir(), "the node creates {}", import.display());
    let password = initial_password(&node);
    let password_file = data.join("run").join("initial-admin-password");
    let shadow = node.dir().join("shadow");
    std::fs::write(&shadow, SHADOW).unwrap();
    let secrets = [SECRET, "root:", password.as_str()];

    let (key, public) = keygen(node.dir());
    let out = pvo(
        &node,
        &["userconfig", "sshkey", "add", "admin", &public],
        node.dir(),
    );
    assert!(out.status.success(), "{}", printed(&out));
    let port = ssh_port(&node);

    // Paths are refused over SSH, whether they exist or not.
    let pw = password_file.to_str().unwrap().to_string();
    let sh = shadow.to_str().unwrap().to_string();
    for arg in [
        sh.as_str(),
        pw.as_str(),
        "/proc/self/environ",
        "/etc/passwd",
        "/nonexistent/file",
        "../run/initial-admin-password",
        "..",
    ] {
        let out = ssh(port, &key, &format!("outbreakupdate {arg}"));
        refused(&out, "is not a file name in the import directory", &secrets);
    }
    // Inside the import directory: a link out of it, a directory, a missing name all
    // get the same answer.
    symlink(&password_file, import.join("link")).unwrap();
    symlink(&shadow, import.join("shadow-link")).unwrap();
    std::fs::create_dir(import.join("sub")).unwrap();
    let missing = refused(
        &ssh(port, &key, "outbreakupdate missing"),
        "no such file in the import directory",
        &secrets,
    );
    for name in ["link", "shadow-link", "sub"] {
        let e = refused(
            &ssh(port, &key, &format!("outbreakupdate {name}")),
            "no such file in the import directory",
            &secrets,
        );
        assert_eq!(e, missing.replace("missing", name), "{name}");
    }
    // A file there that is not a rules file: file, line, column, what was expected.
    std::fs::write(import.join("shadow"), SHADOW).unwrap();
    refused(
        &ssh(port, &key, "outbreakupdate shadow"),
        "outbreak rules file",
        &secrets,
    );
    let e = String::from_utf8_lossy(&ssh(port, &key, "outbreakupdate shadow").stderr).into_owned();
    assert!(
        e.contains("import/shadow: line 1, column ") && e.contains("expected"),
        "{e}"
    );
    std::fs::write(
        import.join("env.toml"),
        format!("API_TOKEN = \"{SECRET}\"\nversion = 7\n"),
    )
    .unwrap();
    let e = refused(
        &ssh(port, &key, "outbreakupdate env.toml"),
        "line 1, column 1: unknown field",
        &[SECRET, "API_TOKEN"],
    );
    assert!(e.contains("expected `version` or `rule`"), "{e}");
    // A rules file there is put in force.
    std::fs::write(import.join("rules.toml"), RULES).unwrap();
    let out = ssh(port, &key, "outbreakupdate rules.toml");
    assert!(out.status.success(), "{}", printed(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("version 2026-12-06.1"),
        "{}",
        printed(&out)
    );

    // Locally: an absolute path works, but an error never shows the content.
    let cwd = tempfile::tempdir().unwrap();
    let e = refused(
        &pvo(&node, &["outbreakupdate", &sh], cwd.path()),
        "line 1, column ",
        &secrets,
    );
    assert!(e.contains(&sh), "names the file: {e}");
    refused(
        &pvo(&node, &["outbreakupdate", &pw], cwd.path()),
        "line 1, column ",
        &secrets,
    );
    refused(
        &pvo(&node, &["outbreakupdate", "/proc/self/environ"], cwd.path()),
        "outbreak rules file /proc/",
        &secrets,
    );
    // A plain name is one of the import directory, from any working directory.
    let out = pvo(&node, &["outbreakupdate", "rules.toml"], cwd.path());
    assert!(out.status.success(), "{}", printed(&out));
}
