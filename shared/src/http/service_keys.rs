//! Service-to-service calls carry `x-api-key`. The keys come from
//! `SERVICE_API_KEYS` (`name:key,name:key`); on AWS the template fills it from
//! a Secrets Manager secret. Only digests are kept, and compared in constant
//! time.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use super::ApiError;

pub const MIN_KEY_LEN: usize = 24;

#[derive(Clone)]
pub struct ServiceKeys {
    keys: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ServiceKeys")
            .field("names", &names)
            .finish()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ServiceKeys {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((name, key)) = entry.split_once(':') else {
                return Err("SERVICE_API_KEYS: each entry is `name:key`".into());
            };
            let name_ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok {
                return Err(format!("SERVICE_API_KEYS: {name:?} is not a service name"));
            }
            if key.len() < MIN_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "SERVICE_API_KEYS: the key of {name} must be at least {MIN_KEY_LEN} visible characters"
                ));
            }
            keys.push((name.to_owned(), digest(key)));
        }
        if keys.is_empty() {
            return Err("SERVICE_API_KEYS lists no key".into());
        }
        Ok(Self { keys })
    }

    /// The service a key belongs to.
    pub fn verify(&self, provided: &str) -> Option<&str> {
        let candidate = digest(provided);
        let mut found = None;
        // Look at every key, whatever matches, so timing says nothing.
        for (name, stored) in &self.keys {
            let diff = stored
                .iter()
                .zip(candidate.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// The calling service, or 401.
    pub fn require(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let provided = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError {
                code: "invalid_api_key",
                ..ApiError::unauthorized("an x-api-key header with a service key is required")
            })?;
        self.verify(provided)
            .map(str::to_owned)
            .ok_or_else(|| ApiError {
                code: "invalid_api_key",
                ..ApiError::unauthorized("the x-api-key is not a known service key")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_verify() {
        let keys =
            ServiceKeys::parse("notify:aaaaaaaaaaaaaaaaaaaaaaaa1, feed:bbbbbbbbbbbbbbbbbbbbbbbb2")
                .unwrap();
        assert_eq!(keys.verify("aaaaaaaaaaaaaaaaaaaaaaaa1"), Some("notify"));
        assert_eq!(keys.verify("bbbbbbbbbbbbbbbbbbbbbbbb2"), Some("feed"));
        assert_eq!(keys.verify("aaaaaaaaaaaaaaaaaaaaaaaa"), None);
        assert!(!format!("{keys:?}").contains("aaaa"));
        for bad in ["", "nokey", "x:short", "bad name:aaaaaaaaaaaaaaaaaaaaaaaa1"] {
            assert!(ServiceKeys::parse(bad).is_err(), "{bad}");
        }
        let mut headers = HeaderMap::new();
        assert_eq!(keys.require(&headers).unwrap_err().code, "invalid_api_key");
        headers.insert("x-api-key", "bbbbbbbbbbbbbbbbbbbbbbbb2".parse().unwrap());
        assert_eq!(keys.require(&headers).unwrap(), "feed");
    }
}
