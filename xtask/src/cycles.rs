//! `cargo xtask cycles`: the import graph between each crate's top-level modules, and any
//! cycle in it. A module "uses" another when its files name `crate::other` (in a path or a
//! `use crate::{…}` group); test modules are ignored. `cargo xtask test` fails on a cycle.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use anyhow::{bail, Context, Result};

use crate::run::workspace_root;

/// The crates whose module graphs are checked, by source directory.
const CRATES: [&str; 8] = [
    "capture/src",
    "shardline/src",
    "cli/src",
    "lab/src",
    "bench/src",
    "common/src",
    "config/src",
    "forecast/src",
];

/// Top-level module → the top-level modules it uses.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// Prints every crate's graph and fails if any has a cycle.
pub fn check(verbose: bool) -> Result<()> {
    let mut failed = Vec::new();
    for dir in CRATES {
        let graph = graph(&workspace_root().join(dir))?;
        if verbose {
            println!("{dir}:");
            for (module, uses) in &graph {
                let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
                println!("  {module} -> {}", uses.join(" "));
            }
        }
        for cycle in cycles(&graph) {
            failed.push(format!("{dir}: {}", cycle.join(" -> ")));
        }
    }
    if !failed.is_empty() {
        bail!(
            "import cycles among top-level modules:\n  {}",
            failed.join("\n  ")
        );
    }
    println!(
        "xtask: no import cycle among the top-level modules of {}",
        CRATES.join(", ")
    );
    Ok(())
}

/// The module graph of the crate rooted at `src`.
pub fn graph(src: &Path) -> Result<Graph> {
    let mut modules = BTreeSet::new();
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        let name = path
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir()
            || (path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main")
        {
            modules.insert(name.to_owned());
        }
    }
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for module in &modules {
        let mut files = Vec::new();
        collect(&src.join(module), &mut files);
        collect_file(&src.join(format!("{module}.rs")), &mut files);
        for file in files {
            let mut text =
                fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            // In `src/m.rs` and `src/m/mod.rs`, `super::` is the crate root.
            let top_level = file.parent() == Some(src) || file == src.join(module).join("mod.rs");
            if top_level {
                text = text.replace("super::", "crate::");
            }
            for used in crate_paths(&without_tests(&text)) {
                if used != *module && modules.contains(&used) {
                    graph
                        .get_mut(module)
                        .expect("every module is a key")
                        .insert(used);
                }
            }
        }
    }
    Ok(graph)
}

fn collect(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else {
            collect_file(&path, files);
        }
    }
}

fn collect_file(path: &Path, files: &mut Vec<std::path::PathBuf>) {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let is_test = name == "tests.rs" || name.ends_with("_tests.rs");
    if path.is_file() && name.ends_with(".rs") && !is_test {
        files.push(path.to_owned());
    }
}

/// `text` up to its first `#[cfg(test)]` (test modules close the files they are in), with
/// comments cut (a doc link names a module without using it).
fn without_tests(text: &str) -> String {
    let code = text.find("#[cfg(test)]").map_or(text, |i| &text[..i]);
    code.lines()
        .map(|line| line.find("//").map_or(line, |i| &line[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every `crate::` path in `text`, groups included.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `shardline_crate::`, not ours
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            let mut at_top = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 || (depth == 1 && c == ',') {
                    if at_top && !item.is_empty() {
                        out.push(std::mem::take(&mut item));
                    }
                    if depth == 0 {
                        break;
                    }
                    at_top = true;
                    item.clear();
                    continue;
                }
                if at_top {
                    if c.is_alphanumeric() || c == '_' {
                        item.push(c);
                    } else if !item.is_empty() {
                        out.push(std::mem::take(&mut item));
                        at_top = false;
                    }
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

/// Every strongly connected component of more than one module (Tarjan).
pub fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let i = w.index.len();
        w.index.insert(v, i);
        w.low.insert(v, i);
        w.stack.push(v);
        for u in w.graph.get(v).into_iter().flatten() {
            let u = u.as_str();
            if !w.index.contains_key(u) {
                visit(w, u);
                let low = w.low[v].min(w.low[u]);
                w.low.insert(v, low);
            } else if w.stack.contains(&u) {
                let low = w.low[v].min(w.index[u]);
                w.low.insert(v, low);
            }
        }
        if w.low[v] == w.index[v] {
            let mut component = Vec::new();
            while let Some(u) = w.stack.pop() {
                component.push(u.to_owned());
                if u == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                w.found.push(component);
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            visit(&mut walk, v);
        }
    }
    walk.found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_groups_name_their_first_segment() {
        let text = "use crate::{a::B, c, d::{e, f}};\nfn x() { crate::g::h(); my_crate::z(); }";
        assert_eq!(crate_paths(text), ["a", "c", "d", "g"]);
    }

    #[test]
    fn a_cycle_is_found_and_a_chain_is_not() {
        let mut g = Graph::new();
        g.insert("a".into(), ["b".to_string()].into());
        g.insert("b".into(), ["c".to_string()].into());
        g.insert("c".into(), BTreeSet::new());
        assert!(cycles(&g).is_empty());
        g.get_mut("c").unwrap().insert("a".into());
        assert_eq!(
            cycles(&g),
            vec![vec!["a".to_string(), "b".into(), "c".into()]]
        );
    }
}
