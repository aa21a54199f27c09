//! The route table in code and the routes in template.yaml are the same set
//! (DESIGN rule 4): same functions (by Handler), methods, paths and auth.

use std::collections::BTreeSet;
use std::path::Path;

use hanul_functions::{Auth, FUNCTIONS, PERIODIC, SOCKETS, WORKERS};
use serde_yaml_ng::Value;

fn template() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let text = std::fs::read_to_string(&path).expect("template.yaml");
    serde_yaml_ng::from_str(&text).expect("template.yaml is YAML")
}

/// CloudFormation short tags (`!Ref X`) parse as tagged values; look through them.
fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => &t.value,
        other => other,
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for key in path {
        cur = untag(cur).get(*key)?;
    }
    untag(cur).as_str()
}

type RouteRow = (String, String, String, &'static str);

fn template_routes() -> (BTreeSet<RouteRow>, BTreeSet<String>) {
    let template = template();
    let resources = template
        .get("Resources")
        .and_then(Value::as_mapping)
        .expect("Resources");
    let default_auth = str_at(
        &template,
        &[
            "Resources",
            "HttpApi",
            "Properties",
            "Auth",
            "DefaultAuthorizer",
        ],
    );
    let mut routes = BTreeSet::new();
    let mut binaries = BTreeSet::new();
    for (_, resource) in resources {
        if str_at(resource, &["Type"]) != Some("AWS::Serverless::Function") {
            continue;
        }
        assert_eq!(
            str_at(resource, &["Metadata", "BuildProperties", "Binary"]),
            Some("hanul-lambda"),
            "every function runs the one binary"
        );
        let binary = str_at(resource, &["Properties", "Handler"])
            .expect("every function names its hanul function in Handler")
            .to_owned();
        binaries.insert(binary.clone());
        let Some(events) = untag(resource)
            .get("Properties")
            .and_then(|p| p.get("Events"))
            .and_then(Value::as_mapping)
        else {
            continue;
        };
        for (_, event) in events {
            if str_at(event, &["Type"]) != Some("HttpApi") {
                continue;
            }
            let method = str_at(event, &["Properties", "Method"])
                .expect("Method")
                .to_uppercase();
            let path = str_at(event, &["Properties", "Path"])
                .expect("Path")
                .to_owned();
            let authorizer = str_at(event, &["Properties", "Auth", "Authorizer"]).or(default_auth);
            let auth = match authorizer {
                None | Some("NONE") => "none",
                Some(_) => "jwt",
            };
            routes.insert((binary.clone(), method, path, auth));
        }
    }
    (routes, binaries)
}

fn code_routes() -> BTreeSet<RouteRow> {
    FUNCTIONS
        .iter()
        .flat_map(|f| {
            f.routes.iter().map(move |r| {
                let auth = match r.auth {
                    // On AWS an optional token is checked by the function.
                    Auth::None | Auth::Optional => "none",
                    Auth::Jwt => "jwt",
                };
                (
                    f.name.to_owned(),
                    r.method.to_string(),
                    r.path.to_owned(),
                    auth,
                )
            })
        })
        .collect()
}

#[test]
fn code_and_template_declare_the_same_routes() {
    let (template, _) = template_routes();
    let code = code_routes();
    let only_code: Vec<_> = code.difference(&template).collect();
    let only_template: Vec<_> = template.difference(&code).collect();
    assert!(
        only_code.is_empty() && only_template.is_empty(),
        "route tables differ\n  only in code: {only_code:?}\n  only in template.yaml: {only_template:?}"
    );
    assert!(!code.is_empty());
}

#[test]
fn every_function_has_a_binary_and_a_template_entry() {
    let (_, template_binaries) = template_routes();
    let code: BTreeSet<String> = FUNCTIONS
        .iter()
        .map(|f| f.name.to_owned())
        .chain(WORKERS.iter().map(|w| w.name.to_owned()))
        .chain(PERIODIC.iter().map(|p| p.name.to_owned()))
        .chain(SOCKETS.iter().map(|s| s.name.to_owned()))
        .collect();
    assert_eq!(
        code, template_binaries,
        "functions in code vs in template.yaml"
    );
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/hanul-lambda.rs");
    assert!(bin.exists(), "{} is missing", bin.display());
}

#[test]
fn the_parity_check_notices_a_difference() {
    // Guard against a vacuous comparison: a changed path must show up.
    let (template, _) = template_routes();
    let mut code = code_routes();
    let first = code.iter().next().cloned().expect("a route");
    code.remove(&first);
    code.insert((first.0, first.1, format!("{}-changed", first.2), first.3));
    assert_ne!(code, template);
}

#[test]
fn every_routed_first_segment_is_a_reserved_alias() {
    // An alias equal to a routed segment would be shadowed by that route:
    // a first segment (`GET /{code}`), or one after `/api/v1/` (`GET
    // /api/v1/{code}`).
    for f in FUNCTIONS {
        for route in f.routes {
            let path = route.path.trim_start_matches('/');
            let first = path
                .strip_prefix("api/v1/")
                .unwrap_or(path)
                .split('/')
                .next()
                .unwrap_or("");
            if first.is_empty() || first.starts_with('{') {
                continue;
            }
            assert!(
                hanul_shared::shortener::code::validate_alias(first).is_err()
                    || first.len() < hanul_shared::shortener::code::ALIAS_MIN,
                "{first} (from {}) must be a reserved alias",
                route.path
            );
        }
    }
    // And the local host's own routes.
    assert!(hanul_shared::shortener::code::validate_alias("local").is_err());
}
