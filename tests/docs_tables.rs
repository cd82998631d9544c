//! docs/api.md's authorization table against the code: every row must say
//! what `auth::methods::rule` says for its path (class, role, scope,
//! mutating) and whether slimgate serves the method, and every path of
//! `auth::methods::TABLE` must have a row. Editing either side alone fails.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use slimgate::api;
use slimgate::auth::methods::{self, Class, Role, Rule};
use slimgate::domain::events::SandboxBus;
use slimgate::grpc::Router;
use slimgate::relay::Relays;

const HEADER: &str = "| Method | Class | Role | Scope | Mutating | Today |";

/// One parsed row of the doc's table.
#[derive(Debug)]
struct DocRow {
    line: usize,
    class: Class,
    role: Option<Role>,
    /// `None` for `–` (no bearer path) and for `all` (only `openshell:all`).
    scope: Option<String>,
    scope_all: bool,
    mutating: bool,
    served: bool,
}

fn parse_table(text: &str) -> BTreeMap<String, DocRow> {
    let mut lines = text.lines().enumerate();
    lines
        .by_ref()
        .find(|(_, l)| l.trim() == HEADER)
        .expect("docs/api.md: authorization table header not found");
    let (_, sep) = lines.next().expect("table separator");
    assert!(sep.starts_with("|---"), "table separator: {sep}");
    let mut rows = BTreeMap::new();
    for (i, line) in lines {
        let n = i + 1;
        if !line.starts_with('|') {
            break;
        }
        let cols: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cols.len(), 6, "docs/api.md:{n}: six columns: {line}");
        let path = cols[0]
            .strip_prefix('`')
            .and_then(|p| p.strip_suffix('`'))
            .unwrap_or_else(|| panic!("docs/api.md:{n}: path in backticks: {line}"));
        let class = match cols[1] {
            "unauth" => Class::Unauthenticated,
            "secret" => Class::SandboxSecret,
            "dual" => Class::Dual,
            "bearer" => Class::Bearer,
            other => panic!("docs/api.md:{n}: unknown class {other:?}"),
        };
        let role = match cols[2] {
            "–" => None,
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            other => panic!("docs/api.md:{n}: unknown role {other:?}"),
        };
        let (scope, scope_all) = match cols[3] {
            "–" => (None, false),
            "all" => (None, true),
            s => (Some(s.to_owned()), false),
        };
        let mutating = match cols[4] {
            "yes" => true,
            "no" => false,
            other => panic!("docs/api.md:{n}: mutating is yes or no, not {other:?}"),
        };
        let served = match cols[5] {
            "served" => true,
            "UNIMPLEMENTED" => false,
            other => panic!("docs/api.md:{n}: today is served or UNIMPLEMENTED, not {other:?}"),
        };
        let row = DocRow { line: n, class, role, scope, scope_all, mutating, served };
        assert!(
            rows.insert(path.to_owned(), row).is_none(),
            "docs/api.md:{n}: {path} listed twice"
        );
    }
    rows
}

/// The differences between a doc row and the code's rule, empty if none.
fn mismatches(path: &str, doc: &DocRow, rule: &Rule, served: bool) -> Vec<String> {
    let mut out = Vec::new();
    let n = doc.line;
    if doc.class != rule.class {
        out.push(format!("docs/api.md:{n} {path}: class {:?}, code {:?}", doc.class, rule.class));
    }
    if doc.role != rule.role {
        out.push(format!("docs/api.md:{n} {path}: role {:?}, code {:?}", doc.role, rule.role));
    }
    if doc.scope.as_deref() != rule.scope {
        out.push(format!("docs/api.md:{n} {path}: scope {:?}, code {:?}", doc.scope, rule.scope));
    }
    // `all` is only for a bearer path outside the scope map; `–` only for a
    // method with no bearer path.
    let code_all = rule.role.is_some() && rule.scope.is_none();
    if doc.scope.is_none() && rule.scope.is_none() && doc.scope_all != code_all {
        out.push(format!(
            "docs/api.md:{n} {path}: scope `{}`, code {}",
            if doc.scope_all { "all" } else { "–" },
            if code_all { "`all`" } else { "`–`" }
        ));
    }
    if doc.mutating != rule.mutating {
        out.push(format!(
            "docs/api.md:{n} {path}: mutating {}, code {}",
            doc.mutating, rule.mutating
        ));
    }
    if doc.served != served {
        out.push(format!(
            "docs/api.md:{n} {path}: today {}, code {}",
            if doc.served { "served" } else { "UNIMPLEMENTED" },
            if served { "served" } else { "UNIMPLEMENTED" }
        ));
    }
    out
}

