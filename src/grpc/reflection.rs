//! gRPC server reflection, `grpc.reflection.v1` and `v1alpha` from one
//! implementation (the two share a schema; grpcurl tries v1 first, Evans
//! still speaks only v1alpha), served from the descriptor set `build.rs`
//! embeds.
//!
//! Descriptors are read with a few hand-declared prost messages that keep
//! only names (no dependency on prost-types); the files themselves are served
//! as the exact bytes of the embedded set.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use super::method::{Method, Shape};
use super::router::{Context, Requests, Router, Sink};
use super::status::Status;
use crate::proto::grpc::reflection::v1::{
    ErrorResponse, ExtensionNumberResponse, FileDescriptorResponse, ListServiceResponse,
    ServerReflectionRequest, ServerReflectionResponse, ServiceResponse, server_reflection,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

/// The v1alpha path, served with the (wire-identical) v1 types.
const V1ALPHA: Method<ServerReflectionRequest, ServerReflectionResponse> = Method::new(
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    Shape::BidiStreaming,
);

/// `grpc.StatusCode.NOT_FOUND` in an `ErrorResponse`.
const NOT_FOUND: i32 = 5;

#[derive(Clone, PartialEq, prost::Message)]
struct FileSet {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    file: Vec<Bytes>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileProto {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    package: Option<String>,
    #[prost(string, repeated, tag = "3")]
    dependency: Vec<String>,
    #[prost(message, repeated, tag = "4")]
    message_type: Vec<MessageProto>,
    #[prost(message, repeated, tag = "5")]
    enum_type: Vec<Named>,
    #[prost(message, repeated, tag = "6")]
    service: Vec<ServiceProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MessageProto {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(message, repeated, tag = "3")]
    nested_type: Vec<MessageProto>,
    #[prost(message, repeated, tag = "4")]
    enum_type: Vec<Named>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ServiceProto {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(message, repeated, tag = "2")]
    method: Vec<Named>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Named {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
}

/// An index over an encoded `FileDescriptorSet`.
#[derive(Debug)]
pub struct Reflection {
    files: HashMap<String, (Bytes, Vec<String>)>,
    symbols: HashMap<String, String>,
    messages: HashSet<String>,
    services: Vec<String>,
}

impl Reflection {
    /// Index a descriptor set; `services` are the names `list_services` reports.
    pub fn new(
        descriptor_set: &[u8],
        services: impl IntoIterator<Item = String>,
    ) -> Result<Reflection, prost::DecodeError> {
        use prost::Message as _;
        let set = FileSet::decode(descriptor_set)?;
        let mut files = HashMap::new();
        let mut symbols = HashMap::new();
        let mut messages = HashSet::new();
        for raw in set.file {
            let file = FileProto::decode(raw.clone())?;
            let name = file.name.clone().unwrap_or_default();
            let pkg = file.package.clone().unwrap_or_default();
            let mut add = |sym: String| {
                symbols.insert(sym, name.clone());
            };
            for m in &file.message_type {
                index_message(&pkg, m, &mut add, &mut messages);
            }
            for e in &file.enum_type {
                add(join(&pkg, e.name.as_deref().unwrap_or_default()));
            }
            for s in &file.service {
                let sname = join(&pkg, s.name.as_deref().unwrap_or_default());
                for m in &s.method {
                    add(join(&sname, m.name.as_deref().unwrap_or_default()));
                }
                add(sname);
            }
            files.insert(name, (raw, file.dependency));
        }
        let services: BTreeSet<String> = services.into_iter().collect();
        Ok(Reflection { files, symbols, messages, services: services.into_iter().collect() })
    }

    /// Add both reflection services to a router.
    pub fn register(self, router: &mut Router) {
        let me = Arc::new(self);
        for method in [server_reflection::SERVER_REFLECTION_INFO, V1ALPHA] {
            let me = Arc::clone(&me);
            router.bidi(
                method,
                move |_ctx: Context,
                      reqs: Requests<ServerReflectionRequest>,
                      sink: Sink<ServerReflectionResponse>| {
                    let me = Arc::clone(&me);
                    async move { me.serve(reqs, sink).await }
                },
            );
        }
    }

    async fn serve(
        &self,
        mut reqs: Requests<ServerReflectionRequest>,
        sink: Sink<ServerReflectionResponse>,
    ) -> Result<(), Status> {
        let mut sent = HashSet::new();
        while let Some(req) = reqs.next().await? {
            let answer = self.answer(req.message_request.as_ref(), &mut sent);
            let resp = ServerReflectionResponse {
                valid_host: req.host.clone(),
                original_request: Some(req),
                message_response: Some(answer),
            };
            sink.send(&resp).await?;
        }
        Ok(())
    }

    /// The answer to one request; `sent` holds the files already sent on
    /// this stream (dependencies are sent once).
    pub fn answer(
        &self,
        req: Option<&MessageRequest>,
        sent: &mut HashSet<String>,
    ) -> MessageResponse {
        match req {
            Some(MessageRequest::ListServices(_)) => {
                MessageResponse::ListServicesResponse(ListServiceResponse {
                    service: self
                        .services
                        .iter()
                        .map(|name| ServiceResponse { name: name.clone() })
                        .collect(),
                })
            }
            Some(MessageRequest::FileByFilename(name)) => self.files_for(name, sent),
            Some(MessageRequest::FileContainingSymbol(sym)) => {
                match self.symbols.get(sym.trim_start_matches('.')) {
                    Some(file) => self.files_for(&file.clone(), sent),
                    None => not_found(format!("symbol not found: {sym}")),
                }
            }
            Some(MessageRequest::AllExtensionNumbersOfType(ty)) => {
                if self.messages.contains(ty.trim_start_matches('.')) {
                    MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
                        base_type_name: ty.clone(),
                        extension_number: Vec::new(),
                    })
                } else {
                    not_found(format!("type not found: {ty}"))
                }
            }
            Some(MessageRequest::FileContainingExtension(ext)) => not_found(format!(
                "extension not found: {}({})",
                ext.containing_type, ext.extension_number
            )),
            None => not_found("empty reflection request".to_string()),
        }
    }

    fn files_for(&self, name: &str, sent: &mut HashSet<String>) -> MessageResponse {
        if !self.files.contains_key(name) {
            return not_found(format!("file not found: {name}"));
        }
        // The asked-for file always goes out, first; each dependency only if
        // it was not sent before on this stream.
        let mut out = Vec::new();
        let mut visited = HashSet::new();
        let mut stack = vec![name.to_string()];
        while let Some(n) = stack.pop() {
            if !visited.insert(n.clone()) || (n != name && sent.contains(&n)) {
                continue;
            }
            if let Some((bytes, deps)) = self.files.get(&n) {
                out.push(bytes.clone());
                stack.extend(deps.iter().cloned());
                sent.insert(n);
            }
        }
        MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
            file_descriptor_proto: out,
        })
    }
}

