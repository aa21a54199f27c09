//! Who is calling. On AWS the HTTP API's JWT authorizer verifies the token and
//! the claims arrive in the request context; the local host verifies its own
//! HS256 tokens and puts the claims in the very same place, so handlers read
//! them one way in both hosts.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription,
    ApiGatewayV2httpRequestContext,
};
use lambda_http::request::RequestContext;
use serde::{Deserialize, Serialize};

use super::ApiError;

/// The caller, from a verified token's `sub` claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub claims: HashMap<String, String>,
}

impl Caller {
    /// The caller, if the request carried a verified token.
    pub fn from_parts(parts: &Parts) -> Option<Caller> {
        Self::from_extensions(&parts.extensions)
    }

    /// The same, from a request's extensions.
    pub fn from_extensions(extensions: &http::Extensions) -> Option<Caller> {
        let context = extensions.get::<RequestContext>()?;
        #[allow(irrefutable_let_patterns, unreachable_patterns)]
        let RequestContext::ApiGatewayV2(context) = context else {
            return None;
        };
        let claims = context.authorizer.as_ref()?.jwt.as_ref()?.claims.clone();
        let user_id = claims.get("sub").filter(|s| !s.is_empty())?.clone();
        Some(Caller { user_id, claims })
    }
}

/// Extracting `Caller` requires a token: 401 otherwise.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Caller::from_parts(parts)
            .ok_or_else(|| ApiError::unauthorized("a valid bearer token is required"))
    }
}

/// The caller if there is one; for routes where a token is optional.
#[derive(Debug, Clone)]
pub struct MaybeCaller(pub Option<Caller>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(MaybeCaller(Caller::from_parts(parts)))
    }
}

/// The request context API Gateway builds for verified JWT claims.
pub fn jwt_context(claims: HashMap<String, String>) -> RequestContext {
    let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
    jwt.claims = claims;
    let mut authorizer = ApiGatewayRequestAuthorizer::default();
    authorizer.jwt = Some(jwt);
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.authorizer = Some(authorizer);
    RequestContext::ApiGatewayV2(context)
}

#[derive(Debug, Serialize, Deserialize)]
struct TokenClaims {
    sub: String,
    iss: String,
    iat: u64,
    exp: u64,
    /// The session an account's access token belongs to; none on a
    /// development token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
}

pub const LOCAL_ISSUER: &str = "hanul-local";

/// Issues and verifies the local host's HS256 tokens.
#[derive(Clone)]
pub struct LocalTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    lifetime: Duration,
}

impl std::fmt::Debug for LocalTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTokens").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("userId must be 1 to 128 characters of letters, digits, `-`, `_`, `.` or `@`")]
    InvalidUserId,
    #[error("the token is invalid: {0}")]
    Invalid(String),
    /// The keys to check it with could not be fetched.
    #[error("cannot verify the token: {0}")]
    Unavailable(String),
}

impl LocalTokens {
    pub fn new(secret: &[u8], lifetime: Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            lifetime,
        }
    }

    pub fn issue(&self, user_id: &str, now_secs: u64) -> Result<String, TokenError> {
        self.issue_for(user_id, None, now_secs, self.lifetime)
    }

    /// A token of one session (`sid` claim), living `lifetime`.
    pub fn issue_session(
        &self,
        user_id: &str,
        session: &str,
        now_secs: u64,
        lifetime: Duration,
    ) -> Result<String, TokenError> {
        self.issue_for(user_id, Some(session), now_secs, lifetime)
    }

    fn issue_for(
        &self,
        user_id: &str,
        session: Option<&str>,
        now_secs: u64,
        lifetime: Duration,
    ) -> Result<String, TokenError> {
        let valid = !user_id.is_empty()
            && user_id.len() <= 128
            && user_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
        if !valid {
            return Err(TokenError::InvalidUserId);
        }
        let claims = TokenClaims {
            sub: user_id.to_owned(),
            iss: LOCAL_ISSUER.to_owned(),
            iat: now_secs,
            exp: now_secs + lifetime.as_secs(),
            sid: session.map(str::to_owned),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Verifies signature, issuer and expiry; returns the claims as API
    /// Gateway would pass them (strings).
    pub fn verify(&self, token: &str) -> Result<HashMap<String, String>, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[LOCAL_ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        let data = jsonwebtoken::decode::<TokenClaims>(token, &self.decoding, &validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let c = data.claims;
        let mut claims = HashMap::from([
            ("sub".to_owned(), c.sub),
            ("iss".to_owned(), c.iss),
            ("iat".to_owned(), c.iat.to_string()),
            ("exp".to_owned(), c.exp.to_string()),
        ]);
        if let Some(sid) = c.sid {
            claims.insert("sid".to_owned(), sid);
        }
        Ok(claims)
    }
}

/// Checks a token that arrives outside an `Authorization` header (the
/// WebSocket `$connect`'s query string): answers the user it names.
#[async_trait::async_trait]
pub trait TokenVerifier: Send + Sync + 'static {
    async fn user_of(&self, token: &str) -> Result<String, TokenError>;
}

fn subject(claims: HashMap<String, String>) -> Result<String, TokenError> {
    claims
        .get("sub")
        .filter(|s| !s.is_empty())
        .cloned()
        .ok_or_else(|| TokenError::Invalid("the token names no user (sub)".into()))
}

#[async_trait::async_trait]
impl TokenVerifier for LocalTokens {
    async fn user_of(&self, token: &str) -> Result<String, TokenError> {
        subject(self.verify(token)?)
    }
}

#[async_trait::async_trait]
impl TokenVerifier for super::jwks::JwksVerifier {
    async fn user_of(&self, token: &str) -> Result<String, TokenError> {
        subject(self.verify(token).await?)
    }
}

/// The token in an `Authorization: Bearer <token>` header, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_tampered_ones_do_not() {
        let tokens = LocalTokens::new(b"secret-one", Duration::from_secs(3600));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = tokens.issue("u1", now).unwrap();
        assert_eq!(
            tokens
                .verify(&token)
                .unwrap()
                .get("sub")
                .map(String::as_str),
            Some("u1")
        );
        let other = LocalTokens::new(b"secret-two", Duration::from_secs(3600));
        assert!(other.verify(&token).is_err());
        let expired = tokens.issue("u1", now - 7200).unwrap();
        assert!(tokens.verify(&expired).is_err());
        assert!(tokens.verify("not.a.token").is_err());
        assert!(matches!(
            tokens.issue("", now),
            Err(TokenError::InvalidUserId)
        ));
        assert!(matches!(
            tokens.issue("a b", now),
            Err(TokenError::InvalidUserId)
        ));
    }

    #[test]
    fn claims_are_read_from_the_api_gateway_context() {
        let (mut parts, ()) = axum::http::Request::new(()).into_parts();
        assert_eq!(Caller::from_parts(&parts), None);
        parts
            .extensions
            .insert(jwt_context(HashMap::from([("sub".into(), "nina".into())])));
        assert_eq!(
            Caller::from_parts(&parts).map(|c| c.user_id),
            Some("nina".into())
        );
    }
}
