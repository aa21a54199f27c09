//! Short codes. A generated code is a number from a shared counter, passed
//! through a keyed permutation, written in base62: 7 characters for the first
//! 62^7 links, then 8. Distinct numbers give distinct codes (the permutation is
//! a bijection), so no code is ever checked before it is written, and
//! consecutive numbers give unrelated codes, so none can be guessed from
//! another.

use hmac::{Hmac, Mac};
use sha2::Sha256;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Generated codes have this many characters until the numbers run past 62^7.
pub const GENERATED_LEN: usize = 7;
pub const ALIAS_MIN: usize = 3;
pub const ALIAS_MAX: usize = 64;
const ROUNDS: u8 = 6;

/// A link's code, as it appears in the short URL's path: a generated base62
/// code or a custom alias.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortCode(String);

impl ShortCode {
    /// Any syntactically possible code (generated or alias). Others cannot
    /// name a link, so a lookup of them is a plain 404.
    pub fn parse(s: &str) -> Option<ShortCode> {
        let ok = (1..=ALIAS_MAX).contains(&s.len()) && s.bytes().all(is_code_byte);
        ok.then(|| ShortCode(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_trusted(s: String) -> ShortCode {
        ShortCode(s)
    }
}

impl std::fmt::Display for ShortCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_code_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Why an alias is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    #[error("alias must be {ALIAS_MIN} to {ALIAS_MAX} characters of letters, digits, `_` or `-`")]
    Syntax,
    #[error("alias {0:?} is reserved")]
    Reserved(String),
}

/// Path segments the system routes itself (first segments, and the segments
/// after `/api/v1/`, where `GET /api/v1/{code}` also redirects), and names
/// kept for it and for the subsystems to come. An alias equal to one (in any
/// case) would shadow a route or confuse users.
pub const RESERVED: &[&str] = &[
    "api",
    "ids",
    "shorten",
    "urls",
    "notifications",
    "ratelimit",
    "feed",
    "chat",
    "media",
    "users",
    "posts",
    "conversations",
    "messages",
    "health",
    "local",
    "ws",
    "admin",
    "static",
    "assets",
    "docs",
    "openapi",
    "login",
    "logout",
    "signup",
    "auth",
    "me",
    "www",
    "app",
    "status",
    "metrics",
    "favicon",
    "robots",
    "sitemap",
    "well-known",
    "_next",
];

/// Checks a requested alias: syntax, then the reserved words.
pub fn validate_alias(alias: &str) -> Result<ShortCode, AliasError> {
    let ok = (ALIAS_MIN..=ALIAS_MAX).contains(&alias.len()) && alias.bytes().all(is_code_byte);
    if !ok {
        return Err(AliasError::Syntax);
    }
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(alias)) {
        return Err(AliasError::Reserved(alias.to_owned()));
    }
    Ok(ShortCode(alias.to_owned()))
}

/// `n` in base62, left-padded with `0` to `len` characters.
fn base62(mut n: u64, len: usize) -> String {
    let mut out = vec![ALPHABET[0]; len];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A keyed pseudo-random permutation of `[0, 62^len)` for each code length: a
/// balanced Feistel network over the smallest even bit width that covers the
/// domain, with HMAC-SHA256 as the round function and cycle walking to stay
/// inside the domain (fewer than 1.3 rounds trips on average).
#[derive(Clone)]
pub struct CodePermutation {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for CodePermutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodePermutation").finish_non_exhaustive()
    }
}

impl CodePermutation {
    /// The key must stay the same for the life of the data: another key maps
    /// future numbers onto codes already given out.
    pub fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of any length.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        Self { mac }
    }

    fn round(&self, round: u8, half_bits: u32, value: u64) -> u64 {
        let mut mac = self.mac.clone();
        mac.update(&[round, half_bits as u8]);
        mac.update(&value.to_be_bytes());
        let digest = mac.finalize().into_bytes();
        let mut word = [0u8; 8];
        word.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(word) & ((1u64 << half_bits) - 1)
    }

    fn feistel(&self, value: u64, half_bits: u32) -> u64 {
        let mask = (1u64 << half_bits) - 1;
        let (mut left, mut right) = (value >> half_bits, value & mask);
        for r in 0..ROUNDS {
            let next = left ^ self.round(r, half_bits, right);
            left = right;
            right = next;
        }
        (left << half_bits) | right
    }

