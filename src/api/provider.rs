//! Providers: CreateProvider, GetProvider, ListProviders, UpdateProvider,
//! DeleteProvider (api.md "Handler semantics", upstream's limits and
//! messages). Every reply redacts credential values to `REDACTED`; only
//! GetSandboxProviderEnvironment and GetInferenceBundle read real values.
//!
//! A provider is stored as its encoded `Provider` message under
//! (`Kind::Provider`, name); the record's id, name, creation time and labels
//! are the source of truth for `metadata`.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message;

use super::{Call, State, page_limit, store_status};
use crate::domain::limits::MAX_NAME_BYTES;
use crate::grpc::Status;
use crate::proto::openshell::datamodel::v1::{ObjectMeta, Provider};
use crate::proto::openshell::v1::{
    CreateProviderRequest, DeleteProviderRequest, DeleteProviderResponse, GetProviderRequest,
    ListProvidersRequest, ListProvidersResponse, ProviderResponse, UpdateProviderRequest,
};
use crate::store::{Expect, Kind, ListQuery, NewRecord, Op, Record, StoreError};

/// Longest provider type.
pub const MAX_PROVIDER_TYPE_BYTES: usize = 64;
/// Most credential entries.
pub const MAX_CREDENTIALS: usize = 32;
/// Most config entries.
pub const MAX_CONFIG_ENTRIES: usize = 64;
/// Length of a generated provider name (lowercase letters).
const GENERATED_NAME_LEN: usize = 6;
/// Read-modify-write attempts for an update racing other updates.
const UPDATE_ATTEMPTS: usize = 5;
/// What every reply shows instead of a credential value.
pub const REDACTED: &str = "REDACTED";

pub(super) async fn create(
    Call { state, req, .. }: Call<CreateProviderRequest>,
) -> Result<ProviderResponse, Status> {
    let mut p = req.provider.ok_or_else(|| Status::invalid_argument("provider is required"))?;
    let mut meta = p.metadata.take().unwrap_or_default();
    if meta.name.is_empty() {
        meta.name = super::random_lowercase(GENERATED_NAME_LEN)?;
    }
    meta.id = crate::store::new_uuid_v4().map_err(store_status)?;
    let (id, name, labels) = (meta.id.clone(), meta.name.clone(), meta.labels.clone());
    p.metadata = Some(meta);
    if p.r#type.trim().is_empty() {
        return Err(Status::invalid_argument("provider.type is required"));
    }
    if p.credentials.is_empty() {
        return Err(Status::invalid_argument("provider.credentials must not be empty"));
    }
    validate(&p)?;
    let record = NewRecord { id, name, labels, payload: Bytes::from(p.encode_to_vec()) };
    let written = state.write(move |s| s.create(Kind::Provider, record)).await.map_err(|e| {
        if e.code() == crate::grpc::Code::AlreadyExists {
            Status::already_exists("provider already exists")
        } else {
            e
        }
    })?;
    Ok(ProviderResponse { provider: Some(redact(from_record(&written)?)) })
}

pub(super) async fn get(
    Call { state, req, .. }: Call<GetProviderRequest>,
) -> Result<ProviderResponse, Status> {
    if req.name.is_empty() {
        return Err(Status::invalid_argument("name is required"));
    }
    let provider =
        load(&state, &req.name)?.ok_or_else(|| Status::not_found("provider not found"))?;
    Ok(ProviderResponse { provider: Some(redact(provider)) })
}

pub(super) async fn list(
    Call { state, req, .. }: Call<ListProvidersRequest>,
) -> Result<ListProvidersResponse, Status> {
    let query = ListQuery {
        offset: req.offset as usize,
        limit: page_limit(req.limit),
        ..ListQuery::default()
    };
    let records = state.store.list(Kind::Provider, &query).map_err(store_status)?;
    let providers = records.iter().map(|r| from_record(r).map(redact)).collect::<Result<_, _>>()?;
    Ok(ListProvidersResponse { providers })
}

