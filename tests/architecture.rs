//! The map in docs/architecture.md holds: no two top-level modules import each other, directly or through others,
//! and neither do the submodules of `measure`. Read from the sources: every `crate::A` (and `crate::measure::B`)
//! path in code, and `super::B` in a direct child of `measure`, is an edge; comments and test modules are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a source file belongs to: its top-level module, or `measure::SUB` inside `measure`.
fn module_of(relative: &Path) -> Option<String> {
    let parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    match parts.as_slice() {
        [single] if single == "lib" || single == "main" => None,
        [top, sub, ..] if top == "measure" && sub != "mod" => Some(format!("measure::{sub}")),
        [top, ..] => Some(top.clone()),
        [] => None,
    }
}

/// The code of a file without comments and without its test module.
fn code_of(text: &str) -> String {
    let body = text.split("#[cfg(test)]").next().unwrap_or_default();
    body.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// Identifiers following each occurrence of `prefix` (`crate::` gives `measure`, then `vinfo` for the next).
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        let segments: Vec<&str> = rest
            .split("::")
            .map(|s| s.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or_default())
            .take(2)
            .collect();
        out.push(segments);
    }
    out
}

fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f.strip_prefix(&src).unwrap())).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let Some(from) = module_of(relative) else { continue };
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let mut targets = Vec::new();
        for segments in paths_after(&code, "crate::") {
            match segments.as_slice() {
                [top, sub] if *top == "measure" => targets.push(format!("measure::{sub}")),
                [top, ..] => targets.push(top.to_string()),
                [] => {}
            }
        }
        // `super::B` in src/measure/A.rs or src/measure/A/mod.rs names measure::B.
        let depth = relative.iter().count();
        let direct = depth == 2 || (depth == 3 && relative.ends_with("mod.rs"));
        if from.starts_with("measure::") && direct {
            targets.extend(
                paths_after(&code, "super::").into_iter().filter_map(|s| s.first().map(|b| format!("measure::{b}"))),
            );
        }
        for to in targets {
            if to != from && modules.contains(&to) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

/// A cycle through `start`, if any.
fn cycle_from(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in edges.get(&node).into_iter().flatten() {
            if next == start {
                return Some([path.clone(), vec![start.to_string()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

#[test]
fn no_module_imports_itself_through_others() {
    let edges = edges();
    assert!(edges.get("measure::families").is_some_and(|e| e.contains("measure::vinfo")), "the scan sees imports");
    for module in edges.keys() {
        if let Some(cycle) = cycle_from(&edges, module) {
            panic!("module cycle: {}", cycle.join(" -> "));
        }
    }
    // The estimator stands alone: nothing of `measure` below it.
    let vinfo = &edges["measure::vinfo"];
    assert!(vinfo.iter().all(|m| !m.starts_with("measure")), "measure::vinfo imports {vinfo:?}");
}

#[test]
fn the_library_knows_nothing_of_the_command_line() {
    let edges = edges();
    for (from, to) in &edges {
        assert!(from == "cli" || !to.contains("cli"), "{from} imports {to:?}");
        assert!(from == "cli" || !to.contains("report"), "{from} imports the report: {to:?}");
    }
}
