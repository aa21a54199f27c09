//! Verifying user-pool tokens in the function itself, for routes where a
//! token is optional: API Gateway's JWT authorizer cannot be optional, so such
//! routes are public and the function checks a token when one is sent, the
//! way the authorizer would (issuer, expiry, signature by a key of the pool's
//! JWKS, audience or `client_id`), and puts the claims where the authorizer
//! puts them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::RwLock;

use super::ApiError;
use super::auth::{Caller, TokenError, bearer, jwt_context};

/// A key set is refetched for an unknown `kid` at most this often.
const REFRESH_FLOOR: Duration = Duration::from_secs(60);

pub struct JwksVerifier {
    issuer: String,
    audience: String,
    /// Built on the first token: its TLS set-up loads the trust store, which
    /// a cold start should not pay for when no token arrives.
    client: std::sync::OnceLock<reqwest::Client>,
    keys: RwLock<Option<(Instant, Arc<JwkSet>)>>,
}

impl std::fmt::Debug for JwksVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksVerifier")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl JwksVerifier {
    /// `issuer` as in the tokens' `iss` (e.g. the Cognito pool URL); its keys
    /// are at `<issuer>/.well-known/jwks.json`.
    pub fn new(issuer: &str, audience: &str) -> Result<Self, String> {
        let issuer = issuer.trim().trim_end_matches('/').to_owned();
        if url::Url::parse(&issuer).is_err() {
            return Err(format!("JWT_ISSUER {issuer:?} is not a URL"));
        }
        if audience.trim().is_empty() {
            return Err("JWT_AUDIENCE is empty".into());
        }
        Ok(Self {
            issuer,
            audience: audience.trim().to_owned(),
            client: std::sync::OnceLock::new(),
            keys: RwLock::new(None),
        })
    }

    async fn fetch(&self) -> Result<Arc<JwkSet>, TokenError> {
        let url = format!("{}/.well-known/jwks.json", self.issuer);
        let client = match self.client.get() {
            Some(client) => client,
            None => {
                let built = reqwest::Client::builder()
                    .timeout(Duration::from_secs(3))
                    .build()
                    .map_err(|e| {
                        TokenError::Unavailable(format!("cannot build the JWKS client: {e}"))
                    })?;
                self.client.get_or_init(|| built)
            }
        };
        let set: JwkSet = client
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| TokenError::Unavailable(format!("fetching {url}: {e}")))?
            .json()
            .await
            .map_err(|e| TokenError::Unavailable(format!("reading {url}: {e}")))?;
        let set = Arc::new(set);
        *self.keys.write().await = Some((Instant::now(), set.clone()));
        Ok(set)
    }

    async fn key(&self, kid: &str) -> Result<jsonwebtoken::jwk::Jwk, TokenError> {
        let cached = self.keys.read().await.clone();
        if let Some((_, set)) = &cached
            && let Some(jwk) = set.find(kid)
        {
            return Ok(jwk.clone());
        }
        // An unknown key id: the pool may have a new key, but a flood of
        // made-up ids must not turn into a flood of fetches.
        let fresh = match cached {
            Some((at, set)) if at.elapsed() < REFRESH_FLOOR => set,
            _ => self.fetch().await?,
        };
        fresh
            .find(kid)
            .cloned()
            .ok_or_else(|| TokenError::Invalid(format!("no key {kid:?} in the issuer's key set")))
    }

    /// The token's claims, as API Gateway would pass them (strings).
    pub async fn verify(&self, token: &str) -> Result<HashMap<String, String>, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("the token names no key (kid)".into()))?;
        let jwk = self.key(&kid).await?;
        // The algorithm comes from the key, never from the token's header.
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P384 => {
                Algorithm::ES384
            }
            _ => return Err(TokenError::Invalid("unsupported key type".into())),
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<HashMap<String, Value>>(token, &key, &validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let claims = data.claims;
        // ID tokens carry `aud`, access tokens `client_id`: either must be ours.
        let audience_ok = [claims.get("aud"), claims.get("client_id")]
            .into_iter()
            .flatten()
            .any(|v| match v {
                Value::String(s) => *s == self.audience,
                Value::Array(all) => all.iter().any(|a| a.as_str() == Some(&self.audience)),
                _ => false,
            });
        if !audience_ok {
            return Err(TokenError::Invalid(
                "the token is for another client".into(),
            ));
        }
        Ok(claims
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, text)
            })
            .collect())
    }
}

