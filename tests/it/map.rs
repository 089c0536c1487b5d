//! The tree's map, held to the code: which top-level module of `src/` uses which (read from
//! the `crate::…` paths in its files, comments left out). No two modules may depend on each
//! other in a circle, the schema (`profile`) imports no runtime module, and the leaves import
//! no stage — so `ls src/` keeps reading as the pipeline that `src/lib.rs` describes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::common::root;

/// Top-level module → the top-level modules its code names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        let uses = graph.entry(name.clone()).or_default();
        for file in rust_files(&path) {
            let text = std::fs::read_to_string(&file).unwrap();
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or("");
                for (i, _) in code.match_indices("crate::") {
                    let rest = &code[i + "crate::".len()..];
                    let module: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !module.is_empty() && module != name {
                        uses.insert(module);
                    }
                }
            }
        }
    }
    graph
}

fn rust_files(path: &Path) -> Vec<std::path::PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        files.extend(rust_files(&entry.unwrap().path()));
    }
    files
}

/// A circle through `from`, if there is one: the modules on it, in order.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_string()];
    walk(graph, from, from, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let graph = imports();
    assert!(graph.len() >= 15, "read {} modules: {graph:?}", graph.len());
    for m in graph.keys() {
        assert_eq!(circle(&graph, m), None, "an import circle through `{m}`");
    }
}

#[test]
fn the_schema_and_the_leaves_import_no_stage() {
    let graph = imports();
    let allowed: [(&str, &[&str]); 7] = [
        ("units", &[]),
        ("seed", &[]),
        ("script", &["seed"]),
        ("os", &[]),
        ("auth", &[]),
        ("net", &["os"]),
        ("profile", &["units", "backoff"]),
    ];
    for (module, may) in allowed {
        let uses = &graph[module];
        let extra: Vec<&String> = uses.iter().filter(|u| !may.contains(&u.as_str())).collect();
        assert!(extra.is_empty(), "`{module}` imports {extra:?}");
    }
}

#[test]
fn the_circle_finder_finds_circles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", &["b"][..]),
        ("b", &["c"][..]),
        ("c", &["a"][..]),
        ("d", &["a"][..]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
    .collect();
    assert_eq!(
        circle(&graph, "a"),
        Some(vec!["a".into(), "b".into(), "c".into()])
    );
    assert_eq!(circle(&graph, "d"), None);
}
