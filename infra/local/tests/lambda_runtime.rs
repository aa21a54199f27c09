//! Every function of template.yaml, run as Lambda runs it: the `hanul-lambda`
//! binary that `sam build` ships, started with the environment the template
//! gives that function (and nothing else from this process but credentials
//! and the endpoint), fed its sample event from `tests/events/` through the
//! Runtime API, against moto (`AWS_ENDPOINT_URL`; `make test` starts one).
//! A function with no sample event, or no expectation here, fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use hanul_local::lambda::{Launch, LaunchError, Outcome, Stack, Template};
use hanul_shared::aws::DynamoTable;
use hanul_shared::ports::SystemClock;
use hanul_shared::shortener::{CreateLink, RedirectKind, ShortenerConfig, ShortenerService};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The binary nextest built beside this test (`<target>/debug/hanul-lambda`),
/// wherever `CARGO_TARGET_DIR` put it; `HANUL_LAMBDA_BIN` overrides.
fn binary() -> PathBuf {
    if let Ok(bin) = std::env::var("HANUL_LAMBDA_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable");
    // <target>/debug/deps/lambda_runtime-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a target/<profile>/deps path");
    let bin = profile_dir.join("hanul-lambda");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p hanul-functions --bin hanul-lambda`",
        bin.display()
    );
    bin
}

/// What a function must answer for its sample event.
enum Expect {
    /// An HTTP function: the status, and a check of the decoded response.
    Http(u16, fn(&Response) -> Result<(), String>),
    /// A queue worker: the message ids it reports as failed.
    Batch(&'static [&'static str]),
    /// A periodic function: a clean, empty result.
    Clean,
}

struct Response {
    headers: Value,
    body: Vec<u8>,
    json: Value,
}

fn check(cond: bool, what: &str, r: &Response) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(format!(
            "{what}; body: {}",
            String::from_utf8_lossy(&r.body)
        ))
    }
}

/// In the order they run: the link functions before the one that deletes it.
fn expectations() -> Vec<(&'static str, Expect)> {
    use Expect::*;
    vec![
        (
            "health",
            Http(200, |r| check(r.json["status"] == "ok", "status ok", r)),
        ),
        (
            "ids-generate",
            Http(200, |r| {
                check(
                    r.json["ids"].as_array().map(Vec::len) == Some(3),
                    "3 ids",
                    r,
                )
            }),
        ),
        (
            "ids-decode",
            Http(200, |r| {
                check(r.json["machineId"] == 361, "the decoded machine id", r)
            }),
        ),
        (
            "shorten",
            Http(201, |r| {
                check(
                    r.json["shortUrl"]
                        .as_str()
                        .is_some_and(|u| u.starts_with("https://hnl.example/")),
                    "a short URL on the configured domain",
                    r,
                )
            }),
        ),
        (
            "shorten-batch",
            Http(200, |r| {
                check(
                    r.json["results"][0]["status"] == 201
                        && r.json["results"][1]["error"]["code"] == "invalid_url",
                    "one made, one refused",
                    r,
                )
            }),
        ),
        (
            "redirect",
            Http(302, |r| {
                check(
                    r.headers["location"] == "https://example.com/docs",
                    "Location",
                    r,
                )
            }),
        ),
        (
            "urls-get",
            Http(200, |r| {
                check(r.json["code"] == "docs-link", "the owner's link", r)
            }),
        ),
        (
            "urls-list",
            Http(200, |r| {
                check(
                    r.json["links"][0]["code"] == "docs-link",
                    "the owner's links",
                    r,
                )
            }),
        ),
        (
            "urls-qr",
            Http(200, |r| check(r.body.starts_with(b"\x89PNG"), "a PNG", r)),
        ),
        (
            "urls-update",
            Http(200, |r| {
                check(
                    r.json["longUrl"] == "https://example.com/docs/v2" && r.json["cdn"] == "queued",
                    "updated, purge queued",
                    r,
                )
            }),
        ),
        (
            "urls-delete",
            Http(200, |r| check(r.json["deleted"] == true, "deleted", r)),
        ),
        ("shortener-clicks", Batch(&["m3"])),
        ("cdn-invalidate", Batch(&["m2"])),
        (
            "ratelimit-check",
            Http(200, |r| {
                // A cold instance's first store call may outlast the 50 ms
                // budget on a loaded machine; the fallback then decides.
                check(
                    r.json["allowed"] == true
                        && r.json["rule"] == "shorten-per-ip"
                        && (r.json["source"] == "store" || r.json["source"] == "fallback"),
                    "admitted",
                    r,
                )
            }),
        ),
        (
            "devices-put",
            Http(201, |r| {
                check(r.json["platform"] == "android", "the device", r)
            }),
        ),
        (
            "devices-list",
            Http(200, |r| check(r.json["devices"].is_array(), "a list", r)),
        ),
        (
            "devices-delete",
            Http(404, |r| {
                check(
                    r.json["error"]["code"] == "device_not_found",
                    "unknown device",
                    r,
                )
            }),
        ),
        (
            "settings-get",
            Http(200, |r| {
                check(r.json["channels"].is_object(), "channels", r)
            }),
        ),
        (
            "settings-put",
            Http(200, |r| {
                check(r.json["quietHours"]["timeZone"] == "Asia/Seoul", "saved", r)
            }),
        ),
        (
            "notifications-send",
            Http(202, |r| {
                check(
                    r.json["notificationId"].as_str().map(str::len) == Some(32),
                    "accepted",
                    r,
                )
            }),
        ),
        (
            "notifications-status",
            Http(404, |r| {
                check(
                    r.json["error"]["code"] == "notification_not_found",
                    "unknown id",
                    r,
                )
            }),
        ),
        ("notify-push-ios", Batch(&["m2"])),
        ("notify-push-android", Batch(&[])),
        ("notify-sms", Batch(&[])),
        ("notify-email", Batch(&[])),
        ("notify-scheduler", Clean),
        (
            "profile-put",
            Http(200, |r| {
                check(r.json["displayName"] == "Nina Park", "saved", r)
            }),
        ),
        (
            "profile-get",
            Http(200, |r| {
                check(r.json["displayName"] == "Nina Park", "the saved profile", r)
            }),
        ),
        (
            "follow-put",
            Http(200, |r| {
                check(
                    r.json["following"] == true && r.json["created"] == true,
                    "followed",
                    r,
                )
            }),
        ),
        (
            "following-list",
            Http(200, |r| {
                check(
                    r.json["users"][0]["userId"] == "omar",
                    "the followed account",
                    r,
                )
            }),
        ),
        (
            "followers-list",
            Http(200, |r| {
                check(
                    r.json["users"].as_array().is_some_and(Vec::is_empty),
                    "no followers",
                    r,
                )
            }),
        ),
        (
            "friends-list",
            Http(200, |r| {
                check(
                    r.json["users"].as_array().is_some_and(Vec::is_empty),
                    "no friends",
                    r,
                )
            }),
        ),
        (
            "follow-delete",
            Http(200, |r| check(r.json["removed"] == true, "unfollowed", r)),
        ),
        (
            "blocks-put",
            Http(200, |r| check(r.json["blocked"] == true, "blocked", r)),
        ),
        (
            "blocks-delete",
            Http(200, |r| check(r.json["removed"] == true, "unblocked", r)),
        ),
        (
            "posts-create",
            Http(201, |r| {
                check(
                    r.json["id"]
                        .as_str()
                        .is_some_and(|id| id.parse::<u64>().is_ok())
                        && r.json["authorId"] == "nina",
                    "a Snowflake id",
                    r,
                )
            }),
        ),
        (
            "user-posts",
            Http(200, |r| {
                check(
                    r.json["posts"][0]["authorId"] == "nina",
                    "the author's post",
                    r,
                )
            }),
        ),
        (
            "feed-read",
            Http(200, |r| {
                check(
                    r.json["posts"][0]["authorId"] == "nina",
                    "the author sees their own post",
                    r,
                )
            }),
        ),
        (
            "users-get",
            Http(200, |r| {
                check(
                    r.json["userId"] == "nina" && r.json["posts"] == 1,
                    "the profile with counts",
                    r,
                )
            }),
        ),
        (
            "posts-get",
            Http(404, |r| {
                check(
                    r.json["error"]["code"] == "post_not_found",
                    "unknown post",
                    r,
                )
            }),
        ),
        (
            "posts-delete",
            Http(404, |r| {
                check(
                    r.json["error"]["code"] == "post_not_found",
                    "unknown post",
                    r,
                )
            }),
        ),
        ("feed-fanout", Batch(&["m2"])),
        (
            "media-create",
            Http(201, |r| {
                check(
                    r.json["mediaId"]
                        .as_str()
                        .is_some_and(|id| id.starts_with('m'))
                        && r.json["method"] == "PUT"
                        && r.json["headers"]["content-length"] == "68"
                        && r.json["uploadUrl"]
                            .as_str()
                            .is_some_and(|u| u.contains("/uploads/nina/")),
                    "a presigned PUT under the caller's prefix",
                    r,
                )
            }),
        ),
        ("media-get", Http(404, |r| code(r, "not_found"))),
        // Nobody's upload: nothing to complete.
        ("media-complete", Http(404, |r| code(r, "not_found"))),
        // An upload nobody asked for: deleted, and the message is done.
        ("media-process", Batch(&[])),
        ("feed-outbox", Clean),
        // Chat: nina's 1:1 with omar (its id is fixed by the pair), then
        // what the other functions do with it.
        (
            "conversations-create",
            Http(201, |r| {
                check(
                    r.json["id"] == CHAT_DIRECT && r.json["kind"] == "direct",
                    "the pair's 1:1",
                    r,
                )
            }),
        ),
        (
            "messages-send",
            Http(201, |r| {
                check(
                    r.json["created"] == true && r.json["message"]["senderId"] == "nina",
                    "a new message",
                    r,
                )
            }),
        ),
        (
            "messages-list",
            Http(200, |r| {
                check(
                    r.json["messages"].as_array().map(Vec::len) == Some(1),
                    "the message just sent",
                    r,
                )
            }),
        ),
        (
            "conversations-list",
            Http(200, |r| {
                check(
                    r.json["conversations"][0]["id"] == CHAT_DIRECT
                        && r.json["conversations"][0]["unreadCount"] == 0,
                    "the 1:1, read by its sender",
                    r,
                )
            }),
        ),
        (
            "conversation-get",
            Http(200, |r| {
                check(
                    r.json["members"].as_array().map(Vec::len) == Some(2),
                    "both members",
                    r,
                )
            }),
        ),
        (
            "conversation-update",
            Http(400, |r| code(r, "direct_conversation")),
        ),
        ("members-add", Http(400, |r| code(r, "direct_conversation"))),
        (
            "members-remove",
            Http(400, |r| code(r, "direct_conversation")),
        ),
        ("messages-edit", Http(404, |r| code(r, "message_not_found"))),
        (
            "messages-delete",
            Http(404, |r| code(r, "message_not_found")),
        ),
        ("read-put", Http(404, |r| code(r, "message_not_found"))),
        (
            "mute-put",
            Http(200, |r| check(r.json["muted"] == true, "muted", r)),
        ),
        (
            "chat-deliver",
            // The second record is no job: it fails, and (a FIFO batch)
            // nothing after it runs.
            Batch(&["m2", "m3"]),
        ),
        (
            "sync-read",
            Http(200, |r| {
                check(
                    r.json["events"]
                        .as_array()
                        .is_some_and(|e| e.iter().any(|e| e["kind"] == "message")),
                    "the delivered message in nina's stream",
                    r,
                )
            }),
        ),
        (
            "presence-get",
            Http(200, |r| check(r.json["status"] == "offline", "offline", r)),
        ),
        ("chat-connect", Http(401, |r| code(r, "unauthorized"))),
        ("chat-disconnect", Http(200, |_| Ok(()))),
        // A connection the table does not know: told to reconnect (the
        // frame goes through moto's management API).
        ("chat-default", Http(410, |_| Ok(()))),
        ("chat-send", Http(410, |_| Ok(()))),
        ("chat-sync", Http(410, |_| Ok(()))),
        ("chat-heartbeat", Http(410, |_| Ok(()))),
        ("chat-typing", Http(410, |_| Ok(()))),
        ("chat-read", Http(410, |_| Ok(()))),
        ("chat-sweep", Clean),
    ]
}

/// `direct_id("nina", "omar")`: the chat sample events' conversation.
const CHAT_DIRECT: &str = "d4605d0f59593188ca35f7e2e76699c76";

fn code(r: &Response, expected: &str) -> Result<(), String> {
    check(r.json["error"]["code"] == expected, expected, r)
}

fn event(handler: &str) -> Vec<u8> {
    let path = root().join(format!("tests/events/{handler}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn decode_http(payload: &[u8]) -> Result<(u16, Response), String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| {
        format!(
            "not an API Gateway v2 response ({e}): {}",
            String::from_utf8_lossy(payload)
        )
    })?;
    let status = v["statusCode"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| format!("no statusCode in {v}"))?;
    let text = v["body"].as_str().unwrap_or("");
    let body = if v["isBase64Encoded"] == true {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("body is not base64: {e}"))?
    } else {
        text.as_bytes().to_vec()
    };
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok((
        status,
        Response {
            headers: v["headers"].clone(),
            body,
            json,
        },
    ))
}

async fn moto() -> aws_config::SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect(
        "AWS_ENDPOINT_URL is not set: this test runs the functions against moto (run `make test`)",
    );
    hanul_shared::aws::endpoint_config(&endpoint).await
}

/// A fresh stack on moto, with the parameters a deploy would be given.
async fn stack(template: &Template) -> (Stack, String) {
    hanul_local::lambda::dev_stack(template, &moto().await, BTreeMap::new())
        .await
        .expect("the template's resources on moto")
}

/// The link the sample events name: `docs-link`, owned by `nina`.
async fn seed(prefix: &str) {
    let config = moto().await;
    let clock = Arc::new(SystemClock);
    let table = Arc::new(DynamoTable::new(
        aws_sdk_dynamodb::Client::new(&config),
        format!("{prefix}UrlsTable"),
        clock.clone(),
    ));
    let settings = BTreeMap::from([
        ("SHORT_BASE_URL", "https://hnl.example"),
        (
            "SHORTENER_CODE_KEY",
            "a-development-code-key-of-at-least-32-characters",
        ),
    ]);
    let config = ShortenerConfig::from_settings(|n| settings.get(n).map(|v| (*v).to_owned()))
        .expect("shortener config");
    let shortener = ShortenerService::new(table, clock, config);
    let docs = CreateLink {
        long_url: "https://example.com/docs".into(),
        alias: Some("docs-link".into()),
        redirect: Some(RedirectKind::Temporary),
        ..CreateLink::default()
    };
    shortener
        .create(docs, Some("nina"))
        .await
        .expect("seed docs-link");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_answers_its_sample_event_through_the_runtime_api() {
    let template = Template::load(&root().join("template.yaml")).expect("template.yaml");
    let functions = template.functions().expect("functions");
    let expectations = expectations();
    let handlers: BTreeSet<&str> = functions.iter().map(|f| f.handler.as_str()).collect();
    let expected: BTreeSet<&str> = expectations.iter().map(|(h, _)| *h).collect();
    assert_eq!(
        handlers, expected,
        "every function in template.yaml needs an expectation here, and only those"
    );
    let (stack, prefix) = stack(&template).await;
    seed(&prefix).await;
    let binary = binary();
    let mut failures = Vec::new();
    for (handler, expect) in &expectations {
        let function = functions
            .iter()
            .find(|f| f.handler == *handler)
            .expect("checked above");
        let launch = Launch::new(&binary, function, &stack).expect("environment resolves");
        let result = launch.cold_invoke(event(handler).into()).await;
        let verdict = match result {
            Err(e) => Err(format!("{e}")),
            Ok(cold) => {
                if !cold.extensions.iter().any(|e| e == "hanul-shutdown") {
                    failures.push(format!("{handler}: registered no shutdown extension"));
                }
                if !cold.clean_shutdown {
                    failures.push(format!(
                        "{handler}: did not exit within 500 ms of SIGTERM\n{}",
                        cold.output
                    ));
                }
                match (&cold.first.outcome, expect) {
                    (
                        Outcome::Error {
                            error_type,
                            message,
                        },
                        _,
                    ) => Err(format!(
                        "invocation error {error_type}: {message}\n{}",
                        cold.output
                    )),
                    (Outcome::Response(payload), Expect::Http(status, check)) => {
                        decode_http(payload).and_then(|(got, response)| {
                            if got != *status {
                                return Err(format!(
                                    "status {got}, want {status}; body: {}",
                                    String::from_utf8_lossy(&response.body)
                                ));
                            }
                            check(&response)
                        })
                    }
                    (Outcome::Response(payload), Expect::Batch(want)) => {
                        let v: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
                        let got: Vec<&str> = v["batchItemFailures"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|f| f["itemIdentifier"].as_str())
                                    .collect()
                            })
                            .unwrap_or_default();
                        if v["batchItemFailures"].is_array() && got == *want {
                            Ok(())
                        } else {
                            Err(format!(
                                "batch answer {v}, want failures {want:?}\n{}",
                                cold.output
                            ))
                        }
                    }
                    (Outcome::Response(payload), Expect::Clean) => {
                        if payload.as_ref() == b"null" {
                            Ok(())
                        } else {
                            Err(format!(
                                "answer {}, want null",
                                String::from_utf8_lossy(payload)
                            ))
                        }
                    }
                }
            }
        };
        if let Err(e) = verdict {
            failures.push(format!("{handler}: {e}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variable_missing_from_the_environment_is_an_init_error() {
    let template = Template::load(&root().join("template.yaml")).expect("template.yaml");
    let functions = template.functions().expect("functions");
    let (stack, _) = stack(&template).await;
    let shorten = functions
        .iter()
        .find(|f| f.handler == "shorten")
        .expect("the shorten function");
    let mut launch = Launch::new(&binary(), shorten, &stack).expect("environment resolves");
    assert!(launch.environment.remove("URLS_TABLE").is_some());
    match launch.cold_invoke(event("shorten").into()).await {
        Err(LaunchError::Init { failure, .. }) => {
            let text = failure.to_string();
            assert!(
                text.contains("Runtime.ConfigError") && text.contains("URLS_TABLE is not set"),
                "{text}"
            );
        }
        other => panic!("want an init error naming URLS_TABLE, got {other:?}"),
    }
    // And a Handler that names no function.
    let mut unknown = Launch::new(&binary(), shorten, &stack).expect("environment resolves");
    unknown.function.handler = "no-such-function".into();
    match unknown.cold_invoke(event("shorten").into()).await {
        Err(LaunchError::Init { failure, .. }) => {
            assert!(
                failure.to_string().contains("no-such-function"),
                "{failure}"
            );
        }
        other => panic!("want an init error naming the handler, got {other:?}"),
    }
}
