//! The import rule of docs/architecture.md, checked: each top-level module of `src/`
//! uses only modules before it in `LAYERS`, so wire types, money and ledger rules
//! never reach up to the hub, the WebSocket edge or HTTP, and no two modules import
//! each other.

use std::collections::BTreeSet;
use std::path::Path;

/// Every module of the crate, lowest first.
const LAYERS: [&str; 20] = [
    "protocol",
    "ids",
    "clock",
    "metrics",
    "auth",
    "moderation",
    "pk",
    "money",
    "ledger",
    "payments",
    "webhooks",
    "config",
    "gift",
    "bus",
    "relay",
    "hub",
    "ws",
    "http",
    "serve",
    "lib",
];

/// The top-level module a source file belongs to (`src/hub/room.rs` → `hub`).
fn module_of(path: &Path, src: &Path) -> String {
    let relative = path.strip_prefix(src).unwrap();
    let first = relative
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The modules a file's code names as `crate::x` (comments aside).
fn uses(source: &str) -> BTreeSet<String> {
    let code = source
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"));
    let mut used = BTreeSet::new();
    for line in code {
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                used.insert(name);
            }
        }
    }
    used
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    files(&src, &mut paths);
    let rank = |module: &str| LAYERS.iter().position(|m| *m == module);
    let mut wrong = Vec::new();
    for path in paths {
        let module = module_of(&path, &src);
        if module == "main" {
            continue; // the binary, above everything
        }
        let Some(own) = rank(&module) else {
            wrong.push(format!(
                "{}: module {module} is not in LAYERS",
                path.display()
            ));
            continue;
        };
        for used in uses(&std::fs::read_to_string(&path).unwrap()) {
            match rank(&used) {
                Some(theirs) if theirs < own || used == module => {}
                _ => wrong.push(format!("{}: {module} uses crate::{used}", path.display())),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}