    /// The image of `n` in `[0, domain)`; `n` must be below `domain`.
    pub fn permute(&self, n: u64, domain: u64) -> u64 {
        let bits = 64 - (domain - 1).leading_zeros();
        let half_bits = bits.div_ceil(2).max(1);
        let mut value = self.feistel(n, half_bits);
        while value >= domain {
            value = self.feistel(value, half_bits);
        }
        value
    }

    /// The code for counter value `n`: 7 characters for `n < 62^7`, then the
    /// 8-character space, and so on. Codes of different lengths never meet.
    pub fn code(&self, n: u64) -> ShortCode {
        let mut len = GENERATED_LEN;
        let mut offset = n;
        loop {
            let domain = 62u64.checked_pow(len as u32).unwrap_or(u64::MAX);
            if offset < domain || len >= 10 {
                return ShortCode(base62(self.permute(offset.min(domain - 1), domain), len));
            }
            offset -= domain;
            len += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_seven_base62_characters_distinct_and_not_sequential() {
        let p = CodePermutation::new(b"test key for codes");
        let codes: Vec<_> = (0..20_000u64).map(|n| p.code(n)).collect();
        assert!(codes.iter().all(|c| c.as_str().len() == GENERATED_LEN));
        assert!(
            codes
                .iter()
                .all(|c| c.as_str().bytes().all(|b| b.is_ascii_alphanumeric()))
        );
        let distinct: HashSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), codes.len());
        // Neighbours share no long prefix and are not in order.
        let ordered = codes.windows(2).filter(|w| w[0] < w[1]).count();
        assert!(
            (8_000..12_000).contains(&ordered),
            "{ordered} of 19,999 in order"
        );
        let shared_prefix = codes
            .windows(2)
            .filter(|w| w[0].as_str()[..3] == w[1].as_str()[..3])
            .count();
        assert!(
            shared_prefix < 10,
            "{shared_prefix} neighbours share a prefix"
        );
    }

    #[test]
    fn another_key_gives_other_codes() {
        let a = CodePermutation::new(b"key a");
        let b = CodePermutation::new(b"key b");
        let same = (0..1000u64).filter(|&n| a.code(n) == b.code(n)).count();
        assert_eq!(same, 0);
    }

    #[test]
    fn past_62_to_the_7_codes_grow_to_eight_characters() {
        let p = CodePermutation::new(b"k");
        let first8 = 62u64.pow(7);
        assert_eq!(p.code(first8 - 1).as_str().len(), 7);
        assert_eq!(p.code(first8).as_str().len(), 8);
        assert_ne!(p.code(first8), p.code(first8 + 1));
    }

    #[test]
    fn the_permutation_is_a_bijection_on_a_small_domain() {
        let p = CodePermutation::new(b"k");
        for domain in [2u64, 3, 62, 1000, 3844] {
            let image: HashSet<u64> = (0..domain).map(|n| p.permute(n, domain)).collect();
            assert_eq!(image.len() as u64, domain);
            assert!(image.iter().all(|&v| v < domain));
        }
    }

    #[test]
    fn aliases_follow_the_syntax_and_avoid_reserved_words() {
        assert!(validate_alias("my-link_1").is_ok());
        assert_eq!(validate_alias("ab"), Err(AliasError::Syntax));
        assert_eq!(validate_alias(&"a".repeat(65)), Err(AliasError::Syntax));
        assert_eq!(validate_alias("a b c"), Err(AliasError::Syntax));
        assert_eq!(validate_alias("한국어"), Err(AliasError::Syntax));
        assert!(matches!(
            validate_alias("API"),
            Err(AliasError::Reserved(_))
        ));
        assert!(matches!(
            validate_alias("health"),
            Err(AliasError::Reserved(_))
        ));
        assert!(ShortCode::parse("favicon.ico").is_none());
        assert!(ShortCode::parse("").is_none());
    }

    proptest! {
        #[test]
        fn distinct_numbers_never_share_a_code(a in 0u64..62u64.pow(8), b in 0u64..62u64.pow(8)) {
            let p = CodePermutation::new(b"prop key");
            prop_assert_eq!(a == b, p.code(a) == p.code(b));
        }
    }
}
