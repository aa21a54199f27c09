//! Accounts on the local host: sign-up, sign-in, refresh, sign-out and
//! password change. On AWS the Cognito user pool does this job; the tokens
//! here are the same kind of JWT the gateway layer already verifies.

use std::sync::Arc;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use hanul_shared::http::auth::{LocalTokens, TokenError};
use hanul_shared::ports::Clock;
use hanul_shared::ports::table::{
    Condition, Consistency, Key, Query, SortKey, Table, TableError, Update, get_i64, get_str, num,
    s,
};
use hanul_shared::ratelimit::RateLimiter;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How long an access token lives: a revoked session's tokens stop at once
/// here (the gateway checks the session), elsewhere within this.
pub const ACCESS_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// How long an unused refresh token lives; each refresh renews it.
pub const REFRESH_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_BYTES: usize = 256;
/// A user's sessions at once; signing in past this ends the oldest.
pub const MAX_SESSIONS: usize = 20;

/// The rate-limit scopes (rules in default-rules.yaml). Every sign-in
/// attempt is charged before the password is hashed, so a guesser spends
/// neither the account's budget nor our CPU past the limit.
pub const SIGN_IN_ACCOUNT_SCOPE: &str = "@accounts/sign-in-account";
pub const SIGN_IN_ADDRESS_SCOPE: &str = "@accounts/sign-in-address";
pub const SIGN_UP_ADDRESS_SCOPE: &str = "@accounts/sign-up-address";

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(
        "userName must be 3 to 32 characters: letters, digits, `_`, `-` or `.`, starting with a letter or digit"
    )]
    InvalidUserName,
    #[error("{0}")]
    WeakPassword(String),
    #[error("that user name is taken")]
    Taken,
    /// The same answer for an unknown user and a wrong password.
    #[error("the user name or password is wrong")]
    InvalidCredentials,
    #[error("the refresh token is invalid, expired or revoked")]
    InvalidRefresh,
    #[error("too many attempts; try again in {0} s")]
    RateLimited(u64),
    #[error("the account store is unavailable: {0}")]
    Store(#[from] TableError),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

/// What a sign-up, sign-in, refresh or password change answers.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub user_id: String,
    pub user_name: String,
    pub access_token: String,
    pub token_type: &'static str,
    /// Seconds the access token lives.
    pub expires_in: u64,
    pub refresh_token: String,
    pub refresh_expires_in: u64,
}

pub struct Accounts {
    table: Arc<dyn Table>,
    tokens: LocalTokens,
    clock: Arc<dyn Clock>,
    limiter: Option<Arc<RateLimiter>>,
    /// `user/sid` → whether the session exists; dropped on revocation.
    live: moka::sync::Cache<String, bool>,
    /// Verified against when the user is unknown, so that answer costs what
    /// a wrong password costs.
    decoy: String,
}

fn account_key(user: &str) -> Key {
    Key::new(format!("account#{user}"), "account")
}

fn session_key(user: &str, sid: &str) -> Key {
    Key::new(format!("account#{user}"), format!("session#{sid}"))
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    while out.len() < bytes * 2 {
        out.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    out.truncate(bytes * 2);
    out
}

/// A user name is its user id, case-folded; the spelling is kept for show.
pub fn user_id_of(user_name: &str) -> Result<String, AccountError> {
    let ok = (3..=32).contains(&user_name.len())
        && user_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && user_name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Err(AccountError::InvalidUserName);
    }
    Ok(user_name.to_ascii_lowercase())
}

/// At least ten characters, at most 256 bytes, not one of the commonest
/// passwords nor a close variant of one, nor built from the user name.
pub fn check_password(password: &str, user_name: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AccountError::WeakPassword(format!(
            "the password must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AccountError::WeakPassword(format!(
            "the password must be at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    let estimate = zxcvbn::zxcvbn(password, &[user_name, "hanul"]);
    // Score 0–1: found within 10^6 guesses (common passwords, their simple
    // variants, keyboard walks, the user name).
    if (estimate.score() as u8) < 2 {
        let hint = estimate
            .feedback()
            .and_then(|f| f.warning())
            .map(|w| format!(" ({w})"))
            .unwrap_or_default();
        return Err(AccountError::WeakPassword(format!(
            "that password is too easy to guess{hint}; try a longer phrase"
        )));
    }
    Ok(())
}

/// `check_password` on the blocking pool, as the hashing is: the strength
/// estimate is CPU work that must not hold an async worker.
async fn check_password_off_thread(password: &str, user_name: &str) -> Result<(), AccountError> {
    let (password, user_name) = (password.to_owned(), user_name.to_owned());
    tokio::task::spawn_blocking(move || check_password(&password, &user_name))
        .await
        .map_err(|e| AccountError::Unavailable(format!("the password check failed: {e}")))?
}

fn hasher() -> Argon2<'static> {
    // argon2id, m = 19 MiB, t = 2, p = 1 (the OWASP recommendation).
    Argon2::default()
}

async fn hash_password(password: String) -> Result<String, AccountError> {
    tokio::task::spawn_blocking(move || {
        // uuid's v4 bytes come from a CSPRNG (rand's ThreadRng, OS-seeded).
        let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
            .map_err(|e| AccountError::Internal(format!("salt: {e}")))?;
        hasher()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AccountError::Internal(format!("hashing failed: {e}")))
    })
    .await
    .map_err(|e| AccountError::Internal(format!("hashing stopped: {e}")))?
}

