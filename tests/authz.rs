//! Authorization through the real server: every method path of api.md's
//! table with every kind of credential, and the upstream OIDC end-to-end
//! matrix with locally minted tokens.
//!
//! The expected class, role and scope of each method are read at run time
//! from the spec's own table (`spec_rows`; falling back to the gateway's
//! own table with a note when the spec is not beside the checkout), so the
//! test does not merely restate the implementation. docs/api.md carries the
//! same table, kept equal to the code by `tests/docs_tables.rs`.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message as _;
use serde_json::{Value, json};
use slimgate::proto::grpc::health::v1::HealthCheckRequest;
use slimgate_testkit::raw::{self, Client};

mod common;
use common::{Signer, mint};

const ISSUER: &str = "http://idp.test/realms/openshell";
const SECRET: &str = "sandbox-s3cret";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(sub: &str, roles: &[&str], scope: Option<&str>, aud: &str, azp: &str) -> String {
    let mut claims = json!({
        "iss": ISSUER, "aud": aud, "azp": azp, "sub": sub,
        "iat": now() - 5, "exp": now() + 300,
        "realm_access": {"roles": roles},
    });
    if let Some(s) = scope {
        claims["scope"] = Value::from(s);
    }
    mint(
        &json!({"alg": "RS256", "typ": "JWT", "kid": "rsa2048"}),
        &claims,
        &Signer::load("rsa2048"),
    )
}

