//! The deployment files, checked offline (no cluster, no Docker):
//!
//! - every manifest under `deploy/kubernetes/` parses as YAML, and the
//!   kustomization lists files that exist;
//! - every flag and environment variable the gateway container uses (its
//!   args, its env, the ConfigMap it reads) is one `slimgate --help` lists
//!   as honoured, and together they make a configuration `config::parse`
//!   accepts (TLS settings only in a `tls` build);
//! - probes hit `/healthz` and `/readyz` on the `--health-port`, the driver
//!   sockets are on a volume all three containers share, and every
//!   container is hardened (non-root, read-only root filesystem);
//! - the Dockerfile's build steps are the commands `.ci/run` runs.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `(file, document)` for every document of every manifest.
fn manifests() -> Vec<(String, Yaml)> {
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut docs = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        let parsed = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        for doc in parsed {
            docs.push((name.clone(), doc));
        }
    }
    docs
}

fn kind<'a>(docs: &'a [(String, Yaml)], kind: &str) -> Vec<&'a Yaml> {
    docs.iter().filter(|(_, d)| d["kind"].as_str() == Some(kind)).map(|(_, d)| d).collect()
}

fn list(y: &Yaml) -> &[Yaml] {
    y.as_vec().map_or(&[], Vec::as_slice)
}

fn s(y: &Yaml) -> String {
    match y {
        Yaml::String(v) => v.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Real(r) => r.clone(),
        Yaml::Null => String::new(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// What `slimgate --help` lists: honoured flags and their variables (the
/// "accepted and ignored" flags are left out on purpose).
struct Help {
    flags: HashSet<String>,
    vars: HashSet<String>,
}

fn help() -> Help {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_slimgate")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let honoured = text.split("Accepted and ignored").next().unwrap();
    let mut flags = HashSet::new();
    let mut vars = HashSet::new();
    for line in honoured.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("--") {
            flags.insert(rest.split_whitespace().next().unwrap().to_string());
        }
        if let Some((_, rest)) = line.split_once("[env: ") {
            vars.insert(rest.split(']').next().unwrap().to_string());
        }
    }
    assert!(flags.contains("metrics-port") && vars.contains("OPENSHELL_TLS_CERT"));
    Help { flags, vars }
}

fn pod_spec(docs: &[(String, Yaml)]) -> &Yaml {
    let sets = kind(docs, "StatefulSet");
    assert_eq!(sets.len(), 1, "one StatefulSet");
    &sets[0]["spec"]["template"]["spec"]
}

fn container<'a>(pod: &'a Yaml, name: &str) -> &'a Yaml {
    list(&pod["containers"])
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The gateway's args, and its environment as the pod would see it
/// (ConfigMap values, `placeholder` for Secret references).
fn gateway_invocation(docs: &[(String, Yaml)]) -> (Vec<String>, BTreeMap<String, String>) {
    let gw = container(pod_spec(docs), "slimgate");
    let args: Vec<String> = list(&gw["args"]).iter().map(s).collect();
    let mut env = BTreeMap::new();
    for from in list(&gw["envFrom"]) {
        let name = from["configMapRef"]["name"].as_str().expect("configMapRef");
        let cm = kind(docs, "ConfigMap")
            .into_iter()
            .find(|c| c["metadata"]["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("ConfigMap {name} is not in deploy/kubernetes"));
        for (k, v) in cm["data"].as_hash().unwrap() {
            env.insert(s(k), s(v));
        }
    }
    for e in list(&gw["env"]) {
        let value =
            if e["valueFrom"].is_badvalue() { s(&e["value"]) } else { "placeholder".to_string() };
        env.insert(s(&e["name"]), value);
    }
    (args, env)
}

#[test]
fn manifests_parse_and_the_kustomization_lists_existing_files() {
    let docs = manifests();
    for (file, d) in &docs {
        assert!(d["apiVersion"].as_str().is_some(), "{file}: apiVersion");
        assert!(d["kind"].as_str().is_some(), "{file}: kind");
    }
    let k = kind(&docs, "Kustomization");
    assert_eq!(k.len(), 1);
    let listed: Vec<String> = list(&k[0]["resources"]).iter().map(s).collect();
    for file in &listed {
        assert!(root().join("deploy/kubernetes").join(file).is_file(), "{file}");
    }
    for (file, _) in &docs {
        assert!(
            file == "kustomization.yaml" || listed.contains(file),
            "{file} is not in the kustomization"
        );
    }
}

#[test]
fn every_flag_and_variable_the_gateway_uses_exists() {
    let docs = manifests();
    let help = help();
    let (args, env) = gateway_invocation(&docs);
    for a in &args {
        if let Some(flag) = a.strip_prefix("--") {
            let flag = flag.split('=').next().unwrap();
            assert!(help.flags.contains(flag), "--{flag} is not a slimgate flag");
        }
    }
    for var in env.keys() {
        assert!(help.vars.contains(var), "{var} is not a slimgate variable");
    }
    // The Secrets the pod needs are the ones README.md says how to create.
    let readme = read("README.md");
    let pod = pod_spec(&docs);
    let mut secrets: Vec<String> = list(&pod["volumes"])
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str().map(String::from))
        .collect();
    for c in list(&pod["containers"]) {
        for e in list(&c["env"]) {
            if let Some(n) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                secrets.push(n.to_string());
            }
        }
    }
    assert!(secrets.len() >= 3);
    for name in secrets {
        assert!(
            readme.contains("kubectl create secret") && readme.contains(&name),
            "README.md does not say how to create the Secret {name}"
        );
    }
}

#[test]
fn the_manifests_make_a_valid_configuration() {
    let docs = manifests();
    let (args, mut env) = gateway_invocation(&docs);
    if !cfg!(feature = "tls") {
        // The image is the `tls` build; a default build refuses TLS flags
        // (tests/cli.rs), so check the rest here.
        env.retain(|k, _| !k.starts_with("OPENSHELL_TLS_") && !k.starts_with("OPENSHELL_DISABLE_"));
    }
    let action = slimgate::config::parse(args.iter().map(Into::into), |k| env.get(k).cloned())
        .unwrap_or_else(|e| panic!("the manifests' configuration is refused: {e}"));
    let slimgate::config::Action::Run(c) = action else { panic!("not a run") };
    assert_eq!(c.bind_address.to_string(), "0.0.0.0");
    assert_eq!((c.port, c.health_port, c.metrics_port), (8080, Some(8081), Some(9090)));
    assert!(c.oidc.is_some(), "OIDC is on");
    assert!(c.sandbox_secret.is_some());
    assert!(c.store_key_file.is_some(), "credentials are encrypted at rest");
    assert_eq!(c.db_path, Path::new("/var/lib/slimgate/state.redb"));
    assert!(c.warnings.iter().all(|w| !w.starts_with("ignoring")), "{:?}", c.warnings);
    if cfg!(feature = "tls") {
        let t = c.tls.expect("TLS on");
        assert!(!t.require_client_cert);
    }
    // The store is on the state volume.
    let gw = container(pod_spec(&docs), "slimgate");
    assert!(list(&gw["volumeMounts"]).iter().any(|m| {
        m["name"].as_str() == Some("state")
            && c.db_path.starts_with(m["mountPath"].as_str().unwrap())
    }));
}

#[test]
fn probes_hit_the_health_port_and_sockets_are_shared() {
    let docs = manifests();
    let pod = pod_spec(&docs);
    let gw = container(pod, "slimgate");
    let (args, _) = gateway_invocation(&docs);
    let arg = |flag: &str| {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1].clone()
    };
    let health_port = arg("--health-port");
    let port_of = |name: &str| {
        list(&gw["ports"])
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .map(|p| s(&p["containerPort"]))
            .unwrap()
    };
    for (probe, path) in
        [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]
    {
        let get = &gw[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(port_of(get["port"].as_str().unwrap()), health_port, "{probe}");
    }
    assert_eq!(port_of("metrics"), arg("--metrics-port"));
    assert_eq!(port_of("grpc"), arg("--port"));

    // One emptyDir holds both sockets, mounted in all three containers.
    let sockets = list(&pod["volumes"])
        .iter()
        .find(|v| !v["emptyDir"].is_badvalue())
        .expect("an emptyDir for the sockets");
    let vol = sockets["name"].as_str().unwrap();
    let containers = list(&pod["containers"]);
    assert_eq!(containers.len(), 3);
    let mounts: Vec<String> = containers
        .iter()
        .map(|c| {
            list(&c["volumeMounts"])
                .iter()
                .find(|m| m["name"].as_str() == Some(vol))
                .map(|m| s(&m["mountPath"]))
                .unwrap_or_else(|| panic!("{} does not mount {vol}", s(&c["name"])))
        })
        .collect();
    assert!(mounts.iter().all(|m| *m == mounts[0]));
    for flag in ["--compute-driver-socket", "--credentials-driver-socket"] {
        assert!(Path::new(&arg(flag)).starts_with(&mounts[0]), "{flag}");
    }
}

#[test]
fn every_container_is_hardened() {
    let docs = manifests();
    let pod = pod_spec(&docs);
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
    for c in list(&pod["containers"]) {
        let sc = &c["securityContext"];
        let name = s(&c["name"]);
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false), "{name}");
        assert_eq!(s(&list(&sc["capabilities"]["drop"])[0]), "ALL", "{name}");
    }
}