/// Whether `password` matches the PHC string `hash` (argon2's verifier
/// compares in constant time).
async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                hasher()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A refresh token: `<user>.<sid>.<secret>` (a user id may hold `.`, so it
/// is split from the right).
fn parse_refresh(token: &str) -> Option<(&str, &str, &str)> {
    let mut parts = token.rsplitn(3, '.');
    let secret = parts.next()?;
    let sid = parts.next()?;
    let user = parts.next()?;
    let hex = |v: &str, n: usize| v.len() == n && v.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(secret, 64) && hex(sid, 32) && !user.is_empty() && user.len() <= 32)
        .then_some((user, sid, secret))
}

impl Accounts {
    pub async fn new(
        table: Arc<dyn Table>,
        tokens: LocalTokens,
        clock: Arc<dyn Clock>,
        limiter: Option<Arc<RateLimiter>>,
    ) -> Result<Self, AccountError> {
        Ok(Self {
            table,
            tokens,
            clock,
            limiter,
            live: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            decoy: hash_password(random_hex(16)).await?,
        })
    }

    async fn charge(&self, scope: &str, key: &str) -> Result<(), AccountError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let verdict = limiter.check_scope(scope, key).await;
        if let Some(e) = verdict.unavailable.first() {
            return Err(AccountError::Unavailable(e.to_string()));
        }
        if let Some(refused) = verdict.violated().first() {
            return Err(AccountError::RateLimited(
                refused.decision.retry_after_ms.div_ceil(1000).max(1),
            ));
        }
        Ok(())
    }

    /// A new session's tokens: the session item, then the JWT naming it.
    async fn open_session(&self, user_id: &str, user_name: &str) -> Result<Session, AccountError> {
        let sid = random_hex(16);
        let secret = random_hex(32);
        let now = self.clock.now_secs();
        let mut item = session_key(user_id, &sid).to_item();
        item.insert("secret".into(), s(digest(&secret)));
        item.insert("createdMs".into(), num(self.clock.now_ms()));
        item.insert("ttl".into(), num(now + REFRESH_LIFETIME.as_secs()));
        self.table.put(item, None).await?;
        self.trim_sessions(user_id, &sid).await?;
        self.session_tokens(user_id, user_name, &sid, &secret)
    }

    fn session_tokens(
        &self,
        user_id: &str,
        user_name: &str,
        sid: &str,
        secret: &str,
    ) -> Result<Session, AccountError> {
        let now = self.clock.now_secs();
        let access_token = self
            .tokens
            .issue_session(user_id, sid, now, ACCESS_LIFETIME)
            .map_err(|e| AccountError::Internal(e.to_string()))?;
        self.live.insert(format!("{user_id}/{sid}"), true);
        Ok(Session {
            user_id: user_id.to_owned(),
            user_name: user_name.to_owned(),
            access_token,
            token_type: "Bearer",
            expires_in: ACCESS_LIFETIME.as_secs(),
            refresh_token: format!("{user_id}.{sid}.{secret}"),
            refresh_expires_in: REFRESH_LIFETIME.as_secs(),
        })
    }

    /// The user's live sessions, oldest first: `(sid, createdMs)`.
    async fn sessions(&self, user_id: &str) -> Result<Vec<(String, i64)>, AccountError> {
        let now = self.clock.now_secs();
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .table
                .query(
                    Query::partition(format!("account#{user_id}"))
                        .sort(SortKey::BeginsWith("session#".into()))
                        .after(cursor),
                )
                .await?;
            for item in &page.items {
                if get_i64(item, "ttl").is_some_and(|e| e >= 0 && (e as u64) < now) {
                    continue;
                }
                if let Some(sid) = Key::of_item(item)
                    .ok()
                    .and_then(|k| k.sk.strip_prefix("session#").map(str::to_owned))
                {
                    out.push((sid, get_i64(item, "createdMs").unwrap_or(0)));
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        out.sort_by_key(|(_, created)| *created);
        Ok(out)
    }

    async fn end_session(&self, user_id: &str, sid: &str) -> Result<(), AccountError> {
        self.table.delete(&session_key(user_id, sid), None).await?;
        self.live.insert(format!("{user_id}/{sid}"), false);
        Ok(())
    }

    async fn trim_sessions(&self, user_id: &str, keep: &str) -> Result<(), AccountError> {
        let sessions = self.sessions(user_id).await?;
        let excess = sessions.len().saturating_sub(MAX_SESSIONS);
        for (sid, _) in sessions.iter().filter(|(sid, _)| sid != keep).take(excess) {
            self.end_session(user_id, sid).await?;
        }
        Ok(())
    }

    /// `POST /local/v1/accounts`.
    pub async fn sign_up(
        &self,
        user_name: &str,
        password: &str,
        address: &str,
    ) -> Result<Session, AccountError> {
        let user_id = user_id_of(user_name)?;
        // Charged before the strength check: zxcvbn costs milliseconds of
        // CPU, and anyone may call this.
        self.charge(SIGN_UP_ADDRESS_SCOPE, address).await?;
        check_password_off_thread(password, user_name).await?;
        let hash = hash_password(password.to_owned()).await?;
        let mut item = account_key(&user_id).to_item();
        item.insert("userName".into(), s(user_name));
        item.insert("hash".into(), s(hash));
        item.insert("createdMs".into(), num(self.clock.now_ms()));
        match self
            .table
            .put(
                item,
                Some(Condition::absent_or_expired(self.clock.now_secs())),
            )
            .await
        {
            Ok(()) => {}
            Err(TableError::ConditionFailed { .. }) => return Err(AccountError::Taken),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(user = user_id, "account created");
        self.open_session(&user_id, user_name).await
    }

    /// `POST /local/v1/sessions`: the same answer, and the same work, for an
    /// unknown user as for a wrong password.
    pub async fn sign_in(
        &self,
        user_name: &str,
        password: &str,
        address: &str,
    ) -> Result<Session, AccountError> {
        // A malformed name is simply an unknown one.
        let user_id = user_id_of(user_name).unwrap_or_else(|_| user_name.to_ascii_lowercase());
        self.charge(SIGN_IN_ADDRESS_SCOPE, address).await?;
        self.charge(SIGN_IN_ACCOUNT_SCOPE, &user_id).await?;
        let password = password.to_owned();
        if password.len() > MAX_PASSWORD_BYTES || user_id.len() > 32 {
            verify_password(password, self.decoy.clone()).await;
            return Err(AccountError::InvalidCredentials);
        }
        let account = self
            .table
            .get(&account_key(&user_id), Consistency::Strong)
            .await?;
        let Some(account) = account else {
            verify_password(password, self.decoy.clone()).await;
            return Err(AccountError::InvalidCredentials);
        };
        let hash = get_str(&account, "hash").unwrap_or_default().to_owned();
        if !verify_password(password, hash).await {
            tracing::info!(user = user_id, address, "failed sign-in");
            return Err(AccountError::InvalidCredentials);
        }
        let shown = get_str(&account, "userName").unwrap_or(&user_id).to_owned();
        self.open_session(&user_id, &shown).await
    }

    /// `POST /local/v1/sessions/refresh`: a new access token and a new
    /// refresh secret for the same session. Presenting a secret already
    /// replaced ends the session: a copy was taken.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session, AccountError> {
        let (user_id, sid, secret) =
            parse_refresh(refresh_token).ok_or(AccountError::InvalidRefresh)?;
        let key = session_key(user_id, sid);
        let Some(item) = self.table.get(&key, Consistency::Strong).await? else {
            return Err(AccountError::InvalidRefresh);
        };
        let now = self.clock.now_secs();
        if get_i64(&item, "ttl").is_some_and(|e| e >= 0 && (e as u64) < now) {
            self.end_session(user_id, sid).await?;
            return Err(AccountError::InvalidRefresh);
        }
        let stored = get_str(&item, "secret").unwrap_or_default();
        let presented = digest(secret);
        if !bool::from(stored.as_bytes().ct_eq(presented.as_bytes())) {
            tracing::warn!(
                user = user_id,
                "a replaced refresh token was presented; the session is ended"
            );
            self.end_session(user_id, sid).await?;
            return Err(AccountError::InvalidRefresh);
        }
        let account = self
            .table
            .get(&account_key(user_id), Consistency::Strong)
            .await?
            .ok_or(AccountError::InvalidRefresh)?;
        let shown = get_str(&account, "userName").unwrap_or(user_id).to_owned();
        let next = random_hex(32);
        let update = Update::new()
            .set("secret", s(digest(&next)))
            .set("ttl", num(now + REFRESH_LIFETIME.as_secs()));
        match self
            .table
            .update(&key, update, Some(Condition::eq("secret", s(presented))))
            .await
        {
            Ok(_) => {}
            // Refreshed by someone else in between: the same theft signal.
            Err(TableError::ConditionFailed { .. }) => {
                self.end_session(user_id, sid).await?;
                return Err(AccountError::InvalidRefresh);
            }
            Err(e) => return Err(e.into()),
        }
        self.session_tokens(user_id, &shown, sid, &next)
    }

    /// `POST /local/v1/sessions/sign-out`: ends the session of a refresh
    /// token. Idempotent; a bad token is still an error.
    pub async fn sign_out(&self, refresh_token: &str) -> Result<(), AccountError> {
        let (user_id, sid, secret) =
            parse_refresh(refresh_token).ok_or(AccountError::InvalidRefresh)?;
        if let Some(item) = self
            .table
            .get(&session_key(user_id, sid), Consistency::Strong)
            .await?
        {
            let stored = get_str(&item, "secret").unwrap_or_default();
            if !bool::from(stored.as_bytes().ct_eq(digest(secret).as_bytes())) {
                return Err(AccountError::InvalidRefresh);
            }
            self.end_session(user_id, sid).await?;
        }
        Ok(())
    }

    /// `POST /local/v1/me/password`: checks the current password, stores
    /// the new one, ends every other session, and answers fresh tokens.
    pub async fn change_password(
        &self,
        user_id: &str,
        current: &str,
        new: &str,
    ) -> Result<Session, AccountError> {
        self.charge(SIGN_IN_ACCOUNT_SCOPE, user_id).await?;
        let account = self
            .table
            .get(&account_key(user_id), Consistency::Strong)
            .await?
            .ok_or(AccountError::InvalidCredentials)?;
        let shown = get_str(&account, "userName").unwrap_or(user_id).to_owned();
        let hash = get_str(&account, "hash").unwrap_or_default().to_owned();
        if current.len() > MAX_PASSWORD_BYTES
            || !verify_password(current.to_owned(), hash.clone()).await
        {
            return Err(AccountError::InvalidCredentials);
        }
        check_password_off_thread(new, &shown).await?;
        let next = hash_password(new.to_owned()).await?;
        let update = Update::new()
            .set("hash", s(next))
            .set("changedMs", num(self.clock.now_ms()));
        match self
            .table
            .update(
                &account_key(user_id),
                update,
                Some(Condition::eq("hash", s(hash))),
            )
            .await
        {
            Ok(_) => {}
            // Changed at the same moment by another session: this one lost.
            Err(TableError::ConditionFailed { .. }) => {
                return Err(AccountError::InvalidCredentials);
            }
            Err(e) => return Err(e.into()),
        }
        // Every session ends, this one too: the caller gets a new one.
        let sessions = self.sessions(user_id).await?;
        for (sid, _) in &sessions {
            self.end_session(user_id, sid).await?;
        }
        tracing::info!(
            user = user_id,
            ended = sessions.len(),
            "password changed; sessions ended"
        );
        self.open_session(user_id, &shown).await
    }

    /// Whether an access token's session is still open: the gateway asks on
    /// every request carrying a `sid` claim (cached a minute, dropped on
    /// revocation by this process).
    pub async fn session_is_live(&self, user_id: &str, sid: &str) -> Result<bool, AccountError> {
        let cache_key = format!("{user_id}/{sid}");
        if let Some(live) = self.live.get(&cache_key) {
            return Ok(live);
        }
        let item = self
            .table
            .get(&session_key(user_id, sid), Consistency::Strong)
            .await?;
        let now = self.clock.now_secs();
        let live =
            item.is_some_and(|i| !get_i64(&i, "ttl").is_some_and(|e| e >= 0 && (e as u64) < now));
        self.live.insert(cache_key, live);
        Ok(live)
    }

    /// Verifies an access token and, for an account's token, its session:
    /// the claims as the gateway passes them on.
    pub async fn verify(
        &self,
        token: &str,
    ) -> Result<std::collections::HashMap<String, String>, TokenError> {
        let claims = self.tokens.verify(token)?;
        if let (Some(user), Some(sid)) = (claims.get("sub"), claims.get("sid")) {
            match self.session_is_live(user, sid).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(TokenError::Invalid("the session has ended".into()));
                }
                Err(e) => return Err(TokenError::Unavailable(e.to_string())),
            }
        }
        Ok(claims)
    }

    pub fn tokens(&self) -> &LocalTokens {
        &self.tokens
    }
}

