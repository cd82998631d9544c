//! Every message of `proto/` with tonic client and server stubs, one module
//! per protobuf package. `google.protobuf` types come from `prost-types`.
//!
//! - `pb::openshell::v1::open_shell_client::OpenShellClient`,
//!   `pb::openshell::v1::open_shell_server::{OpenShell, OpenShellServer}`
//! - `pb::openshell::inference::v1::inference_client::InferenceClient`
//! - `pb::openshell::compute::v1::compute_driver_{client,server}`
//! - `pb::openshell::credentials::v1::credentials_driver_{client,server}`
//! - `pb::grpc::health::v1::health_{client,server}`
//! - `pb::grpc::reflection::v1::server_reflection_{client,server}` (and `v1alpha`)
#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/pb.rs"));
