//! The stock `openshell` CLI (`../shared/upstream/`) against slimgate's
//! provider profiles, the way a user types it: `provider list-profiles`,
//! `provider profile export github -o json`, `provider profile import -f`
//! of a valid and an invalid file (diagnostics printed, nothing stored),
//! `provider profile delete`, and `provider create --type …` for a legacy
//! type, a custom profile and an unknown one.
//!
//! Skips with a note when `../shared/upstream/` is not there, and fails
//! instead when `CI` is set.

mod support;

use prost::Message;
use slimgate::proto::openshell::v1::{self as os, ProviderProfile, open_shell};
use slimgate_testkit::upstream::Cli;
use support::{TempDir, call, start_gateway};

const GOOD: &str = "\
id: acme-tools
display_name: Acme Tools
description: Acme internal API
category: data
credentials:
  - name: api_key
    env_vars: [ACME_API_KEY]
    required: true
    auth_style: header
    header_name: x-acme-key
endpoints:
  - host: api.acme.example
    port: 443
    protocol: rest
    access: read-write
    enforcement: enforce
binaries: [/usr/bin/acme]
";

const BAD: &str = "\
id: Bad_Tool
display_name: Bad
credentials:
  - name: token
    env_vars: [BAD_TOKEN]
    auth_style: query
endpoints:
  - host: api.bad.example
    port: 0
