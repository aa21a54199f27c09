//! `hanul-local web publish` against moto's S3: every file of the client
//! lands in the web bucket with its content type and cache lifetime, the
//! settings name the stack's Cognito client and socket, and bad settings
//! are refused before anything is uploaded.

use hanul_local::web::publish::{StackSettings, WebCommand, run};
use hanul_local::web::{FILES, IMMUTABLE, REVALIDATE, WebClient};

fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL: the publish test needs a moto server (run `make test`)")
}

fn settings(socket_url: &str) -> StackSettings {
    StackSettings {
        cognito_client_id: "4example0client0id".into(),
        region: "us-east-1".into(),
        socket_url: socket_url.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_is_published_as_a_static_host_serves_it() {
    let config = hanul_shared::aws::endpoint_config(&endpoint()).await;
    let s3 = hanul_shared::aws::S3MediaStore::new(&config, "unused");
    let s3 = s3.client();
    let bucket = format!("web-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    s3.create_bucket().bucket(&bucket).send().await.unwrap();

    // Bad settings upload nothing.
    let refused = run(WebCommand::Publish {
        bucket: bucket.clone(),
        stack: settings("https://not-a-socket.example"),
        distribution_id: None,
    })
    .await;
    assert!(refused.unwrap_err().contains("wss://"));
    let listed = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    assert_eq!(listed.key_count(), Some(0));

    let done = run(WebCommand::Publish {
        bucket: bucket.clone(),
        stack: settings("wss://abc123.execute-api.us-east-1.amazonaws.com/v1"),
        distribution_id: None,
    })
    .await
    .unwrap();
    let client = WebClient::new();
    assert!(done.contains(&client.version), "{done}");

    let listed = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    assert_eq!(listed.key_count(), Some(FILES.len() as i32 + 2));
    let get = |key: String| {
        let s3 = s3.clone();
        let bucket = bucket.clone();
        async move {
            s3.get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap()
        }
    };
    let main = get(format!("app/{}/js/main.js", client.version)).await;
    assert_eq!(main.content_type(), Some("text/javascript; charset=utf-8"));
    assert_eq!(main.cache_control(), Some(IMMUTABLE));
    let body = main.body.collect().await.unwrap().into_bytes();
    let (_, source) = FILES.iter().find(|(p, _)| *p == "js/main.js").unwrap();
    assert_eq!(body.as_ref(), *source);

    let index = get("app/index.html".into()).await;
    assert_eq!(index.content_type(), Some("text/html; charset=utf-8"));
    assert_eq!(index.cache_control(), Some(REVALIDATE));
    let html = String::from_utf8(index.body.collect().await.unwrap().to_vec()).unwrap();
    assert!(html.contains(&format!("/app/{}/js/main.js", client.version)));

    let config = get("app/config.json".into()).await;
    assert_eq!(config.cache_control(), Some(REVALIDATE));
    let config: serde_json::Value =
        serde_json::from_slice(&config.body.collect().await.unwrap().to_vec()).unwrap();
    assert_eq!(config["auth"]["kind"], "cognito");
    assert_eq!(config["auth"]["clientId"], "4example0client0id");
    assert_eq!(
        config["socketUrl"],
        "wss://abc123.execute-api.us-east-1.amazonaws.com/v1"
    );
}

#[tokio::test]
async fn build_writes_the_same_files_to_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let done = run(WebCommand::Build {
        out: dir.path().to_owned(),
        stack: settings("wss://abc123.execute-api.us-east-1.amazonaws.com/v1"),
    })
    .await
    .unwrap();
    assert!(done.contains("wrote"), "{done}");
    let client = WebClient::new();
    for (path, bytes) in FILES {
        let written =
            std::fs::read(dir.path().join(format!("app/{}/{path}", client.version))).unwrap();
        assert_eq!(written.as_slice(), *bytes, "{path}");
    }
    let index = std::fs::read_to_string(dir.path().join("app/index.html")).unwrap();
    assert_eq!(index, client.index());
}