pub(super) async fn update(
    Call { state, req, .. }: Call<UpdateProviderRequest>,
) -> Result<ProviderResponse, Status> {
    let incoming = req.provider.ok_or_else(|| Status::invalid_argument("provider is required"))?;
    let name = incoming.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
    if name.is_empty() {
        return Err(Status::invalid_argument("provider.name is required"));
    }
    for _ in 0..UPDATE_ATTEMPTS {
        let record = state.store.get(Kind::Provider, &name).map_err(store_status)?;
        let record = record.ok_or_else(|| Status::not_found("provider not found"))?;
        let mut candidate = from_record(&record)?;
        let new_type = incoming.r#type.trim();
        if !new_type.is_empty() && !new_type.eq_ignore_ascii_case(candidate.r#type.trim()) {
            return Err(Status::invalid_argument(
                "provider type cannot be changed; delete and recreate the provider",
            ));
        }
        merge(&mut candidate.credentials, &incoming.credentials);
        merge(&mut candidate.config, &incoming.config);
        validate(&candidate)?;
        let op = Op::Put {
            kind: Kind::Provider,
            record: NewRecord {
                id: record.id.clone(),
                name: name.clone(),
                labels: record.labels.clone(),
                payload: Bytes::from(candidate.encode_to_vec()),
            },
            expect: Expect::Revision(record.revision),
        };
        match state.write_raw(move |s| s.apply(vec![op])).await {
            Ok(_) => {
                return Ok(ProviderResponse { provider: Some(redact(candidate)) });
            }
            Err(StoreError::PreconditionFailed { .. }) => continue,
            Err(StoreError::NotFound { .. }) => {
                return Err(Status::not_found("provider not found"));
            }
            Err(e) => return Err(store_status(e)),
        }
    }
    Err(Status::new(crate::grpc::Code::Aborted, "provider is being modified concurrently; retry"))
}

pub(super) async fn delete(
    Call { state, req, .. }: Call<DeleteProviderRequest>,
) -> Result<DeleteProviderResponse, Status> {
    let name = req.name;
    if name.is_empty() {
        return Err(Status::invalid_argument("name is required"));
    }
    let deleted = state.write(move |s| s.delete(Kind::Provider, &name)).await?;
    Ok(DeleteProviderResponse { deleted })
}

/// Upstream's merge: an empty incoming map changes nothing; an empty value
/// deletes its key; any other value sets it.
fn merge(current: &mut BTreeMap<String, String>, incoming: &BTreeMap<String, String>) {
    for (k, v) in incoming {
        if v.is_empty() {
            current.remove(k);
        } else {
            current.insert(k.clone(), v.clone());
        }
    }
}

fn validate(p: &Provider) -> Result<(), Status> {
    let name = p.metadata.as_ref().map_or("", |m| m.name.as_str());
    if name.len() > MAX_NAME_BYTES {
        return Err(Status::invalid_argument(format!(
            "provider.name exceeds maximum length ({} > {MAX_NAME_BYTES})",
            name.len()
        )));
    }
    if p.r#type.len() > MAX_PROVIDER_TYPE_BYTES {
        return Err(Status::invalid_argument(format!(
            "provider.type exceeds maximum length ({} > {MAX_PROVIDER_TYPE_BYTES})",
            p.r#type.len()
        )));
    }
    crate::domain::limits::string_map(&p.credentials, MAX_CREDENTIALS, "provider.credentials")?;
    crate::domain::limits::string_map(&p.config, MAX_CONFIG_ENTRIES, "provider.config")
}

fn redact(mut p: Provider) -> Provider {
    for v in p.credentials.values_mut() {
        *v = REDACTED.to_string();
    }
    p
}

/// The stored provider, with `metadata` taken from the record.
pub fn from_record(r: &Record) -> Result<Provider, Status> {
    let mut p = Provider::decode(r.payload.clone()).map_err(|e| {
        crate::log::error("stored provider does not decode")
            .str("name", &r.name)
            .display("error", e)
            .emit();
        Status::internal("stored provider is corrupt")
    })?;
    p.metadata = Some(ObjectMeta {
        id: r.id.clone(),
        name: r.name.clone(),
        created_at_ms: r.created_at_ms,
        labels: r.labels.clone(),
    });
    Ok(p)
}

/// The provider with real credential values (for the sandbox environment
/// and inference routes; never for a reply to a user).
pub fn load(state: &State, name: &str) -> Result<Option<Provider>, Status> {
    match state.store.get(Kind::Provider, name).map_err(store_status)? {
        Some(r) => from_record(&r).map(Some),
        None => Ok(None),
    }
}