/// The method paths slimgate serves: the router `app` builds, with every
/// handler `api::register` adds (a method declared in our protos but not
/// registered answers UNIMPLEMENTED, so it is not served).
fn served_paths() -> Vec<&'static str> {
    let db = common::TempDb::new("docs-tables");
    let state = Arc::new(api::State {
        version: "test",
        store: slimgate::store::open(&db.path("state.redb"), None).unwrap(),
        credentials: None,
        compute: None,
        sandboxes: SandboxBus::new(),
        policy_history_revisions: 1,
        relays: Relays::new(),
        ssh: api::ssh::SshConfig {
            host: "localhost".into(),
            port: 1,
            scheme: "http",
            connect_path: api::ssh::DEFAULT_CONNECT_PATH.into(),
            ttl_secs: 0,
        },
        relay_timing: api::relay::Timing::default(),
    });
    let mut router = Router::new();
    api::register(&mut router, &state);
    router.paths().collect()
}

#[test]
fn api_md_authorization_table_matches_the_policy_table() {
    let text = String::from_utf8(common::read("docs/api.md")).unwrap();
    let rows = parse_table(&text);
    let served = served_paths();
    let mut problems = Vec::new();
    for (path, doc) in &rows {
        let rule = methods::rule(path);
        if rule.path != path {
            problems.push(format!(
                "docs/api.md:{} {path}: not a path of auth::methods::TABLE",
                doc.line
            ));
            continue;
        }
        problems.extend(mismatches(path, doc, &rule, served.contains(&path.as_str())));
    }
    for rule in methods::TABLE {
        if !rows.contains_key(rule.path) {
            problems.push(format!("{} is in TABLE but not in docs/api.md", rule.path));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    assert_eq!(rows.len(), methods::TABLE.len());
}

#[test]
fn api_md_names_the_unauthenticated_prefixes() {
    let text = String::from_utf8(common::read("docs/api.md")).unwrap();
    for prefix in methods::UNAUTHENTICATED_PREFIXES {
        assert!(
            text.contains(&format!("`{prefix}`")),
            "docs/api.md does not name the unauthenticated prefix {prefix}"
        );
    }
}

/// The comparison itself notices each kind of drift (so a parser that
/// read nothing, or compared nothing, cannot pass).
#[test]
fn a_drifted_row_is_reported() {
    let path = "/openshell.v1.OpenShell/CreateProvider";
    let rule = methods::rule(path);
    let good = format!(
        "{HEADER}\n|---|---|---|---|---|---|\n| `{path}` | bearer | admin | provider:write | yes | served |\n"
    );
    let rows = parse_table(&good);
    assert!(mismatches(path, &rows[path], &rule, true).is_empty());
    for bad in [
        "| dual | admin | provider:write | yes | served |",
        "| bearer | user | provider:write | yes | served |",
        "| bearer | admin | provider:read | yes | served |",
        "| bearer | admin | all | yes | served |",
        "| bearer | admin | provider:write | no | served |",
        "| bearer | admin | provider:write | yes | UNIMPLEMENTED |",
    ] {
        let text = format!("{HEADER}\n|---|---|---|---|---|---|\n| `{path}` {bad}\n");
        let rows = parse_table(&text);
        assert_eq!(mismatches(path, &rows[path], &rule, true).len(), 1, "{bad}");
    }
}