#[async_trait::async_trait]
impl hanul_shared::http::auth::TokenVerifier for Accounts {
    async fn user_of(&self, token: &str) -> Result<String, TokenError> {
        self.verify(token)
            .await?
            .remove("sub")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| TokenError::Invalid("the token names no user (sub)".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hanul_shared::embedded::{EmbeddedStore, EmbeddedTable};
    use hanul_shared::ports::ManualClock;
    use hanul_shared::ratelimit::{LimiterConfig, RuleSet};

    const GOOD: &str = "correct horse battery staple";

    struct World {
        accounts: Accounts,
        clock: Arc<ManualClock>,
        _dir: tempfile::TempDir,
    }

    async fn world(rules: Option<&str>) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let clock = ManualClock::new(1_800_000_000_000);
        let limiter = rules.map(|r| {
            Arc::new(RateLimiter::new(
                RuleSet::parse(r).unwrap(),
                Arc::new(EmbeddedTable::new(store.clone(), "rate-limits")),
                clock.clone(),
                LimiterConfig::default(),
            ))
        });
        let accounts = Accounts::new(
            Arc::new(EmbeddedTable::new(store, "accounts")),
            LocalTokens::new(b"0123456789abcdef0123", Duration::from_secs(3600)),
            clock.clone(),
            limiter,
        )
        .await
        .unwrap();
        World {
            accounts,
            clock,
            _dir: dir,
        }
    }

    #[test]
    fn user_names_and_passwords_are_checked() {
        assert_eq!(user_id_of("Nina_K").unwrap(), "nina_k");
        for bad in ["ab", "-nina", "nina k", "ni~na", &"n".repeat(33), "ниna"] {
            assert!(
                matches!(user_id_of(bad), Err(AccountError::InvalidUserName)),
                "{bad}"
            );
        }
        for weak in [
            "short",
            "password1234",
            "qwertyuiop",
            "1234567890",
            "nina_k1234",
        ] {
            assert!(
                matches!(
                    check_password(weak, "nina_k"),
                    Err(AccountError::WeakPassword(_))
                ),
                "{weak}"
            );
        }
        assert!(check_password(&"x".repeat(300), "nina").is_err());
        check_password(GOOD, "nina_k").unwrap();
    }

    #[test]
    fn refresh_tokens_parse_strictly() {
        let sid = "a".repeat(32);
        let secret = "b".repeat(64);
        assert_eq!(
            parse_refresh(&format!("ni.na.{sid}.{secret}")),
            Some(("ni.na", sid.as_str(), secret.as_str()))
        );
        for bad in [
            String::new(),
            format!("{sid}.{secret}"),
            format!("nina.{sid}.{}", "b".repeat(63)),
            format!("nina.{}.{secret}", "z".repeat(32)),
        ] {
            assert_eq!(parse_refresh(&bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_session_lives_from_sign_up_through_refresh_to_sign_out() {
        let w = world(None).await;
        let a = &w.accounts;
        let first = a.sign_up("Nina", GOOD, "10.0.0.1").await.unwrap();
        assert_eq!(
            (first.user_id.as_str(), first.user_name.as_str()),
            ("nina", "Nina")
        );
        assert!(matches!(
            a.sign_up("NINA", GOOD, "10.0.0.1").await,
            Err(AccountError::Taken)
        ));
        let claims = a.verify(&first.access_token).await.unwrap();
        assert_eq!(claims["sub"], "nina");

        // A refresh replaces the secret; the old one then ends the session.
        let second = a.refresh(&first.refresh_token).await.unwrap();
        assert_ne!(second.refresh_token, first.refresh_token);
        a.verify(&second.access_token).await.unwrap();
        assert!(matches!(
            a.refresh(&first.refresh_token).await,
            Err(AccountError::InvalidRefresh)
        ));
        assert!(a.verify(&second.access_token).await.is_err());
        assert!(matches!(
            a.refresh(&second.refresh_token).await,
            Err(AccountError::InvalidRefresh)
        ));

        let third = a.sign_in("nina", GOOD, "10.0.0.1").await.unwrap();
        a.sign_out(&third.refresh_token).await.unwrap();
        assert!(a.verify(&third.access_token).await.is_err());
        assert!(a.refresh(&third.refresh_token).await.is_err());
        // Signing out twice is fine; a forged secret is not.
        a.sign_out(&third.refresh_token).await.unwrap();
        let fourth = a.sign_in("nina", GOOD, "10.0.0.1").await.unwrap();
        let mut forged = fourth.refresh_token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        assert!(a.sign_out(&forged).await.is_err());
        a.verify(&fourth.access_token).await.unwrap();

        // An unused refresh token expires.
        w.clock.advance(REFRESH_LIFETIME.as_millis() as u64 + 1000);
        assert!(a.refresh(&fourth.refresh_token).await.is_err());
    }

    #[tokio::test]
    async fn unknown_users_and_wrong_passwords_answer_alike() {
        let w = world(None).await;
        w.accounts.sign_up("omar", GOOD, "10.0.0.2").await.unwrap();
        let wrong = w
            .accounts
            .sign_in("omar", "not the password at all", "a")
            .await;
        let unknown = w.accounts.sign_in("nobody", GOOD, "a").await;
        let malformed = w.accounts.sign_in("no body!", GOOD, "a").await;
        let texts: Vec<String> = [wrong, unknown, malformed]
            .into_iter()
            .map(|r| match r {
                Err(e @ AccountError::InvalidCredentials) => e.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(texts.iter().all(|t| t == &texts[0]));
    }

    #[tokio::test]
    async fn a_password_change_ends_every_other_session() {
        let w = world(None).await;
        let a = &w.accounts;
        let phone = a.sign_up("lea", GOOD, "x").await.unwrap();
        let laptop = a.sign_in("lea", GOOD, "x").await.unwrap();
        assert!(matches!(
            a.change_password("lea", "wrong password here", "another long phrase here")
                .await,
            Err(AccountError::InvalidCredentials)
        ));
        assert!(matches!(
            a.change_password("lea", GOOD, "password123").await,
            Err(AccountError::WeakPassword(_))
        ));
        let fresh = a
            .change_password("lea", GOOD, "another long phrase here")
            .await
            .unwrap();
        for old in [&phone, &laptop] {
            assert!(a.verify(&old.access_token).await.is_err());
            assert!(a.refresh(&old.refresh_token).await.is_err());
        }
        a.verify(&fresh.access_token).await.unwrap();
        assert!(a.sign_in("lea", GOOD, "x").await.is_err());
        a.sign_in("lea", "another long phrase here", "x")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_burst_of_sign_ins_is_refused_before_any_hashing() {
        let rules = "rules:\n  - {name: acct, key: user, algorithm: sliding_window, limit: 3, unit: hour, on_store_error: deny, match: {route: \"@accounts/sign-in-account\"}}\n";
        let w = world(Some(rules)).await;
        w.accounts.sign_up("kim", GOOD, "x").await.unwrap();
        for _ in 0..3 {
            assert!(matches!(
                w.accounts.sign_in("kim", "a wrong guess here", "x").await,
                Err(AccountError::InvalidCredentials)
            ));
        }
        // Now even the right password waits: the guesser cannot tell.
        match w.accounts.sign_in("kim", GOOD, "x").await {
            Err(AccountError::RateLimited(secs)) => assert!(secs > 0),
            other => panic!("{other:?}"),
        }
        // Another account is not affected.
        w.accounts.sign_up("lou", GOOD, "x").await.unwrap();
        w.accounts.sign_in("lou", GOOD, "x").await.unwrap();
        w.clock.advance(2 * 3600 * 1000);
        w.accounts.sign_in("kim", GOOD, "x").await.unwrap();
    }

    #[tokio::test]
    async fn sessions_per_user_are_capped_oldest_first() {
        let w = world(None).await;
        let first = w.accounts.sign_up("max", GOOD, "x").await.unwrap();
        for _ in 0..MAX_SESSIONS {
            w.clock.advance(1);
            w.accounts.sign_in("max", GOOD, "x").await.unwrap();
        }
        assert_eq!(
            w.accounts.sessions("max").await.unwrap().len(),
            MAX_SESSIONS
        );
        assert!(w.accounts.refresh(&first.refresh_token).await.is_err());
    }
}
