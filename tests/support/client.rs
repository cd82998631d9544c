//! A tonic client on slimgate's method constants that sends the same
//! credential headers on every call (`authorization`, `x-sandbox-secret`):
//! unary, server-streaming and client-streaming calls.

use http::uri::PathAndQuery;
use prost::Message;
use slimgate::grpc::Method;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

/// A channel plus the headers one kind of caller sends.
#[derive(Clone)]
pub struct Client {
    pub channel: tonic::transport::Channel,
    pub headers: Vec<(&'static str, String)>,
}

impl Client {
    pub fn new(channel: &tonic::transport::Channel, headers: &[(&'static str, &str)]) -> Client {
        Client {
            channel: channel.clone(),
            headers: headers.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        }
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        for (k, v) in &self.headers {
            let v: MetadataValue<_> = v.parse().unwrap();
            r.metadata_mut().insert(*k, v);
        }
        r
    }

    async fn grpc(&self) -> Result<tonic::client::Grpc<tonic::transport::Channel>, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(grpc)
    }

    pub async fn call<Req, Resp>(&self, method: Method<Req, Resp>, req: Req) -> Result<Resp, Status>
    where
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        self.grpc()
            .await?
            .unary(
                self.request(req),
                PathAndQuery::from_static(method.path),
                ProstCodec::<Req, Resp>::default(),
            )
            .await
            .map(Response::into_inner)
    }

    pub async fn stream<Req, Resp>(
        &self,
        method: Method<Req, Resp>,
        req: Req,
    ) -> Result<tonic::Streaming<Resp>, Status>
    where
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        self.grpc()
            .await?
            .server_streaming(
                self.request(req),
                PathAndQuery::from_static(method.path),
                ProstCodec::<Req, Resp>::default(),
            )
            .await
            .map(Response::into_inner)
    }

    /// A client-streaming call sending `reqs`, then half-closing.
    pub async fn push<Req, Resp>(
        &self,
        method: Method<Req, Resp>,
        reqs: Vec<Req>,
    ) -> Result<Resp, Status>
    where
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        self.grpc()
            .await?
            .client_streaming(
                self.request(tokio_stream::iter(reqs)),
                PathAndQuery::from_static(method.path),
                ProstCodec::<Req, Resp>::default(),
            )
            .await
            .map(Response::into_inner)
    }
}
