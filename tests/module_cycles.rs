//! ARCHITECTURE.md's rule that, within a crate, modules do not import each other in a cycle: read from the sources
//! of every crate under `crates/`. A module is a top-level file or directory of a crate's `src` (`gateway.rs`,
//! `transfers/`); it depends on another when its code names it through `crate::`, in a path or a `use` group (the
//! crates name their siblings no other way). Unit tests (a `#[cfg(test)]` module) and comments are left out: a
//! test may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules of the crate whose sources are in `src`, with the files of each.
fn modules_of(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|extension| extension != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap();
            let top = relative.components().next().unwrap().as_os_str().to_string_lossy();
            let top = top.strip_suffix(".rs").unwrap_or(&top).to_owned();
            if matches!(top.as_str(), "lib" | "main" | "bin") || relative.components().any(|c| c.as_os_str() == "tests")
            {
                continue;
            }
            modules.entry(top).or_default().push(path);
        }
    }
    modules
}

/// `text` without its line comments and without the unit tests at its end.
fn code_of(text: &str) -> String {
    let text = text.find("#[cfg(test)]\nmod ").map_or(text, |tests| &text[..tests]);
    text.lines().map(|line| line.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// The identifiers that start each path of a `use` group's text (`a, b::c, {d, e}` gives a, b).
fn group_heads(group: &str) -> impl Iterator<Item = &str> {
    group.split(',').filter_map(|item| {
        let head = item.trim().split("::").next()?.trim();
        (!head.is_empty() && head.chars().all(|c| c.is_alphanumeric() || c == '_')).then_some(head)
    })
}

/// Which other modules of the crate each module names.
fn imports(modules: &BTreeMap<String, Vec<PathBuf>>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for (module, files) in modules {
        let mut named = BTreeSet::new();
        for file in files {
            let code = code_of(&std::fs::read_to_string(file).unwrap());
            let mut heads: Vec<&str> = Vec::new();
            for (at, _) in code.match_indices("crate::") {
                // `crate::` itself, not the end of a longer name (`other_crate::`) or a macro's `$crate::`.
                if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
                    continue;
                }
                let rest = &code[at + "crate::".len()..];
                let paths = match rest.strip_prefix('{') {
                    Some(group) => &group[..group.find('}').unwrap_or(group.len())],
                    None => rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or_default(),
                };
                heads.extend(group_heads(paths));
            }
            named.extend(
                heads.into_iter().filter(|head| *head != module && modules.contains_key(*head)).map(str::to_owned),
            );
        }
        graph.insert(module.clone(), named);
    }
    graph
}

/// A cycle through `start`, if there is one: the modules in order, `start` first.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut path = vec![start.to_owned()];
    let mut seen = BTreeSet::new();
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let here = path.last().unwrap().clone();
        for next in &graph[&here] {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    walk(graph, start, &mut path, &mut seen).then_some(path)
}

#[test]
fn no_crate_has_modules_that_import_each_other_in_a_cycle() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut cycles = Vec::new();
    let mut modules_read = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let modules = modules_of(&src);
        modules_read += modules.len();
        let graph = imports(&modules);
        for module in graph.keys() {
            if let Some(cycle) = cycle_through(&graph, module) {
                cycles.push(format!("{}: {} -> {module}", src.display(), cycle.join(" -> ")));
            }
        }
    }
    // The crates are where they are said to be: a test that reads nothing would pass whatever the code did.
    assert!(modules_read > 50, "read only {modules_read} modules under {}", crates.display());
    assert!(cycles.is_empty(), "modules that import each other in a cycle:\n{}", cycles.join("\n"));
}

#[test]
fn a_cycle_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a; mod b; mod c;").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::{b::Thing, c};").unwrap();
    std::fs::write(src.join("b.rs"), "// crate::a in a comment is no import\nfn f() { crate::c::g() }").unwrap();
    std::fs::create_dir(src.join("c")).unwrap();
    std::fs::write(src.join("c/mod.rs"), "mod inner;").unwrap();
    std::fs::write(src.join("c/inner.rs"), "use crate::a::Thing;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}")
        .unwrap();
    let graph = imports(&modules_of(src));
    assert_eq!(graph["b"], BTreeSet::from(["c".to_owned()]));
    assert_eq!(graph["c"], BTreeSet::from(["a".to_owned()]), "a unit test's imports are not the module's");
    assert_eq!(cycle_through(&graph, "a"), Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]));
    std::fs::write(src.join("c/inner.rs"), "fn h() {}").unwrap();
    assert_eq!(cycle_through(&imports(&modules_of(src)), "a"), None);
}