fn index_message(
    scope: &str,
    m: &MessageProto,
    add: &mut impl FnMut(String),
    messages: &mut HashSet<String>,
) {
    let name = join(scope, m.name.as_deref().unwrap_or_default());
    for n in &m.nested_type {
        index_message(&name, n, add, messages);
    }
    for e in &m.enum_type {
        add(join(&name, e.name.as_deref().unwrap_or_default()));
    }
    messages.insert(name.clone());
    add(name);
}

fn join(scope: &str, name: &str) -> String {
    if scope.is_empty() { name.to_string() } else { format!("{scope}.{name}") }
}

fn not_found(message: String) -> MessageResponse {
    MessageResponse::ErrorResponse(ErrorResponse { error_code: NOT_FOUND, error_message: message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::FILE_DESCRIPTOR_SET;

    fn index() -> Reflection {
        Reflection::new(FILE_DESCRIPTOR_SET, ["openshell.v1.OpenShell".to_string()]).unwrap()
    }

    #[test]
    fn symbol_lookup_sends_dependencies_once() {
        let r = index();
        let mut sent = HashSet::new();
        let q = MessageRequest::FileContainingSymbol("openshell.v1.OpenShell".into());
        let MessageResponse::FileDescriptorResponse(first) = r.answer(Some(&q), &mut sent) else {
            panic!()
        };
        // openshell.proto, datamodel.proto, sandbox.proto, google/protobuf/struct.proto
        assert_eq!(first.file_descriptor_proto.len(), 4);
        let q = MessageRequest::FileContainingSymbol("openshell.v1.Sandbox".into());
        let MessageResponse::FileDescriptorResponse(again) = r.answer(Some(&q), &mut sent) else {
            panic!()
        };
        assert_eq!(again.file_descriptor_proto.len(), 1);
    }

    #[test]
    fn unknown_symbol_is_not_found() {
        let r = index();
        let q = MessageRequest::FileContainingSymbol("no.Such".into());
        let MessageResponse::ErrorResponse(e) = r.answer(Some(&q), &mut HashSet::new()) else {
            panic!()
        };
        assert_eq!(e.error_code, NOT_FOUND);
    }

    #[test]
    fn nested_and_method_symbols() {
        let r = index();
        for sym in [
            "openshell.v1.OpenShell.Health",
            "grpc.health.v1.HealthCheckResponse.ServingStatus",
            "openshell.v1.SandboxPhase",
        ] {
            assert!(r.symbols.contains_key(sym), "{sym}");
        }
    }
}
