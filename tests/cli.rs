//! The binary's command line: every validation rule of config.md exits with
//! code 2 and one line naming the problem; `--help` lists every flag.

use std::process::{Command, Output};

fn slimgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slimgate"))
        .args(args)
        .env_clear()
        .output()
        .expect("run slimgate")
}

fn refused(args: &[&str], needle: &str) {
    let out = slimgate(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr:?} lacks {needle:?}");
}

#[test]
fn non_numeric_port() {
    refused(&["--port", "http"], "--port");
    refused(&["--port", "http"], "\"http\"");
}

#[test]
fn out_of_range_port() {
    refused(&["--port", "65536"], "from 0 to 65535");
    refused(&["--health-port", "-1"], "--health-port");
}

#[test]
fn port_equal_to_health_port() {
    refused(&["--port", "9000", "--health-port", "9000"], "--port and --health-port must differ");
}

#[test]
fn only_one_role_empty() {
    refused(
        &["--oidc-issuer", "http://idp/realms/x", "--oidc-admin-role", ""],
        "--oidc-admin-role and --oidc-user-role",
    );
    refused(&["--oidc-issuer", "http://idp/realms/x", "--oidc-user-role="], "both be set");
}

#[test]
fn unsupported_drivers_value() {
    refused(&["--drivers", "kubernetes"], "`external`");
}

#[test]
fn https_issuer_without_tls() {
    if cfg!(feature = "tls") {
        return;
    }
    refused(&["--oidc-issuer", "https://idp.example/realms/x"], "--features tls");
}

#[test]
fn security_flags_the_build_cannot_honour() {
    if cfg!(feature = "tls") {
        return;
    }
    refused(&["--tls-cert", "/etc/cert.pem"], "--tls-cert");
    refused(&["--tls-client-ca", "/etc/ca.pem"], "no TLS support");
}

#[test]
fn no_oidc_on_non_loopback_without_allow_unauthenticated() {
    refused(&["--bind-address", "0.0.0.0"], "--allow-unauthenticated");
}

#[test]
fn unknown_flag() {
    refused(&["--no-such-flag"], "unknown flag --no-such-flag");
}

#[test]
fn env_values_are_validated_too() {
    let out = Command::new(env!("CARGO_BIN_EXE_slimgate"))
        .env_clear()
        .env("OPENSHELL_SERVER_PORT", "eighty")
        .output()
        .expect("run slimgate");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"eighty\""));
}

#[test]
fn help_lists_every_flag_with_variable_and_default() {
    let out = slimgate(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in slimgate::config::FLAGS {
        assert!(help.contains(&format!("--{}", flag.name)), "--{} missing", flag.name);
        assert!(help.contains(flag.env), "{} missing", flag.env);
        if !flag.default().is_empty() {
            assert!(
                help.contains(&format!("[default: {}]", flag.default())),
                "default of --{}",
                flag.name
            );
        }
    }
    // Every flag (README, "Command line"); checked against the spec text read
    // below when it is beside the checkout.
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/spec/config.md");
    if let Ok(text) = std::fs::read_to_string(&spec) {
        let mut n = 0;
        for line in text.lines().filter(|l| l.starts_with("| `--")) {
            let name = line.split('`').nth(1).unwrap_or_default();
            assert!(help.contains(name), "{name} from config.md missing in --help");
            n += 1;
        }
        assert!(n >= 30, "config.md table not recognised ({n} flags)");
    } else {
        println!("note: ../shared/spec/config.md not found; checked the built-in table only");
    }
}

/// The fenced block under README's "## Command line".
fn readme_help_block() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("\n## Command line\n").nth(1).expect("README has ## Command line");
    let block = section.split("\n```\n").nth(1).expect("a ``` block in ## Command line");
    format!("{block}\n")
}

#[test]
fn readme_help_block_and_defaults_match_the_binary() {
    let out = slimgate(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let readme = readme_help_block();
    for (n, (r, h)) in readme.lines().zip(help.lines()).enumerate() {
        assert_eq!(r, h, "README's command-line block, line {}, differs from --help", n + 1);
    }
    assert_eq!(readme, help, "README's command-line block differs from --help in length");

    // Each default --help documents is the one the parser uses: giving it
    // explicitly yields the same configuration as leaving the flag out.
    let base = ["--oidc-issuer", "http://idp/realms/x", "--compute-driver-socket", "/d.sock"];
    let parse = |extra: &[String]| {
        let args = base.iter().map(|a| a.to_string()).chain(extra.iter().cloned());
        match slimgate::config::parse(args.map(Into::into), |_| None) {
            Ok(slimgate::config::Action::Run(c)) => *c,
            other => panic!("{extra:?}: {other:?}"),
        }
    };
    let implicit = parse(&[]);
    let mut lines = help.lines();
    let mut checked = 0;
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("  --").and_then(|l| l.split(' ').next()) else {
            continue;
        };
        let text = lines.next().unwrap_or_default();
        let Some((_, default)) = text.rsplit_once("[default: ") else { continue };
        let default = default.strip_suffix(']').unwrap();
        let explicit = parse(&[format!("--{name}={default}")]);
        assert_eq!(explicit, implicit, "--{name}: the documented default {default:?} is not used");
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} documented defaults found");
}

#[test]
fn version() {
    let out = slimgate(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("slimgate "));
}

#[test]
fn sql_database_urls_say_what_to_use() {
    refused(&["--db-url", "sqlite:/var/lib/openshell/db.sqlite"], "redb");
    refused(&["--db-url", "postgres://u:secret@db/x"], "--db-url");
    let out = slimgate(&["--db-url", "postgres://u:secret@db/x"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("secret"));
}

#[test]
fn a_bad_key_file_stops_startup_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("slimgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("short.key");
    std::fs::write(&key, b"too short").unwrap();
    let db = format!("redb:{}", dir.join("s.redb").display());
    let out =
        slimgate(&["--port", "0", "--db-url", &db, "--store-key-file", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--store-key-file"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ssh_tunnel_flags() {
    refused(&["--ssh-gateway-host", "gw host"], "--ssh-gateway-host");
    refused(&["--ssh-connect-path", "connect/ssh"], "--ssh-connect-path");
    refused(&["--ssh-connect-path", "/connect?x"], "RFC 3986");
    refused(&["--ssh-session-ttl-secs", "31536001"], "from 0 to 31536000");
    refused(
        &["--require-supervisor-secret"],
        "--require-supervisor-secret needs --ssh-handshake-secret",
    );
}
