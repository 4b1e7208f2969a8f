//! A KeyValue client: Put, Get and Scan against a running proxy.
//!
//! The client of `docs-cms/guides/clients.md`. It only needs `prism-proto`
//! (the generated client), tonic and tokio. Start the proxy of the quick start
//! (it serves the `demo` namespace on 127.0.0.1:8980), then:
//!
//!     cargo run -p prism-proto --example keyvalue_client -- http://127.0.0.1:8980 demo

use prism_proto::keyvalue::v1::key_value_service_client::KeyValueServiceClient;
use prism_proto::keyvalue::v1::{GetRequest, PutRequest, ScanRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "http://127.0.0.1:8980".to_owned());
    let namespace = args.next().unwrap_or_else(|| "demo".to_owned());

    let mut kv = KeyValueServiceClient::connect(addr).await?;

    // Put answers the version it created; versions grow with every write.
    for (key, value) in [("user/1", "alice"), ("user/2", "bob")] {
        let put = kv
            .put(PutRequest {
                namespace: namespace.clone(),
                key: key.to_owned(),
                value: value.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        println!("put {key} = {value} (version {})", put.version);
    }

    let got = kv.get(GetRequest { namespace: namespace.clone(), key: "user/1".to_owned() }).await?.into_inner();
    if got.found {
        println!("get user/1 = {} (version {})", String::from_utf8_lossy(&got.value), got.version);
    } else {
        println!("get user/1: not found");
    }

    // Scan pages through the keys under a prefix; an empty token ends it.
    let mut page_token = String::new();
    loop {
        let page = kv
            .scan(ScanRequest { namespace: namespace.clone(), prefix: "user/".to_owned(), page_size: 100, page_token })
            .await?
            .into_inner();
        for entry in &page.items {
            println!("scan {} = {} (version {})", entry.key, String::from_utf8_lossy(&entry.value), entry.version);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(())
}
