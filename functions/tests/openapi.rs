//! Each OpenAPI description lists exactly its subsystem's routes, with the
//! same methods and auth as the route table, and every `$ref` in it points
//! at something the file defines.

use std::collections::BTreeSet;

use hanul_functions::{Auth, FUNCTIONS};
use serde_yaml_ng::Value;

/// One OpenAPI file and the functions whose routes it describes.
struct Described {
    file: &'static str,
    text: &'static str,
    functions: &'static [&'static str],
}

const SHORTENER: Described = Described {
    file: "shortener.openapi.yaml",
    text: include_str!("../src/shortener.openapi.yaml"),
    functions: &[
        "shorten",
        "shorten-batch",
        "redirect",
        "urls-get",
        "urls-list",
        "urls-update",
        "urls-delete",
        "urls-qr",
    ],
};

const FEED: Described = Described {
    file: "feed.openapi.yaml",
    text: include_str!("../src/feed.openapi.yaml"),
    functions: &[
        "follow-put",
        "follow-delete",
        "following-list",
        "followers-list",
        "friends-list",
        "profile-get",
        "profile-put",
        "users-get",
        "posts-create",
        "posts-get",
        "posts-delete",
        "user-posts",
        "blocks-put",
        "blocks-delete",
        "feed-read",
    ],
};

const CHAT: Described = Described {
    file: "chat.openapi.yaml",
    text: include_str!("../src/chat.openapi.yaml"),
    functions: &[
        "conversations-create",
        "conversations-list",
        "conversation-get",
        "conversation-update",
        "members-add",
        "members-remove",
        "messages-list",
        "messages-send",
        "messages-edit",
        "messages-delete",
        "read-put",
        "mute-put",
        "sync-read",
        "presence-get",
    ],
};

fn spec(described: &Described) -> Value {
    serde_yaml_ng::from_str(described.text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", described.file))
}

/// `jwt`, `optional` or `none`, as a security requirement list says.
fn auth_of(security: &Value) -> &'static str {
    let bearer_only = security
        .as_sequence()
        .is_some_and(|s| s.len() == 1 && s[0].get("bearer").is_some());
    let anonymous_too = security.as_sequence().is_some_and(|s| {
        s.iter()
            .any(|r| r.as_mapping().is_some_and(|m| m.is_empty()))
    });
    match (bearer_only, anonymous_too) {
        (true, _) => "jwt",
        (false, true) => "optional",
        _ => "none",
    }
}

type Routes = BTreeSet<(String, String, &'static str)>;

/// (method, path, auth) of every operation; an operation without its own
/// `security` has the document's.
fn documented(described: &Described, spec: &Value) -> Routes {
    let mut documented = BTreeSet::new();
    for (path, item) in spec["paths"].as_mapping().expect("paths") {
        for (method, op) in item.as_mapping().expect("path item") {
            let method = method.as_str().unwrap_or_default();
            if method == "parameters" {
                continue;
            }
            let security = match op.get("security") {
                Some(own) => own,
                None => &spec["security"],
            };
            assert!(
                op["responses"].as_mapping().is_some_and(|r| !r.is_empty()),
                "{}: {method} {path:?} has no responses",
                described.file
            );
            documented.insert((
                method.to_uppercase(),
                path.as_str().unwrap_or_default().to_owned(),
                auth_of(security),
            ));
        }
    }
    documented
}

fn routed(described: &Described) -> Routes {
    for name in described.functions {
        assert!(
            FUNCTIONS.iter().any(|f| f.name == *name),
            "{}: no function {name:?} in the route table",
            described.file
        );
    }
    FUNCTIONS
        .iter()
        .filter(|f| described.functions.contains(&f.name))
        .flat_map(|f| f.routes.iter())
        .map(|r| {
            let auth = match r.auth {
                Auth::Jwt => "jwt",
                Auth::Optional => "optional",
                Auth::None => "none",
            };
            (r.method.to_string(), r.path.to_owned(), auth)
        })
        .collect()
}

/// Every local `$ref` ("#/a/b/c") in `node`, found in `spec`.
fn check_refs(file: &str, spec: &Value, node: &Value) {
    match node {
        Value::Mapping(m) => {
            for (k, v) in m {
                if k.as_str() == Some("$ref") {
                    let target = v.as_str().unwrap_or_default();
                    let pointer = target
                        .strip_prefix("#/")
                        .unwrap_or_else(|| panic!("{file}: a $ref outside the file: {target:?}"));
                    let found = pointer.split('/').try_fold(spec, |at, part| at.get(part));
                    assert!(found.is_some(), "{file}: $ref {target:?} points at nothing");
                } else {
                    check_refs(file, spec, v);
                }
            }
        }
        Value::Sequence(s) => s.iter().for_each(|v| check_refs(file, spec, v)),
        _ => {}
    }
}

fn check(described: &Described) {
    let spec = spec(described);
    assert_eq!(
        spec["openapi"].as_str(),
        Some("3.1.0"),
        "{}",
        described.file
    );
    check_refs(described.file, &spec, &spec);
    assert_eq!(
        documented(described, &spec),
        routed(described),
        "{}: the documented routes (left) differ from the route table's (right)",
        described.file
    );
}

#[test]
fn the_shortener_openapi_file_describes_its_routes() {
    check(&SHORTENER);
}

#[test]
fn the_feed_openapi_file_describes_its_routes() {
    check(&FEED);
    // Every feed route needs the caller's token.
    assert!(routed(&FEED).iter().all(|(_, _, auth)| *auth == "jwt"));
}

#[test]
fn the_chat_openapi_file_describes_its_routes() {
    check(&CHAT);
    // Every chat HTTP route needs the caller's token (the WebSocket routes
    // are not HTTP routes and have no OpenAPI description).
    assert!(routed(&CHAT).iter().all(|(_, _, auth)| *auth == "jwt"));
}

#[test]
fn no_function_is_described_twice() {
    let mut seen = BTreeSet::new();
    for described in [&SHORTENER, &FEED, &CHAT] {
        for name in described.functions {
            assert!(seen.insert(*name), "{name} is in two OpenAPI files");
        }
    }
}