binaries: [\"\"]
";

/// stdout and stderr, without the colour codes the CLI always writes.
fn text(out: &std::process::Output) -> String {
    let all =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let mut plain = String::with_capacity(all.len());
    let mut chars = all.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params… final byte in @..~
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) && d != '[' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

async fn ids(channel: &tonic::transport::Channel) -> Vec<String> {
    let req = os::ListProviderProfilesRequest::default();
    let r = call(channel, open_shell::LIST_PROVIDER_PROFILES, req, None).await.unwrap();
    r.profiles.iter().map(|b| ProviderProfile::decode(b.as_ref()).unwrap().id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_cli_lists_exports_imports_deletes_and_creates_by_profile() {
    let Some(bin) = slimgate_testkit::upstream::cli() else { return };
    let dir = TempDir::new();
    let gw = start_gateway(&dir, &[], support::fast_tuning()).await.unwrap();
    let cli = Cli::new(bin, &dir.path("home"));
    let url = format!("http://127.0.0.1:{}", gw.addr.port());
    let run = |args: &[&str]| {
        let cli = Cli::new(cli.bin.clone(), &cli.home);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli.run(&args, b"")
        })
    };
    let ok = |out: &std::process::Output, what: &str| {
        assert!(out.status.success(), "{what}: {}", text(out));
        text(out)
    };
    let out = run(&["gateway", "add", &url, "--name", "gw"]).await.unwrap();
    ok(&out, "gateway add");

    // The table groups by category; JSON lists all ten.
    let table = ok(&run(&["provider", "list-profiles"]).await.unwrap(), "list-profiles");
    for id in ["anthropic", "claude", "codex", "copilot", "github", "gitlab", "nvidia", "openai"] {
        assert!(table.contains(id), "{id}: {table}");
    }
    for heading in ["INFERENCE", "AGENT", "SOURCE CONTROL", "MESSAGING"] {
        assert!(table.contains(heading), "{heading}: {table}");
    }
    let out = run(&["provider", "list-profiles", "-o", "json"]).await.unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 10, "{}", text(&out));

    // export github -o json: upstream's built-in, field by field.
    let out = run(&["provider", "profile", "export", "github", "-o", "json"]).await.unwrap();
    ok(&out, "export");
    let gh: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(gh["id"], "github");
    assert_eq!(gh["display_name"], "GitHub");
    assert_eq!(gh["category"], "source_control");
    assert_eq!(gh["credentials"][0]["name"], "api_token");
    assert_eq!(gh["credentials"][0]["env_vars"], serde_json::json!(["GITHUB_TOKEN", "GH_TOKEN"]));
    assert_eq!(gh["credentials"][0]["required"], true);
    assert_eq!(gh["credentials"][0]["auth_style"], "bearer");
    assert_eq!(gh["credentials"][0]["header_name"], "authorization");
    let endpoints: Vec<_> = gh["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_string();
            (s("host"), e["port"].as_u64().unwrap(), s("protocol"), s("access"), s("enforcement"))
        })
        .collect();
    let ep = |h: &str, a: &str| (h.into(), 443, "rest".into(), a.into(), "enforce".into());
    assert_eq!(endpoints, vec![ep("api.github.com", "read-write"), ep("github.com", "read-only")]);
    assert_eq!(
        gh["binaries"],
        serde_json::json!([
            "/usr/bin/gh",
            "/usr/local/bin/gh",
            "/usr/bin/git",
            "/usr/local/bin/git"
        ])
    );
    assert_eq!(gh["inference_capable"], false);

    // An invalid file: the server's diagnostics are printed, nothing stored.
    let bad = dir.path("bad.yaml");
    std::fs::write(&bad, BAD).unwrap();
    let bad = bad.to_str().unwrap();
    let out = run(&["provider", "profile", "import", "-f", bad]).await.unwrap();
    assert!(!out.status.success());
    let printed = text(&out);
    for line in [
        "field=id provider profile id must be lowercase kebab-case using only a-z, 0-9, and '-'",
        "field=credentials.query_param query_param is required for query auth",
        "field=endpoints[0] invalid endpoint 'api.bad.example:0'",
        "field=binaries[0] binary path must not be empty",
    ] {
        assert!(printed.contains(&format!("{bad} profile=Bad_Tool {line}")), "{line}: {printed}");
    }
    assert_eq!(ids(&gw.channel).await.len(), 10);

    // A valid file: imported, then exported back as it was.
    let good = dir.path("good.yaml");
    std::fs::write(&good, GOOD).unwrap();
    let good = good.to_str().unwrap();
    let out = run(&["provider", "profile", "import", "-f", good]).await.unwrap();
    assert!(ok(&out, "import").contains("Imported 1 provider profile"));
    assert!(ids(&gw.channel).await.contains(&"acme-tools".to_string()));
    let out = run(&["provider", "profile", "export", "acme-tools", "-o", "json"]).await.unwrap();
    let acme: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&acme["category"], &acme["endpoints"][0]["host"]),
        (&"data".into(), &"api.acme.example".into())
    );
    assert_eq!(acme["credentials"][0]["header_name"], "x-acme-key");
    let out = run(&["provider", "profile", "import", "-f", good]).await.unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("custom provider profile 'acme-tools' already exists"));

    // provider create: a legacy type, a custom profile, an unknown type.
    for (name, ty, cred) in
        [("gh1", "github", "GITHUB_TOKEN=x"), ("acme1", "acme-tools", "ACME_API_KEY=x")]
    {
        let out =
            run(&["provider", "create", "--name", name, "--type", ty, "--credential", cred]).await;
        ok(&out.unwrap(), "provider create");
        let req = os::GetProviderRequest { name: name.into() };
        let p = call(&gw.channel, open_shell::GET_PROVIDER, req, None).await.unwrap();
        assert_eq!(p.provider.unwrap().r#type, ty);
    }
    let out =
        run(&["provider", "create", "--name", "n1", "--type", "nosuch", "--credential", "K=x"])
            .await
            .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("unsupported provider type or profile: nosuch"), "{}", text(&out));

    // delete: a custom profile goes; a built-in is refused.
    let out = run(&["provider", "profile", "delete", "acme-tools"]).await.unwrap();
    assert!(ok(&out, "delete").contains("Deleted provider profile 'acme-tools'"));
    assert_eq!(ids(&gw.channel).await.len(), 10);
    let out = run(&["provider", "profile", "delete", "github"]).await.unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("built-in provider profiles cannot be"), "{}", text(&out));
}
