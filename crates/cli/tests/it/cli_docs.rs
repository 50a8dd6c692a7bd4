//! Keeps `docs/cli.md` equal to the binary's `--help` texts.
//!
//! The golden file is `docs/cli.md` itself, made by `docs/gen-cli.sh`: the test runs that
//! script against the binary under test into a temporary file and compares. A plain golden
//! file rather than `insta` snapshots because the reference page *is* the snapshot: insta would
//! keep a second copy of every help text in `.snap` files beside the page, and one generator
//! (the script) means the page and the check cannot drift apart.

use std::path::Path;

use crate::support::root;

/// What to run to bring the page back in sync.
const UPDATE: &str = "cargo build -p flatfhir && sh docs/gen-cli.sh \
     (or: UPDATE_CLI_DOCS=1 cargo test -p flatfhir --test it cli_docs)";

/// `docs/gen-cli.sh` run against this binary, written to `out`.
fn generate(out: &Path) {
    let status = std::process::Command::new("sh")
        .arg(root().join("docs/gen-cli.sh"))
        .arg(out)
        .env("FLATFHIR", assert_cmd::cargo::cargo_bin("flatfhir"))
        .current_dir(root())
        .status()
        .expect("sh docs/gen-cli.sh");
    assert!(status.success(), "docs/gen-cli.sh failed: {status}");
}

#[test]
fn docs_cli_md_is_the_help_of_this_binary() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("cli.md");
    generate(&fresh);
    let want = std::fs::read_to_string(&fresh).unwrap();
    let page = root().join("docs/cli.md");
    let have = std::fs::read_to_string(&page).unwrap_or_default();
    if have == want {
        return;
    }
    if std::env::var_os("UPDATE_CLI_DOCS").is_some_and(|v| v == "1") {
        std::fs::write(&page, &want).unwrap();
        eprintln!("updated {}", page.display());
        return;
    }
    // The first line that differs, to say where without dumping the whole page.
    let (n, (h, w)) = have
        .lines()
        .chain(std::iter::repeat("<end of file>"))
        .zip(want.lines().chain(std::iter::repeat("<end of file>")))
        .enumerate()
        .find(|(_, (h, w))| h != w)
        .expect("the texts differ, so some line does");
    panic!(
        "docs/cli.md is out of date with `flatfhir --help` (first difference at line {}):\n  \
         docs/cli.md: {h}\n  --help:      {w}\nRegenerate it: {UPDATE}",
        n + 1
    );
}

/// The page covers every subcommand the binary lists, so a new one cannot be left out.
#[test]
fn docs_cli_md_has_a_section_per_subcommand() {
    let help = crate::support::flatfhir()
        .arg("--help")
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let subs: Vec<&str> = help
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|s| *s != "help")
        .collect();
    assert!(subs.len() >= 7, "subcommands read from --help: {subs:?}");
    let page = std::fs::read_to_string(root().join("docs/cli.md")).unwrap();
    for s in subs {
        assert!(
            page.contains(&format!("\n## flatfhir {s}\n")),
            "docs/cli.md has no section for `flatfhir {s}`; regenerate it: {UPDATE}"
        );
    }
}