/// Middleware for a function whose routes take an optional token: a request
/// that already carries verified claims (a JWT route) passes; one with a
/// bearer token gets it verified (401 if bad); one without passes as
/// anonymous.
pub async fn optional_token(
    State(verifier): State<Arc<JwksVerifier>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    if Caller::from_parts(&parts).is_none()
        && let Some(token) = bearer(&parts)
    {
        match verifier.verify(token).await {
            Ok(claims) => {
                parts.extensions.insert(jwt_context(claims));
            }
            Err(TokenError::Unavailable(e)) => {
                tracing::error!(error = %e, "cannot verify tokens: the key set is unreachable");
                return ApiError::unavailable("cannot verify the token right now", 1)
                    .into_response();
            }
            Err(e) => return ApiError::unauthorized(e.to_string()).into_response(),
        }
    }
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    struct Issuer {
        url: String,
        key: EncodingKey,
    }

    /// A local issuer: an ES256 key pair and its JWKS served over HTTP.
    async fn issuer() -> Issuer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let public = pair.public_key().as_ref().to_vec();
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
        }]});
        let app = axum::Router::new().route(
            "/pool/.well-known/jwks.json",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Issuer {
            url: format!("http://{addr}/pool"),
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn sign(issuer: &Issuer, kid: &str, claims: Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, &issuer.key).unwrap()
    }

    #[tokio::test]
    async fn pool_tokens_verify_and_others_do_not() {
        let issuer = issuer().await;
        let verifier = JwksVerifier::new(&issuer.url, "client-1").unwrap();
        let exp = now() + 600;
        let good = json!({"sub": "nina", "iss": issuer.url, "exp": exp, "client_id": "client-1", "token_use": "access"});
        let claims = verifier
            .verify(&sign(&issuer, "k1", good.clone()))
            .await
            .unwrap();
        assert_eq!(claims.get("sub").map(String::as_str), Some("nina"));
        // Numbers arrive as strings, as API Gateway passes them.
        assert_eq!(claims.get("exp"), Some(&exp.to_string()));

        let id_token =
            json!({"sub": "nina", "iss": issuer.url, "exp": now() + 600, "aud": "client-1"});
        assert!(
            verifier
                .verify(&sign(&issuer, "k1", id_token))
                .await
                .is_ok()
        );

        let mut other_client = good.clone();
        other_client["client_id"] = json!("client-2");
        let mut expired = good.clone();
        expired["exp"] = json!(now() - 600);
        let mut foreign = good.clone();
        foreign["iss"] = json!("https://elsewhere.example");
        for bad in [other_client, expired, foreign] {
            assert!(
                verifier
                    .verify(&sign(&issuer, "k1", bad.clone()))
                    .await
                    .is_err(),
                "{bad}"
            );
        }
        assert!(matches!(
            verifier.verify(&sign(&issuer, "k2", good.clone())).await,
            Err(TokenError::Invalid(_))
        ));
        // Signed by another key under the same kid.
        let impostor = self::issuer().await;
        assert!(verifier.verify(&sign(&impostor, "k1", good)).await.is_err());
        // HS256 with the public key as secret (algorithm confusion) fails.
        let hs = jsonwebtoken::encode(
            &Header {
                kid: Some("k1".into()),
                ..Header::new(Algorithm::HS256)
            },
            &json!({"sub": "x", "iss": issuer.url, "exp": now() + 600, "client_id": "client-1"}),
            &EncodingKey::from_secret(b"guess"),
        )
        .unwrap();
        assert!(verifier.verify(&hs).await.is_err());
        assert!(verifier.verify("garbage").await.is_err());
    }

    #[tokio::test]
    async fn an_unreachable_key_set_is_unavailable_not_invalid() {
        let verifier = JwksVerifier::new("http://127.0.0.1:9/pool", "c").unwrap();
        let issuer = issuer().await;
        let token = sign(
            &issuer,
            "k1",
            json!({"sub": "a", "iss": "http://127.0.0.1:9/pool", "exp": now() + 60}),
        );
        assert!(matches!(
            verifier.verify(&token).await,
            Err(TokenError::Unavailable(_))
        ));
        assert!(JwksVerifier::new("not a url", "c").is_err());
        assert!(JwksVerifier::new("https://x.example", " ").is_err());
    }
}
