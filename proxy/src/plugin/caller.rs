//! Calls to a plugin's pattern services. KeyValue calls travel over the
//! multiplexed stream when the connection has one and as unary calls
//! otherwise; TimeSeries and Graph calls are unary. Either way a call
//! carries its [`CallOptions`], and its failure comes back as the proxy's
//! error, mapped in `crate::error`.

use std::future::Future;
use std::sync::Arc;

use prism_proto::keyvalue::v1::{
    BatchGetRequest, BatchGetResponse, BatchPutRequest, BatchPutResponse, DeleteRequest, DeleteResponse, GetRequest,
    GetResponse, PutRequest, PutResponse, ScanRequest, ScanResponse,
};
use prism_proto::plugin::v1::key_value_backend_client::KeyValueBackendClient;
use prism_proto::plugin::v1::{key_value_call, key_value_reply};
use tonic::transport::Channel;
use tonic::{Response, Status};

use super::mux::Mux;
use super::options::CallOptions;
use crate::error::ProxyError;

/// Maps the answer of a unary call to plugin `plugin`.
pub async fn unary<T>(plugin: &str, call: impl Future<Output = Result<Response<T>, Status>>) -> Result<T, ProxyError> {
    call.await.map(Response::into_inner).map_err(|status| ProxyError::from_plugin(plugin, &status))
}

pub enum KeyValueCaller<'a> {
    Multiplexed(&'a str, Arc<Mux>),
    Unary(&'a str, KeyValueBackendClient<Channel>),
}

macro_rules! call {
    ($name:ident, $request:ty, $response:ty, $variant:ident) => {
        pub async fn $name(self, options: &CallOptions, request: $request) -> Result<$response, ProxyError> {
            match self {
                Self::Unary(plugin, mut client) => unary(plugin, client.$name(options.request(request))).await,
                Self::Multiplexed(plugin, mux) => {
                    let call = key_value_call::Request::$variant(request);
                    match mux.call(call, options.to_proto()).await {
                        Ok(key_value_reply::Reply::$variant(response)) => Ok(response),
                        Ok(key_value_reply::Reply::Error(e)) => {
                            Err(ProxyError::from_plugin_reply(plugin, e.code, &e.message))
                        }
                        Ok(_) => Err(ProxyError::Internal(format!(
                            "plugin {plugin} answered {} with another call's reply",
                            stringify!($name)
                        ))),
                        Err(_closed) => Err(ProxyError::plugin_connection_lost(plugin)),
                    }
                }
            }
        }
    };
}

impl KeyValueCaller<'_> {
    call!(put, PutRequest, PutResponse, Put);
    call!(get, GetRequest, GetResponse, Get);
    call!(delete, DeleteRequest, DeleteResponse, Delete);
    call!(batch_get, BatchGetRequest, BatchGetResponse, BatchGet);
    call!(batch_put, BatchPutRequest, BatchPutResponse, BatchPut);
    call!(scan, ScanRequest, ScanResponse, Scan);
}
