//! One KeyValue call to a plugin, over the multiplexed stream when the
//! connection has one and as a unary call otherwise.

use std::sync::Arc;

use prism_proto::keyvalue::v1::{
    BatchGetRequest, BatchGetResponse, BatchPutRequest, BatchPutResponse, DeleteRequest, DeleteResponse, GetRequest,
    GetResponse, PutRequest, PutResponse, ScanRequest, ScanResponse,
};
use prism_proto::plugin::v1::key_value_backend_client::KeyValueBackendClient;
use prism_proto::plugin::v1::{key_value_call, key_value_reply};
use tonic::transport::Channel;
use tonic::{Response, Status};

use super::mux::{Mux, plugin_status};
use crate::context::RequestContext;

pub enum KeyValueCaller {
    Multiplexed(Arc<Mux>),
    Unary(KeyValueBackendClient<Channel>),
}

macro_rules! call {
    ($name:ident, $request:ty, $response:ty, $variant:ident) => {
        pub async fn $name(self, ctx: &RequestContext, request: $request) -> Result<Response<$response>, Status> {
            match self {
                Self::Unary(mut client) => client.$name(ctx.outbound(request)).await,
                // The proxy's own deadline bounds the wait (`call_plugin`);
                // the request id is not sent, as plugins do not log per call.
                Self::Multiplexed(mux) => match mux.call(key_value_call::Request::$variant(request)).await? {
                    key_value_reply::Reply::$variant(response) => Ok(Response::new(response)),
                    key_value_reply::Reply::Error(e) => Err(plugin_status(e.code, e.message)),
                    _ => Err(plugin_status(
                        tonic::Code::Internal as i32,
                        format!("the plugin answered {} with another call's reply", stringify!($name)),
                    )),
                },
            }
        }
    };
}

impl KeyValueCaller {
    call!(put, PutRequest, PutResponse, Put);
    call!(get, GetRequest, GetResponse, Get);
    call!(delete, DeleteRequest, DeleteResponse, Delete);
    call!(batch_get, BatchGetRequest, BatchGetResponse, BatchGet);
    call!(batch_put, BatchPutRequest, BatchPutResponse, BatchPut);
    call!(scan, ScanRequest, ScanResponse, Scan);
}