async fn gateway(scopes: bool) -> (slimgate::app::Running, common::TempDb) {
    let db = common::TempDb::new("authz");
    let jwks = common::manifest_path("tests/keys/jwks.json");
    let mut args = vec![
        "--port",
        "0",
        "--log-level",
        "error",
        "--oidc-issuer",
        ISSUER,
        "--oidc-audience",
        "openshell-cli,ci-service",
        "--ssh-handshake-secret",
        SECRET,
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    args.extend([
        "--oidc-jwks-file".into(),
        jwks.display().to_string(),
        "--db-url".into(),
        db.url(),
    ]);
    if scopes {
        args.extend(["--oidc-scopes-claim".into(), "scope".into()]);
    }
    let cfg = match slimgate::config::parse(args.into_iter().map(Into::into), |_| None).unwrap() {
        slimgate::config::Action::Run(c) => *c,
        _ => unreachable!(),
    };
    (slimgate::app::start(cfg).await.unwrap(), db)
}

/// One call with one empty message and the given headers; (grpc-status, grpc-message).
async fn call(addr: SocketAddr, path: &str, headers: &[(&'static str, &str)]) -> (u32, String) {
    let mut c = Client::connect(addr).await.unwrap();
    let req = raw::grpc_request_with(path, headers, &[]);
    let resp = c.call(req, vec![raw::grpc_frame(&[])]).await.unwrap();
    let msg = resp
        .grpc_message_raw()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_default();
    (
        resp.grpc_status().expect("grpc-status"),
        slimgate::grpc::status::decode_message(msg.as_bytes()),
    )
}

#[derive(Clone, Debug)]
struct Row {
    path: String,
    class: &'static str,
    admin: bool,
    scope: Option<String>,
}

/// The table of api.md ("Full table of the real RPCs") plus the classified
/// paths listed above it.
fn spec_rows() -> Vec<Row> {
    let spec = common::manifest_path("../shared/spec/api.md");
    let Ok(text) = std::fs::read_to_string(&spec) else {
        println!(
            "note: ../shared/spec/api.md not found; expectations come from the gateway's own table"
        );
        return slimgate::auth::methods::TABLE
            .iter()
            .map(|r| Row {
                path: r.path.to_string(),
                class: match r.class {
                    slimgate::auth::methods::Class::Unauthenticated => "unauth",
                    slimgate::auth::methods::Class::SandboxSecret => "secret",
                    slimgate::auth::methods::Class::Dual => "dual",
                    slimgate::auth::methods::Class::Bearer => "bearer",
                },
                admin: r.role == Some(slimgate::auth::methods::Role::Admin),
                scope: r.scope.map(str::to_string),
            })
            .collect();
    };
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.starts_with("| Method (`/openshell.v1.OpenShell/…` unless noted)") {
            in_table = true;
            continue;
        }
        if in_table && !line.starts_with('|') {
            break;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        let cols: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let (methods, class, role, scope) = (cols[0], cols[1], cols[2], cols[3]);
        let class = match class {
            "unauth" => "unauth",
            "secret" => "secret",
            "dual" => "dual",
            _ => "bearer",
        };
        if methods.starts_with('`') {
            // A full path: `/openshell.inference.v1.Inference/…`
            let path = methods.trim_matches('`').to_string();
            rows.push(Row { path, class, admin: role.contains("admin"), scope: scope_of(scope) });
            continue;
        }
        for m in methods.split('/').map(str::trim).filter(|m| !m.is_empty()) {
            let admin = role.contains("admin") && !role.contains("not admin");
            rows.push(Row {
                path: format!("/openshell.v1.OpenShell/{m}"),
                class,
                admin,
                scope: scope_of(scope),
            });
        }
    }
    assert!(rows.len() >= 40, "api.md table not recognised ({} rows)", rows.len());
    rows
}

fn scope_of(s: &str) -> Option<String> {
    match s {
        "all" | "–" | "-" => None,
        s => Some(s.to_string()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cred {
    None,
    Secret,
    WrongSecret,
    Admin,
    User,
    RolesNoScopes,
    All,
}

const EXPLICIT_SCOPES: &str = "openid sandbox:read sandbox:write provider:read provider:write config:read config:write inference:read inference:write";

fn headers_for(cred: Cred) -> Vec<(&'static str, String)> {
    let bearer = |t: String| vec![("authorization", format!("Bearer {t}"))];
    match cred {
        Cred::None => vec![],
        Cred::Secret => vec![("x-sandbox-secret", SECRET.to_string())],
        Cred::WrongSecret => vec![("x-sandbox-secret", "not-it".to_string())],
        Cred::Admin => bearer(token(
            "ada",
            &["openshell-admin"],
            Some(EXPLICIT_SCOPES),
            "openshell-cli",
            "openshell-cli",
        )),
        Cred::User => bearer(token(
            "ulf",
            &["openshell-user"],
            Some(EXPLICIT_SCOPES),
            "openshell-cli",
            "openshell-cli",
        )),
        Cred::RolesNoScopes => bearer(token(
            "rob",
            &["openshell-admin", "openshell-user"],
            None,
            "openshell-cli",
            "openshell-cli",
        )),
        Cred::All => bearer(token(
            "al",
            &["openshell-user"],
            Some("openshell:all"),
            "openshell-cli",
            "openshell-cli",
        )),
    }
}

/// What the spec says should happen: Ok(()) = let through to the method.
fn expected(row: &Row, cred: Cred, scopes_on: bool) -> Result<(), (u32, String)> {
    let unauth = |m: &str| Err((16, m.to_string()));
    let role = |admin: bool| {
        if admin { "openshell-admin" } else { "openshell-user" }
    };
    let bearer = |cred: Cred| -> Result<(), (u32, String)> {
        let (roles_admin, roles_user, scopes): (bool, bool, Option<&str>) = match cred {
            Cred::None | Cred::Secret | Cred::WrongSecret => {
                return unauth("missing authorization header");
            }
            Cred::Admin => (true, false, Some(EXPLICIT_SCOPES)),
            Cred::User => (false, true, Some(EXPLICIT_SCOPES)),
            Cred::RolesNoScopes => (true, true, None),
            Cred::All => (false, true, Some("openshell:all")),
        };
        let has_role = if row.admin { roles_admin } else { roles_user || roles_admin };
        if !has_role {
            return Err((7, format!("role '{}' required", role(row.admin))));
        }
        if scopes_on {
            let need = row.scope.clone().unwrap_or_else(|| "openshell:all".into());
            let have: Vec<&str> = scopes.unwrap_or("").split(' ').collect();
            if !have.contains(&need.as_str()) && !have.contains(&"openshell:all") {
                return Err((7, format!("scope '{need}' required")));
            }
        }
        Ok(())
    };
    match row.class {
        "unauth" => Ok(()),
        "secret" => match cred {
            Cred::Secret => Ok(()),
            Cred::WrongSecret => unauth("invalid sandbox secret"),
            _ => unauth("sandbox secret required for this method"),
        },
        "dual" => match cred {
            Cred::Secret => Ok(()),
            other => bearer(other),
        },
        _ => bearer(cred),
    }
}

async fn walk(scopes_on: bool) {
    let (running, _db) = gateway(scopes_on).await;
    let mut rows = spec_rows();
    rows.push(Row {
        path: "/no.such.Service/Method".into(),
        class: "bearer",
        admin: false,
        scope: None,
    });
    let creds = [
        Cred::None,
        Cred::Secret,
        Cred::WrongSecret,
        Cred::Admin,
        Cred::User,
        Cred::RolesNoScopes,
        Cred::All,
    ];
    let mut checked = 0;
    for row in &rows {
        for cred in creds {
            if cred == Cred::RolesNoScopes && !scopes_on {
                continue;
            }
            let h = headers_for(cred);
            let hs: Vec<(&'static str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (code, msg) = call(running.addr, &row.path, &hs).await;
            match expected(row, cred, scopes_on) {
                // Let through to the handler. UpdateConfig's handler itself
                // refuses a sandbox-secret caller anything but a sandbox
                // policy sync (auth.md step 4), which an empty request is not.
                Ok(()) if row.path.ends_with("/UpdateConfig") && cred == Cred::Secret => {
                    assert_eq!(
                        (code, msg.as_str()),
                        (7, "sandbox secret may only perform sandbox policy sync"),
                        "{} with {cred:?}",
                        row.path
                    );
                }
                Ok(()) => assert!(
                    code != 16 && code != 7,
                    "{} with {cred:?}: expected to be let through, got {code} {msg:?}",
                    row.path
                ),
                Err((want, text)) => {
                    assert_eq!(code, want, "{} with {cred:?}: {msg:?}", row.path);
                    assert!(
                        msg.contains(&text),
                        "{} with {cred:?}: {msg:?} lacks {text:?}",
                        row.path
                    );
                }
            }
            checked += 1;
        }
    }
    println!(
        "{checked} (method, credential) pairs checked, scopes {}",
        if scopes_on { "on" } else { "off" }
    );
    running.stop().await;
}

#[tokio::test]
async fn every_method_with_every_credential_roles_only() {
    walk(false).await;
}

#[tokio::test]
async fn every_method_with_every_credential_scopes_on() {
    walk(true).await;
}

const OS: &str = "/openshell.v1.OpenShell/";

fn provider_request() -> Vec<u8> {
    use prost::Message;
    use slimgate::proto::openshell::datamodel::v1::{ObjectMeta, Provider};
    use slimgate::proto::openshell::v1::CreateProviderRequest;
    CreateProviderRequest {
        provider: Some(Provider {
            metadata: Some(ObjectMeta { name: "e2e".into(), ..Default::default() }),
            r#type: "github".into(),
            credentials: [("TOKEN".to_string(), "v".to_string())].into_iter().collect(),
            ..Default::default()
        }),
    }
    .encode_to_vec()
}

async fn call_msg(
    addr: SocketAddr,
    method: &str,
    bearer: Option<&str>,
    msg: &[u8],
) -> (u32, String) {
    let mut c = Client::connect(addr).await.unwrap();
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&'static str, &str)> =
        auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let req = raw::grpc_request_with(&format!("{OS}{method}"), &headers, &[]);
    let resp = c.call(req, vec![raw::grpc_frame(msg)]).await.unwrap();
    let m = resp.grpc_message_raw().map(slimgate::grpc::status::decode_message).unwrap_or_default();
    (resp.grpc_status().expect("grpc-status"), m)
}

#[tokio::test]
async fn upstream_oidc_matrix_roles() {
    let (gw, _db) = gateway(false).await;
    let admin = token("ada", &["openshell-admin"], None, "openshell-cli", "openshell-cli");
    let user = token("ulf", &["openshell-user"], None, "openshell-cli", "openshell-cli");
    let req = provider_request();
    assert_eq!(call_msg(gw.addr, "CreateProvider", Some(&admin), &req).await.0, 0, "admin creates");
    let (code, msg) = call_msg(gw.addr, "CreateProvider", Some(&user), &req).await;
    assert_eq!(code, 7);
    assert!(msg.contains("openshell-admin"), "{msg}");
    assert_eq!(
        call_msg(gw.addr, "ListSandboxes", Some(&user), &[]).await.0,
        0,
        "user lists sandboxes"
    );
    let del = {
        use prost::Message;
        slimgate::proto::openshell::v1::DeleteProviderRequest { name: "e2e".into() }.encode_to_vec()
    };
    assert_eq!(call_msg(gw.addr, "DeleteProvider", Some(&admin), &del).await.0, 0, "admin deletes");
    let (code, msg) = call_msg(gw.addr, "ListSandboxes", None, &[]).await;
    assert_eq!((code, msg.as_str()), (16, "missing authorization header"));
    assert_eq!(call_msg(gw.addr, "Health", None, &[]).await.0, 0, "Health needs no auth");
    // A client-credentials token: another audience, its client id in azp,
    // listed in --oidc-audience.
    let svc = token("service-account-ci", &["openshell-user"], None, "account", "ci-service");
    assert_eq!(call_msg(gw.addr, "ListSandboxes", Some(&svc), &[]).await.0, 0, "azp fallback");
    let stranger = token("x", &["openshell-user"], None, "account", "someone-else");
    let (code, msg) = call_msg(gw.addr, "ListSandboxes", Some(&stranger), &[]).await;
    assert_eq!((code, msg.as_str()), (16, "invalid token: bad_audience"));
    gw.stop().await;
}

#[tokio::test]
async fn upstream_oidc_matrix_scopes() {
    let (gw, _db) = gateway(true).await;
    let sandboxes = token(
        "s",
        &["openshell-user"],
        Some("sandbox:read sandbox:write"),
        "openshell-cli",
        "openshell-cli",
    );
    assert_eq!(call_msg(gw.addr, "ListSandboxes", Some(&sandboxes), &[]).await.0, 0);
    let (code, msg) = call_msg(gw.addr, "ListProviders", Some(&sandboxes), &[]).await;
    assert_eq!(code, 7);
    assert!(msg.contains("provider:read"), "{msg}");
    let all =
        token("a", &["openshell-user"], Some("openshell:all"), "openshell-cli", "openshell-cli");
    assert_eq!(call_msg(gw.addr, "ListSandboxes", Some(&all), &[]).await.0, 0);
    assert_eq!(call_msg(gw.addr, "ListProviders", Some(&all), &[]).await.0, 0);
    let none = token(
        "n",
        &["openshell-user"],
        Some("openid profile email"),
        "openshell-cli",
        "openshell-cli",
    );
    let (code, msg) = call_msg(gw.addr, "ListSandboxes", Some(&none), &[]).await;
    assert_eq!(code, 7);
    assert!(msg.contains("scope 'sandbox:read' required"), "{msg}");
    gw.stop().await;
}

/// The spy's path: a dual method (secret or bearer), so the gate's
/// secret and bearer branches both lead to the handler.
const SPY: slimgate::grpc::Method<HealthCheckRequest, HealthCheckRequest> =
    slimgate::grpc::Method::new(
        "/openshell.v1.OpenShell/UpdateConfig",
        slimgate::grpc::Shape::Unary,
    );

/// The real server and the real gate (development mode, the sandbox secret
/// configured) in front of one handler that answers what it received: the
/// caller the gate attached, every `x-openshell-auth-source` value left
/// in its metadata, and how many `x-spy-control` headers it got (proof
/// that client headers do reach it).
async fn spy_server() -> (SocketAddr, slimgate::net::shutdown::Shutdown) {
    use slimgate::grpc::{Context, Router, Status};
    let mut router = Router::new();
    router.unary(SPY, |ctx: Context, _req: HealthCheckRequest| async move {
        let auth_source: Vec<String> = ctx
            .metadata
            .get_all(slimgate::auth::gate::AUTH_SOURCE_HEADER)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let control = ctx.metadata.get_all("x-spy-control").iter().count();
        let caller = slimgate::auth::Caller::of(&ctx.extensions);
        Ok::<_, Status>(HealthCheckRequest {
            service: format!(
                "caller={} auth_source={auth_source:?} control={control}",
                caller.subject()
            ),
        })
    });
    let shutdown = slimgate::net::shutdown::Shutdown::new();
    let gate = slimgate::auth::gate::AuthGate::new(None, Some(SECRET));
    let service = slimgate::grpc::Service::new(
        router,
        gate,
        std::sync::Arc::new(slimgate::net::plain::Liveness),
        1024 * 1024,
        shutdown.clone(),
    );
    let server = slimgate::grpc::server::Server::new(
        service,
        slimgate::grpc::server::Http2Settings::default(),
        shutdown.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve_tcp(listener));
    (addr, shutdown)
}

/// What the spy handler saw for one call with these headers.
async fn spy(addr: SocketAddr, headers: &[(&'static str, &str)]) -> String {
    let mut c = Client::connect(addr).await.unwrap();
    let mut req = raw::grpc_request_with(SPY.path, &[], &[]);
    for (name, value) in headers {
        req.headers_mut().append(*name, http::HeaderValue::from_str(value).unwrap());
    }
    let resp = c.call(req, vec![raw::grpc_frame(&[])]).await.unwrap();
    assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
    let messages = resp.messages();
    assert_eq!(messages.len(), 1, "{resp:?}");
    HealthCheckRequest::decode(messages[0].clone()).unwrap().service
}

#[tokio::test]
async fn spoofed_auth_source_headers_never_reach_the_handler() {
    let (addr, shutdown) = spy_server().await;
    // Without the secret: the caller is whatever the gate decided
    // (anonymous in development mode), and the forged header is gone.
    assert_eq!(
        spy(addr, &[("x-openshell-auth-source", "sandbox")]).await,
        "caller=anonymous auth_source=[] control=0"
    );
    // Several values, and one beside a valid secret: all removed; the
    // caller comes from the secret, not from the header.
    assert_eq!(
        spy(
            addr,
            &[
                ("x-openshell-auth-source", "user"),
                ("x-openshell-auth-source", "sandbox"),
                ("x-sandbox-secret", SECRET),
            ]
        )
        .await,
        "caller=sandbox auth_source=[] control=0"
    );
    // The control: a header the gate leaves alone does reach the handler,
    // so the empty lists above are the gate's doing.
    assert_eq!(
        spy(
            addr,
            &[
                ("x-spy-control", "1"),
                ("x-spy-control", "2"),
                ("x-openshell-auth-source", "sandbox"),
            ]
        )
        .await,
        "caller=anonymous auth_source=[] control=2"
    );
    shutdown.trigger();
}

#[tokio::test]
async fn a_token_also_in_the_query_of_the_path_is_refused() {
    let (gw, _db) = gateway(false).await;
    let t = token("q", &["openshell-user"], None, "openshell-cli", "openshell-cli");
    let auth = format!("Bearer {t}");
    let headers = [("authorization", auth.as_str())];
    let path = format!("{OS}ListSandboxes");
    // The token alone in the header is accepted.
    assert_eq!(call(gw.addr, &path, &headers).await, (0, String::new()));
    // The same call with the token also in `:path`'s query is ambiguous.
    for query in
        [format!("access_token={t}"), format!("a=1&access_token={t}"), "access_token".to_string()]
    {
        assert_eq!(
            call(gw.addr, &format!("{path}?{query}"), &headers).await,
            (16, "invalid token: bad_authorization".to_string()),
            "{query}"
        );
    }
    // Another query parameter is no token: the call is routed as usual.
    assert_eq!(
        call(gw.addr, &format!("{path}?my_access_token=x"), &headers).await,
        (0, String::new())
    );
    gw.stop().await;
}
