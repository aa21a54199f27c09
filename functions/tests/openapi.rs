//! The shortener's OpenAPI description lists exactly the shortener's routes,
//! with the same methods and auth as the route table.

use std::collections::BTreeSet;

use hanul_functions::{Auth, FUNCTIONS};
use serde_yaml_ng::Value;

const SHORTENER: &[&str] = &[
    "shorten",
    "shorten-batch",
    "redirect",
    "urls-get",
    "urls-update",
    "urls-delete",
    "urls-qr",
];

fn spec() -> Value {
    let text = include_str!("../src/shortener.openapi.yaml");
    serde_yaml_ng::from_str(text).expect("the OpenAPI file is YAML")
}

#[test]
fn the_openapi_file_describes_the_route_table() {
    let spec = spec();
    assert_eq!(spec["openapi"].as_str(), Some("3.1.0"));
    let mut documented = BTreeSet::new();
    for (path, item) in spec["paths"].as_mapping().expect("paths") {
        for (method, op) in item.as_mapping().expect("path item") {
            let method = method.as_str().unwrap_or_default();
            if method == "parameters" {
                continue;
            }
            let bearer_only = op["security"]
                .as_sequence()
                .is_some_and(|s| s.len() == 1 && s[0].get("bearer").is_some());
            let anonymous_too = op["security"].as_sequence().is_some_and(|s| {
                s.iter()
                    .any(|r| r.as_mapping().is_some_and(|m| m.is_empty()))
            });
            let auth = match (bearer_only, anonymous_too) {
                (true, _) => "jwt",
                (false, true) => "optional",
                _ => "none",
            };
            assert!(op["responses"].as_mapping().is_some_and(|r| !r.is_empty()));
            documented.insert((
                method.to_uppercase(),
                path.as_str().unwrap_or_default().to_owned(),
                auth,
            ));
        }
    }
    let routed: BTreeSet<_> = FUNCTIONS
        .iter()
        .filter(|f| SHORTENER.contains(&f.name))
        .flat_map(|f| f.routes.iter())
        .map(|r| {
            let auth = match r.auth {
                Auth::Jwt => "jwt",
                Auth::Optional => "optional",
                Auth::None => "none",
            };
            (r.method.to_string(), r.path.to_owned(), auth)
        })
        .collect();
    assert_eq!(documented, routed);
}
