//! KeyValue end to end: client → prism-proxy → prism-plugin-memstore.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::collections::BTreeSet;
use std::time::Duration;

use prism_proto::keyvalue::v1::{
    BatchGetRequest, BatchPutRequest, DeleteRequest, GetRequest, PutItem, PutRequest, ScanRequest,
};
use prism_tests::{ProxyConfig, eventually};
use tonic::Code;

fn put(ns: &str, key: &str, value: &[u8]) -> PutRequest {
    PutRequest { namespace: ns.into(), key: key.into(), value: value.to_vec().into(), ..Default::default() }
}

fn get(ns: &str, key: &str) -> GetRequest {
    GetRequest { namespace: ns.into(), key: key.into() }
}

#[tokio::test]
async fn every_call_round_trips_through_the_plugin() {
    let proxy = ProxyConfig::memstore().start();
    let mut kv = proxy.kv().await;

    let v1 = kv.put(put("demo", "user/1", b"alice")).await.unwrap().into_inner().version;
    let got = kv.get(get("demo", "user/1")).await.unwrap().into_inner();
    assert!(got.found);
    assert_eq!(&got.value[..], b"alice");
    assert_eq!(got.version, v1);

    let v2 = kv.put(put("demo", "user/1", b"alice2")).await.unwrap().into_inner().version;
    assert!(v2 > v1, "versions grow: {v1} then {v2}");

    let missing = kv.get(get("demo", "nobody")).await.unwrap().into_inner();
    assert!(!missing.found);
    assert!(missing.value.is_empty());

    let batch = kv
        .batch_put(BatchPutRequest {
            namespace: "demo".into(),
            items: (0..5)
                .map(|i| PutItem { key: format!("b/{i}"), value: vec![i as u8 + 1; 3].into(), ttl_seconds: 0 })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.versions.len(), 5);
    assert!(batch.versions.windows(2).all(|w| w[0] < w[1]));

    let keys = vec!["b/3".to_owned(), "absent".to_owned(), "b/0".to_owned()];
    let items = kv
        .batch_get(BatchGetRequest { namespace: "demo".into(), keys: keys.clone() })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items.iter().map(|i| i.key.clone()).collect::<Vec<_>>(), keys, "request order");
    assert!(items[0].found && items[0].value[..] == [4, 4, 4]);
    assert!(!items[1].found);
    assert_eq!(items[2].version, batch.versions[0]);

    let scanned = kv
        .scan(ScanRequest { namespace: "demo".into(), prefix: "b/".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scanned.items.len(), 5);
    assert!(scanned.next_page_token.is_empty());

    let deleted =
        kv.delete(DeleteRequest { namespace: "demo".into(), key: "user/1".into(), if_version: None }).await.unwrap();
    assert!(deleted.into_inner().deleted);
    let again =
        kv.delete(DeleteRequest { namespace: "demo".into(), key: "user/1".into(), if_version: None }).await.unwrap();
    assert!(!again.into_inner().deleted);
    assert!(!kv.get(get("demo", "user/1")).await.unwrap().into_inner().found);

    // Empty batches and scans answer empty.
    let empty = kv.batch_get(BatchGetRequest { namespace: "demo".into(), keys: vec![] }).await.unwrap();
    assert!(empty.into_inner().items.is_empty());
    let none = kv
        .scan(ScanRequest { namespace: "demo".into(), prefix: "zzz".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(none.items.is_empty() && none.next_page_token.is_empty());
}

#[tokio::test]
async fn binary_values_survive_unchanged() {
    let proxy = ProxyConfig::memstore().start();
    let mut kv = proxy.kv().await;
    let value: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    kv.put(put("demo", "bin", &value)).await.unwrap();
    assert_eq!(&kv.get(get("demo", "bin")).await.unwrap().into_inner().value[..], &value[..]);
}

#[tokio::test]
async fn ttl_expires_values() {
    let proxy = ProxyConfig::memstore().start();
    let mut kv = proxy.kv().await;
    let mut req = put("demo", "session", b"token");
    req.ttl_seconds = 1;
    kv.put(req).await.unwrap();
    kv.put(put("demo", "forever", b"x")).await.unwrap();
    assert!(kv.get(get("demo", "session")).await.unwrap().into_inner().found);

    let expired = eventually(Duration::from_secs(5), || {
        let mut kv = kv.clone();
        async move { !kv.get(get("demo", "session")).await.unwrap().into_inner().found }
    })
    .await;
    assert!(expired, "value with ttl_seconds=1 still readable after 5s");
    // Expired values leave scans too; others stay.
    let keys: Vec<String> = kv
        .scan(ScanRequest { namespace: "demo".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["forever"]);
}

#[tokio::test]
async fn namespace_default_ttl_applies_to_writes_without_one() {
    let proxy = ProxyConfig::new()
        .plugin("memstore", "command: [prism-plugin-memstore]")
        .namespace_file(
            "cache.yaml",
            "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: cache}\nspec:\n  pattern: keyvalue\n  backend: memstore\n  needs: {ttl: 1s}\n",
        )
        .start();
    let mut kv = proxy.kv().await;
    kv.put(put("cache", "k", b"v")).await.unwrap();
    let expired = eventually(Duration::from_secs(5), || {
        let mut kv = kv.clone();
        async move { !kv.get(get("cache", "k")).await.unwrap().into_inner().found }
    })
    .await;
    assert!(expired, "namespace ttl of 1s not applied");
}

#[tokio::test]
async fn compare_and_set_conflicts_answer_aborted() {
    let proxy = ProxyConfig::memstore().start();
    let mut kv = proxy.kv().await;
    let cas = |key: &str, value: &[u8], v: u64| {
        let mut r = put("demo", key, value);
        r.if_version = Some(v);
        r
    };

    // if_version 0: create only.
    let v1 = kv.put(cas("acct", b"100", 0)).await.unwrap().into_inner().version;
    let err = kv.put(cas("acct", b"999", 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(err.message().contains("version"), "{}", err.message());

    let v2 = kv.put(cas("acct", b"90", v1)).await.unwrap().into_inner().version;
    let stale = kv.put(cas("acct", b"80", v1)).await.unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(&kv.get(get("demo", "acct")).await.unwrap().into_inner().value[..], b"90", "failed CAS changed nothing");

    let err = kv
        .delete(DeleteRequest { namespace: "demo".into(), key: "acct".into(), if_version: Some(v1) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    let ok =
        kv.delete(DeleteRequest { namespace: "demo".into(), key: "acct".into(), if_version: Some(v2) }).await.unwrap();
    assert!(ok.into_inner().deleted);

    // A re-created key never reuses a version, so an old version cannot match.
    let v3 = kv.put(put("demo", "acct", b"new")).await.unwrap().into_inner().version;
    assert!(v3 > v2);
    assert_eq!(kv.put(cas("acct", b"x", v1)).await.unwrap_err().code(), Code::Aborted);
}

#[tokio::test]
async fn concurrent_cas_increments_lose_no_update() {
    let proxy = ProxyConfig::memstore().start();
    let kv = proxy.kv().await;
    kv.clone().put(put("demo", "counter", b"0")).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut kv = kv.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                loop {
                    let cur = kv.get(get("demo", "counter")).await.unwrap().into_inner();
                    let n: u64 = std::str::from_utf8(&cur.value).unwrap().parse().unwrap();
                    let mut req = put("demo", "counter", (n + 1).to_string().as_bytes());
                    req.if_version = Some(cur.version);
                    match kv.put(req).await {
                        Ok(_) => break,
                        Err(e) if e.code() == Code::Aborted => continue,
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let last = kv.clone().get(get("demo", "counter")).await.unwrap().into_inner();
    assert_eq!(std::str::from_utf8(&last.value).unwrap(), "200");
}

#[tokio::test]
async fn scan_pages_in_key_order_and_resumes_across_writes() {
    let proxy = ProxyConfig::memstore().extra("limits: {max_page_size: 50, default_page_size: 20}").start();
    let mut kv = proxy.kv().await;
    let expected: BTreeSet<String> = (0..230).map(|i| format!("item/{i:04}")).collect();
    for chunk in expected.iter().collect::<Vec<_>>().chunks(100) {
        kv.batch_put(BatchPutRequest {
            namespace: "demo".into(),
            items: chunk
                .iter()
                .map(|k| PutItem { key: (*k).clone(), value: b"v".to_vec().into(), ttl_seconds: 0 })
                .collect(),
        })
        .await
        .unwrap();
    }
    kv.put(put("demo", "other", b"x")).await.unwrap();

    // Asking for more than the maximum gets the maximum.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = kv
            .scan(ScanRequest { namespace: "demo".into(), prefix: "item/".into(), page_size: 1000, page_token: token })
            .await
            .unwrap()
            .into_inner();
        assert!(page.items.len() <= 50, "page of {} over max_page_size", page.items.len());
        pages += 1;
        if pages == 2 {
            // Written behind and ahead of the cursor while the scan runs.
            kv.put(put("demo", "item/0000a", b"behind")).await.unwrap();
            kv.put(put("demo", "item/9999", b"ahead")).await.unwrap();
        }
        seen.extend(page.items.into_iter().map(|e| e.key));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 5, "230 keys + 1 at 50 per page");
    let mut want: Vec<String> = expected.into_iter().collect();
    want.push("item/9999".into());
    assert_eq!(seen, want, "every key once, in order; the key written behind the cursor is not revisited");

    // The default page size applies when page_size is 0.
    let page = kv
        .scan(ScanRequest { namespace: "demo".into(), prefix: "item/".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.items.len(), 20);
}

#[tokio::test]
async fn unknown_namespace_is_not_found_by_name() {
    let proxy = ProxyConfig::memstore().start();
    let mut kv = proxy.kv().await;
    let err = kv.get(get("orders", "k")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("\"orders\""), "{}", err.message());
    let err = kv.put(put("", "k", b"v")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn bad_input_is_invalid_argument_with_the_limit() {
    let proxy = ProxyConfig::memstore()
        .extra("limits: {max_key_bytes: 64, max_value_bytes: 1000, max_batch_items: 10}")
        .start();
    let mut kv = proxy.kv().await;
    let cases: Vec<(PutRequest, &str)> = vec![
        (put("demo", "", b"v"), "key must not be empty"),
        (put("demo", &"k".repeat(65), b"v"), "limit of 64 bytes"),
        (put("demo", "k", b""), "value must not be empty"),
        (put("demo", "k", &[0u8; 1001]), "limit of 1000 bytes"),
    ];
    for (req, needle) in cases {
        let err = kv.put(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(needle), "{needle:?} not in {:?}", err.message());
    }
    // Exactly at the limits is fine.
    kv.put(put("demo", &"k".repeat(64), &[7u8; 1000])).await.unwrap();

    let err = kv.get(get("demo", &"k".repeat(65))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = kv
        .batch_get(BatchGetRequest { namespace: "demo".into(), keys: (0..11).map(|i| i.to_string()).collect() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("limit of 10"), "{}", err.message());

    let err = kv
        .batch_put(BatchPutRequest {
            namespace: "demo".into(),
            items: vec![
                PutItem { key: "ok".into(), value: b"v".to_vec().into(), ttl_seconds: 0 },
                PutItem { key: "bad".into(), value: vec![0; 1001].into(), ttl_seconds: 0 },
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("items[1]"), "{}", err.message());
    assert!(!kv.get(get("demo", "ok")).await.unwrap().into_inner().found, "nothing of a rejected batch is written");

    for token in ["not-a-token", "%%%", &"A".repeat(20_000)] {
        let err = kv
            .scan(ScanRequest { namespace: "demo".into(), page_token: token.into(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{token}");
    }
}

#[tokio::test]
async fn page_tokens_do_not_cross_scans() {
    let proxy = ProxyConfig::memstore().keyvalue("other", "memstore").start();
    let mut kv = proxy.kv().await;
    for i in 0..5 {
        kv.put(put("demo", &format!("a/{i}"), b"v")).await.unwrap();
    }
    let page = kv
        .scan(ScanRequest { namespace: "demo".into(), prefix: "a/".into(), page_size: 2, page_token: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert!(!page.next_page_token.is_empty());
    let err = kv
        .scan(ScanRequest {
            namespace: "other".into(),
            prefix: "a/".into(),
            page_size: 2,
            page_token: page.next_page_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = kv
        .scan(ScanRequest {
            namespace: "demo".into(),
            prefix: "b/".into(),
            page_size: 2,
            page_token: page.next_page_token,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn namespaces_on_one_plugin_are_isolated() {
    let proxy = ProxyConfig::memstore().keyvalue("other", "memstore").start();
    let mut kv = proxy.kv().await;
    kv.put(put("demo", "shared-key", b"demo")).await.unwrap();
    kv.put(put("other", "shared-key", b"other")).await.unwrap();
    kv.put(put("other", "only-other", b"x")).await.unwrap();
    assert_eq!(&kv.get(get("demo", "shared-key")).await.unwrap().into_inner().value[..], b"demo");
    assert_eq!(&kv.get(get("other", "shared-key")).await.unwrap().into_inner().value[..], b"other");
    let keys: Vec<_> = kv
        .scan(ScanRequest { namespace: "demo".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["shared-key"]);
}

#[tokio::test]
async fn request_ids_are_echoed_or_assigned() {
    let proxy = ProxyConfig::memstore().start();
    let mut kv = proxy.kv().await;
    let mut req = tonic::Request::new(get("demo", "k"));
    req.metadata_mut().insert("x-request-id", "test-req-42".parse().unwrap());
    let resp = kv.get(req).await.unwrap();
    assert_eq!(resp.metadata().get("x-request-id").unwrap(), "test-req-42");
    let resp = kv.get(get("demo", "k")).await.unwrap();
    assert_eq!(resp.metadata().get("x-request-id").unwrap().len(), 36, "a generated UUID");
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let proxy = ProxyConfig::memstore().start();
    let channel = proxy.channel().await;

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest { service: "prism.keyvalue.v1.KeyValueService".into() })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = stream.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else { panic!("{response:?}") };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"prism.keyvalue.v1.KeyValueService".to_owned()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_owned()), "{names:?}");
    // Only what a client can call: the plugin protocol is not listed.
    assert!(!names.iter().any(|n| n.starts_with("prism.plugin.")), "{names:?}");
    // Health knows every listed service.
    for name in &names {
        let request = tonic_health::pb::HealthCheckRequest { service: name.clone() };
        let status = health.check(request).await.unwrap_or_else(|e| panic!("{name}: {e:?}")).into_inner().status;
        assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{name}");
    }
    // Watch of an unknown service: one SERVICE_UNKNOWN, the call stays open
    // (the health protocol), not NOT_FOUND.
    let request = tonic_health::pb::HealthCheckRequest { service: "no.such.Service".into() };
    let mut watch = health.watch(request).await.unwrap().into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, tonic_health::pb::health_check_response::ServingStatus::ServiceUnknown as i32);
    assert!(tokio::time::timeout(Duration::from_millis(300), watch.next()).await.is_err(), "the call stays open");
}

/// The proxy sends calls to plugins multiplexed on a stream (ADR-007) or as
/// unary calls; both must answer alike, errors included, and concurrent
/// multiplexed calls must each get their own reply.
#[tokio::test]
async fn multiplexed_and_unary_transports_answer_alike() {
    for transport in ["multiplex", "unary"] {
        let proxy = ProxyConfig::new()
            .plugin("memstore", &format!("command: [prism-plugin-memstore]\npool_size: 2\ntransport: {transport}"))
            .keyvalue("demo", "memstore")
            .start();
        let kv = proxy.kv().await;

        let mut calls = tokio::task::JoinSet::new();
        for i in 0..200u32 {
            let mut kv = kv.clone();
            calls.spawn(async move {
                let key = format!("k/{i}");
                let value = i.to_be_bytes();
                let version = kv.put(put("demo", &key, &value)).await.unwrap().into_inner().version;
                let got = kv.get(get("demo", &key)).await.unwrap().into_inner();
                assert_eq!(&got.value[..], &value[..], "{transport}: {key} got another call's reply");
                assert_eq!(got.version, version);
            });
        }
        while let Some(done) = calls.join_next().await {
            done.unwrap();
        }

        let mut kv = kv.clone();
        let v = kv.put(put("demo", "cas", b"a")).await.unwrap().into_inner().version;
        let conflict = kv.put(PutRequest { if_version: Some(v + 100), ..put("demo", "cas", b"b") }).await.unwrap_err();
        assert_eq!(conflict.code(), Code::Aborted, "{transport}: {conflict:?}");
        let scanned = kv
            .scan(ScanRequest { namespace: "demo".into(), prefix: "k/1".into(), page_size: 5, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(scanned.items.len(), 5, "{transport}");
        assert!(!scanned.next_page_token.is_empty(), "{transport}");
    }
}

/// Sends `body` as the raw request message of `path` (no protobuf
/// encoding: the bytes go on the wire as they are).
async fn raw_call(proxy: &prism_tests::Proxy, path: &'static str, body: Vec<u8>) -> tonic::Status {
    use bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    struct Raw;
    struct RawEncoder;
    struct RawDecoder;
    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for RawDecoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            let bytes = src.copy_to_bytes(src.remaining());
            Ok(Some(bytes.to_vec()))
        }
    }
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }
    let mut grpc = tonic::client::Grpc::new(proxy.channel().await).max_encoding_message_size(usize::MAX);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(body), path, Raw).await.unwrap_err()
}

#[tokio::test]
async fn requests_that_do_not_decode_or_are_too_large_say_so() {
    let proxy = ProxyConfig::memstore().extra("limits:\n  max_message_bytes: 2000000\n").start();
    const PUT: &str = "/prism.keyvalue.v1.KeyValueService/Put";
    // Garbage: a field header promising more bytes than there are.
    let garbage = raw_call(&proxy, PUT, vec![0x0a, 0xff, 0x01, 0x02]).await;
    assert_eq!(garbage.code(), Code::InvalidArgument, "{garbage:?}");
    assert!(garbage.message().contains("prism.keyvalue.v1.KeyValueService/Put"), "{}", garbage.message());
    // Invalid UTF-8 in the string field `key` (2).
    let mut bad_utf8 = vec![0x0a, 0x04];
    bad_utf8.extend_from_slice(b"demo");
    bad_utf8.extend_from_slice(&[0x12, 0x02, 0xc3, 0x28]);
    let status = raw_call(&proxy, PUT, bad_utf8).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("UTF-8"), "{}", status.message());
    // Over the message limit: RESOURCE_EXHAUSTED naming it, as the gRPC
    // spec says, not the library's OUT_OF_RANGE.
    let status = raw_call(&proxy, PUT, vec![0; 2_000_001]).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("limits.max_message_bytes") && status.message().contains("2000000"),
        "{}",
        status.message()
    );
    // The Admin API decodes at the same limit, not a fixed 4 MiB.
    const APPLY: &str = "/prism.admin.v1.AdminService/ApplyNamespace";
    let status = raw_call(&proxy, APPLY, vec![0; 2_000_001]).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let status = raw_call(&proxy, APPLY, vec![0x0a, 0xff]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}