/// The build stage's `RUN` commands, joined across continuation lines.
fn dockerfile_runs(text: &str) -> Vec<String> {
    let mut runs = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(c) = current.as_mut() {
            c.push(' ');
            c.push_str(t.trim_end_matches('\\').trim());
        } else if let Some(cmd) = t.strip_prefix("RUN ") {
            current = Some(cmd.trim_end_matches('\\').trim().to_string());
        }
        if !t.ends_with('\\')
            && let Some(c) = current.take()
        {
            runs.push(c);
        }
    }
    runs
}

#[test]
fn the_dockerfile_builds_with_the_commands_ci_runs() {
    let dockerfile = read("Dockerfile");
    let ci = read(".ci/run");
    let ci_lines: Vec<&str> = ci.lines().map(str::trim).collect();
    let build: Vec<String> = dockerfile_runs(&dockerfile)
        .into_iter()
        .filter(|r| r.contains("musl") || r.contains("cargo "))
        .filter(|r| !r.starts_with("mkdir"))
        .collect();
    assert_eq!(build.len(), 3, "{build:?}");
    for cmd in &build {
        assert!(
            ci_lines.contains(&cmd.as_str()),
            ".ci/run does not run the Dockerfile's build step `{cmd}`"
        );
    }
    assert!(
        build.iter().any(
            |c| c.contains("cargo build --release --locked --target x86_64-unknown-linux-musl")
        )
    );
    // The final stage: distroless static, non-root, only the binary.
    let last_from = dockerfile.lines().rfind(|l| l.starts_with("FROM ")).unwrap();
    assert!(last_from.starts_with("FROM gcr.io/distroless/static"), "{last_from}");
    assert!(dockerfile.contains("USER 65532:65532"));
    assert!(dockerfile.contains("target/x86_64-unknown-linux-musl/release/slimgate"));
}
