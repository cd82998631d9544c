//! The layout rule of the README's "Architecture": each folder of `src/` is
//! one layer and imports only the layers below it, and no `src/` file has
//! more than `MAX_FILE_LINES` non-test lines. The import graph is read from
//! the source itself (every `crate::name` path, in `use` items and inline),
//! so an arrow that runs back up fails here, with the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bottom to top; a module uses only modules of lower layers.
const LAYERS: &[&[&str]] = &[
    &["proto", "log"],
    &["ssh"],
    &["net"],
    &["grpc"],
    &["obs"],
    &["store"],
    &["domain"],
    &["relay"],
    &["auth"],
    &["drivers"],
    &["api"],
    &["config"],
    &["app"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`src/a.rs` and `src/a/…` → `a`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Lines of a file outside `#[cfg(test)]` items (the item's braces are
/// counted from the attribute on).
fn non_test_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut skipping: Option<i64> = None;
    let mut pending = false;
    let mut depth: i64 = 0;
    for (i, line) in text.lines().enumerate() {
        let opens = line.matches('{').count() as i64 - line.matches('}').count() as i64;
        if let Some(base) = skipping {
            depth += opens;
            if depth <= base {
                skipping = None;
            }
            continue;
        }
        if line.trim_start().starts_with("#[cfg(test)]") {
            pending = true;
            continue;
        }
        if pending {
            if line.contains('{') {
                let base = depth;
                depth += opens;
                if depth > base {
                    skipping = Some(base);
                }
                pending = false;
            } else if line.trim_end().ends_with(';') {
                pending = false;
            }
            continue;
        }
        depth += opens;
        out.push((i + 1, line));
    }
    out
}

fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    name == "tests.rs" || name.ends_with("_tests.rs") || name.ends_with("_test.rs")
}

/// `crate::x` paths of a line, including `use crate::{x, y::z}` groups.
fn crate_refs(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String =
                    item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String =
                after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
        rest = after;
    }
    out
}

#[test]
fn every_folder_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut graph: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" || module == "main" || is_test_file(file) {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            problems.push(format!(
                "{}: module `{module}` is in no layer of tests/layers.rs",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in non_test_lines(&text) {
            for dep in crate_refs(line) {
                if dep == module {
                    continue;
                }
                *graph.entry(module.clone()).or_default().entry(dep.clone()).or_default() += 1;
                match layer_of(&dep) {
                    Some(l) if l < own => {}
                    Some(_) => problems.push(format!(
                        "{}:{n}: `{module}` uses `crate::{dep}`, which is not below it",
                        file.strip_prefix(&src).unwrap().display()
                    )),
                    None => problems.push(format!(
                        "{}:{n}: `crate::{dep}` is in no layer",
                        file.strip_prefix(&src).unwrap().display()
                    )),
                }
            }
        }
    }
    for (m, deps) in &graph {
        println!("{m} -> {}", deps.keys().cloned().collect::<Vec<_>>().join(", "));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
