//! The benchmark baseline: the gateway most Rust teams would write for the
//! same two calls as slimgate, with the mainstream crates used as their
//! READMEs show.
//!
//! - gRPC: a tonic server (`openshell.v1.OpenShell`, stubs generated from
//!   slimgate's own `proto/`; every method but `Health` and `ListProviders`
//!   answers UNIMPLEMENTED);
//! - auth: `jsonwebtoken` validates the `authorization: Bearer` RS256/ES256
//!   token on every call (no cache): the key by `kid` from a JWKS file
//!   (decoding keys built once at startup, as its README advises), `iss`,
//!   `aud`, `exp`/`nbf` with 60 s leeway, then the same role rule as
//!   slimgate (`realm_access.roles` holds `openshell-user` or
//!   `openshell-admin`);
//! - store: a redb file, one table of encoded `Provider` messages by name;
//!   ListProviders reads a page in a read transaction and replaces every
//!   credential value with `REDACTED`, as slimgate does.
//!
//! Usage: `slimgate-baseline --port P --jwks FILE --issuer URL --audience AUD
//! --db FILE [--seed FILE]`, where the seed file is an encoded
//! `ListProvidersResponse` whose providers are stored at startup. Prints
//! `listening <addr>` on stdout once bound.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::SocketAddr;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Deserialize;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

#[allow(clippy::all, clippy::pedantic, missing_docs, dead_code)]
mod pb {
    include!(concat!(env!("OUT_DIR"), "/pb.rs"));
}

use pb::openshell::v1::open_shell_server::{OpenShell, OpenShellServer};
use pb::openshell::v1::{
    HealthRequest, HealthResponse, ListProvidersRequest, ListProvidersResponse, ServiceStatus,
};

const PROVIDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("providers");
const USER_ROLE: &str = "openshell-user";
const ADMIN_ROLE: &str = "openshell-admin";

#[derive(Debug, Deserialize)]
struct Claims {
    #[allow(dead_code)]
    sub: String,
    #[serde(default)]
    realm_access: RealmAccess,
}

#[derive(Debug, Default, Deserialize)]
struct RealmAccess {
    #[serde(default)]
    roles: Vec<String>,
}

struct Gateway {
    db: Database,
    /// Decoding key and the validation for its algorithm, by `kid`
    /// (jsonwebtoken wants every algorithm of a `Validation` to be of the
    /// key's family).
    keys: HashMap<String, (DecodingKey, Validation)>,
}

impl Gateway {
    fn authorize<T>(&self, req: &Request<T>) -> Result<Claims, Status> {
        let token = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization header"))?
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("invalid authorization header"))?;
        let header = decode_header(token).map_err(|_| Status::unauthenticated("invalid token"))?;
        let (key, validation) = header
            .kid
            .as_ref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or_else(|| Status::unauthenticated("unknown signing key"))?;
        let data = decode::<Claims>(token, key, validation)
            .map_err(|_| Status::unauthenticated("invalid token"))?;
        let roles = &data.claims.realm_access.roles;
        if !roles.iter().any(|r| r == USER_ROLE || r == ADMIN_ROLE) {
            return Err(Status::permission_denied("role 'openshell-user' required"));
        }
        Ok(data.claims)
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl OpenShell for Gateway {
    async fn health(
        &self,
        _req: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        Ok(Response::new(HealthResponse {
            status: ServiceStatus::Healthy as i32,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn list_providers(
        &self,
        req: Request<ListProvidersRequest>,
    ) -> Result<Response<ListProvidersResponse>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        let limit = match req.limit {
            0 => 100,
            n => n.min(1000) as usize,
        };
        let txn = self.db.begin_read().map_err(internal)?;
        let table = txn.open_table(PROVIDERS).map_err(internal)?;
        let mut providers = Vec::new();
        for entry in table
            .iter()
            .map_err(internal)?
            .skip(req.offset as usize)
            .take(limit)
        {
            let (_, value) = entry.map_err(internal)?;
            let mut p =
                pb::openshell::datamodel::v1::Provider::decode(value.value()).map_err(internal)?;
            for v in p.credentials.values_mut() {
                *v = "REDACTED".to_string();
            }
            providers.push(p);
        }
        Ok(Response::new(ListProvidersResponse { providers }))
    }
}

struct Args {
    port: u16,
    jwks: String,
    issuer: String,
    audience: String,
    db: String,
    seed: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut map = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        map.insert(flag, value);
    }
    let mut take = |k: &str| map.remove(k);
    Ok(Args {
        port: take("--port")
            .unwrap_or_else(|| "0".into())
            .parse()
            .map_err(|_| "bad --port")?,
        jwks: take("--jwks").ok_or("--jwks is required")?,
        issuer: take("--issuer").ok_or("--issuer is required")?,
        audience: take("--audience").unwrap_or_else(|| "openshell-cli".into()),
        db: take("--db").ok_or("--db is required")?,
        seed: take("--seed"),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;

    let validation = |alg| {
        let mut v = Validation::new(alg);
        v.set_issuer(&[&args.issuer]);
        v.set_audience(&[&args.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.leeway = 60;
        v
    };
    let jwks: JwkSet = serde_json::from_slice(&std::fs::read(&args.jwks)?)?;
    let mut keys = HashMap::new();
    for jwk in &jwks.keys {
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
            _ => continue,
        };
        if let (Some(kid), Ok(key)) = (&jwk.common.key_id, DecodingKey::from_jwk(jwk)) {
            keys.insert(kid.clone(), (key, validation(alg)));
        }
    }

    let db = Database::create(&args.db)?;
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(PROVIDERS)?;
        if let Some(seed) = &args.seed {
            let seed = ListProvidersResponse::decode(std::fs::read(seed)?.as_slice())?;
            for p in seed.providers {
                let name = p
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                table.insert(name.as_str(), p.encode_to_vec().as_slice())?;
            }
        }
    }
    txn.commit()?;

    let gateway = Gateway { db, keys };
    let addr: SocketAddr = ([127, 0, 0, 1], args.port).into();
    let incoming = TcpIncoming::bind(addr)?.with_nodelay(Some(true));
    println!("listening {}", incoming.local_addr()?);
    Server::builder()
        .add_service(OpenShellServer::new(gateway))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
