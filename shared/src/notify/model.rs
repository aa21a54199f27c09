//! What users and services send to the notification system, checked before
//! anything is written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::NotifyError;
use crate::ports::senders::DevicePlatform;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Push,
    Sms,
    Email,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Push => "push",
            Channel::Sms => "sms",
            Channel::Email => "email",
        }
    }
}

pub const MAX_DEVICES: usize = 20;

fn invalid(code: &'static str, message: impl Into<String>) -> NotifyError {
    NotifyError::Invalid(code, message.into())
}

/// `PUT /api/v1/me/devices`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterDevice {
    pub platform: DevicePlatform,
    pub token: String,
}

impl RegisterDevice {
    pub fn validate(&self) -> Result<(), NotifyError> {
        let t = &self.token;
        let ok = match self.platform {
            // APNs device tokens are hex (32 bytes today; allow growth).
            DevicePlatform::Ios => {
                (64..=200).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_hexdigit())
            }
            // FCM registration tokens (Android and web).
            DevicePlatform::Android | DevicePlatform::Web => {
                (20..=4096).contains(&t.len())
                    && t.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.')
                    })
            }
        };
        if !ok {
            return Err(invalid(
                "invalid_token",
                match self.platform {
                    DevicePlatform::Ios => "an iOS token is 64 to 200 hex digits",
                    _ => "an FCM token is 20 to 4096 letters, digits, `_`, `-`, `:` or `.`",
                },
            ));
        }
        Ok(())
    }

    /// The same token on the same platform is the same device.
    pub fn device_id(&self) -> String {
        let digest = Sha256::digest(format!("{}:{}", self.platform.as_str(), self.token));
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A registered device, as the owner sees it (the token is not echoed).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub device_id: String,
    pub platform: DevicePlatform,
    #[serde(skip)]
    pub token: String,
    pub token_suffix: String,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    pub created_at: String,
    /// Registered again since it was disabled (until it is disabled anew).
    #[serde(skip)]
    pub revived: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    #[serde(default = "yes")]
    pub push: bool,
    #[serde(default = "yes")]
    pub sms: bool,
    #[serde(default = "yes")]
    pub email: bool,
}

fn yes() -> bool {
    true
}

impl Default for Channels {
    fn default() -> Self {
        Self {
            push: true,
            sms: true,
            email: true,
        }
    }
}

impl Channels {
    pub fn allows(&self, channel: Channel) -> bool {
        match channel {
            Channel::Push => self.push,
            Channel::Sms => self.sms,
            Channel::Email => self.email,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuietHours {
    pub start: String,
    pub end: String,
    pub time_zone: String,
}

/// `GET`/`PUT /api/v1/me/notification-settings`. Defaults: every channel and
/// category on, no quiet hours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub channels: Channels,
    #[serde(default)]
    pub categories: BTreeMap<String, bool>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
}

pub fn valid_category(c: &str) -> bool {
    (1..=64).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// E.164: `+`, a non-zero digit, at most 15 digits in all.
pub fn valid_phone(p: &str) -> bool {
    let Some(digits) = p.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// A deliverable address: one `@`, a plain local part, a domain of
/// letter-digit-hyphen labels with a dot.
pub fn valid_email(e: &str) -> bool {
    if e.len() > 254 {
        return false;
    }
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    let local_ok = (1..=64).contains(&local.len())
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
    local_ok && domain_ok
}

/// `HH:MM`, 00:00 to 23:59.
pub fn parse_clock(s: &str) -> Option<(i8, i8)> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m) = (h.parse::<i8>().ok()?, m.parse::<i8>().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some((h, m))
}

impl Settings {
    pub fn validate(&self) -> Result<(), NotifyError> {
        if let Some(p) = &self.phone
            && !valid_phone(p)
        {
            return Err(invalid(
                "invalid_phone",
                format!("phone {p:?} is not an E.164 number such as +821012345678"),
            ));
        }
        if let Some(e) = &self.email
            && !valid_email(e)
        {
            return Err(invalid(
                "invalid_email",
                format!("email {e:?} is not a valid address"),
            ));
        }
        if self.categories.len() > 50 {
            return Err(invalid("invalid_categories", "at most 50 categories"));
        }
        if let Some(bad) = self.categories.keys().find(|c| !valid_category(c)) {
            return Err(invalid(
                "invalid_categories",
                format!("category {bad:?} must be 1 to 64 of a-z, 0-9, `_` or `-`"),
            ));
        }
        if let Some(q) = &self.quiet_hours {
            let (Some(start), Some(end)) = (parse_clock(&q.start), parse_clock(&q.end)) else {
                return Err(invalid(
                    "invalid_quiet_hours",
                    "quietHours start and end are HH:MM, 00:00 to 23:59",
                ));
            };
            if start == end {
                return Err(invalid(
                    "invalid_quiet_hours",
                    "quietHours start and end must differ",
                ));
            }
            if jiff::tz::TimeZone::get(&q.time_zone).is_err() {
                return Err(invalid(
                    "invalid_time_zone",
                    format!(
                        "{:?} is not an IANA time zone such as Asia/Seoul",
                        q.time_zone
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether a category is on (unknown categories are on).
    pub fn category_on(&self, category: &str) -> bool {
        self.categories.get(category).copied().unwrap_or(true)
    }

    /// If `at_ms` falls in the quiet hours, when they end; else `None`.
    pub fn quiet_until(&self, at_ms: u64) -> Option<u64> {
        let q = self.quiet_hours.as_ref()?;
        let tz = jiff::tz::TimeZone::get(&q.time_zone).ok()?;
        let (sh, sm) = parse_clock(&q.start)?;
        let (eh, em) = parse_clock(&q.end)?;
        let now = jiff::Timestamp::from_millisecond(at_ms as i64)
            .ok()?
            .to_zoned_datetime(tz.clone());
        let minutes = |h: i8, m: i8| i32::from(h) * 60 + i32::from(m);
        let t = minutes(now.hour(), now.minute());
        let (start, end) = (minutes(sh, sm), minutes(eh, em));
        let quiet = if start < end {
            t >= start && t < end
        } else {
            t >= start || t < end
        };
        if !quiet {
            return None;
        }
        // The next local `end` after now (today or tomorrow), in this zone.
        let mut date = now.date();
        for _ in 0..2 {
            let candidate = date.at(eh, em, 0, 0).to_zoned_datetime(tz.clone()).ok()?;
            if candidate.timestamp() > now.timestamp() {
                return u64::try_from(candidate.timestamp().as_millisecond()).ok();
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

/// `POST /api/v1/notifications`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendRequest {
    pub event_id: String,
    pub user_id: String,
    pub category: String,
    pub channels: Vec<Channel>,
    pub title: String,
    pub body: String,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    #[serde(default)]
    pub send_at: Option<String>,
    #[serde(default)]
    pub critical: bool,
}

pub const MAX_TITLE: usize = 200;
pub const MAX_BODY: usize = 2000;
pub const MAX_DATA: usize = 4096;
/// APNs takes 4,096 bytes of payload and FCM 4,000: a push's title, body and
/// data must fit the smaller with room for the envelope.
pub const MAX_PUSH_PAYLOAD: usize = 3_900;
/// SNS sends at most 1,600 characters in one SMS publish (title and body).
pub const MAX_SMS_CHARS: usize = 1_600;
/// `sendAt` at most this far ahead.
pub const MAX_SCHEDULE_MS: u64 = 365 * 24 * 3600 * 1000;

impl SendRequest {
    /// Checks the request; returns `sendAt` in ms, if any.
    pub fn validate(&self, now_ms: u64) -> Result<Option<u64>, NotifyError> {
        let printable = |s: &str| s.chars().all(|c| !c.is_control());
        if self.event_id.is_empty() || self.event_id.len() > 128 || !printable(&self.event_id) {
            return Err(invalid(
                "invalid_event_id",
                "eventId must be 1 to 128 printable characters",
            ));
        }
        let user_ok = (1..=128).contains(&self.user_id.len())
            && self
                .user_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
        if !user_ok {
            return Err(invalid(
                "invalid_user_id",
                "userId must be 1 to 128 letters, digits, `-`, `_`, `.` or `@`",
            ));
        }
        if !valid_category(&self.category) {
            return Err(invalid(
                "invalid_category",
                "category must be 1 to 64 of a-z, 0-9, `_` or `-`",
            ));
        }
        if self.channels.is_empty() {
            return Err(invalid(
                "invalid_channels",
                "channels must name at least one of push, sms, email",
            ));
        }
        let mut seen = self.channels.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != self.channels.len() {
            return Err(invalid("invalid_channels", "a channel is named twice"));
        }
        if self.title.trim().is_empty() || self.title.chars().count() > MAX_TITLE {
            return Err(invalid(
                "invalid_title",
                format!("title must be 1 to {MAX_TITLE} characters"),
            ));
        }
        if self.body.trim().is_empty() || self.body.chars().count() > MAX_BODY {
            return Err(invalid(
                "invalid_body",
                format!("body must be 1 to {MAX_BODY} characters"),
            ));
        }
        if let Some(data) = &self.data {
            if !data.is_object() {
                return Err(invalid("invalid_data", "data must be a JSON object"));
            }
            if data.to_string().len() > MAX_DATA {
                return Err(invalid(
                    "invalid_data",
                    format!("data must be at most {MAX_DATA} bytes"),
                ));
            }
        }
        if self.channels.contains(&Channel::Push) {
            let payload = serde_json::json!({
                "aps": {"alert": {"title": self.title, "body": self.body}},
                "data": self.data,
            })
            .to_string()
            .len();
            if payload > MAX_PUSH_PAYLOAD {
                return Err(invalid(
                    "invalid_push_payload",
                    format!(
                        "a push's title, body and data take {payload} bytes; APNs and FCM take at most {MAX_PUSH_PAYLOAD}"
                    ),
                ));
            }
        }
        let sms_chars = self.title.chars().count() + 1 + self.body.chars().count();
        if self.channels.contains(&Channel::Sms) && sms_chars > MAX_SMS_CHARS {
            return Err(invalid(
                "invalid_body",
                format!("an SMS's title and body are at most {MAX_SMS_CHARS} characters together"),
            ));
        }
        let send_at = match &self.send_at {
            None => None,
            Some(raw) => {
                let t = humantime::parse_rfc3339_weak(raw).map_err(|e| {
                    invalid(
                        "invalid_send_at",
                        format!("sendAt must be an RFC 3339 time: {e}"),
                    )
                })?;
                let ms = t
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .map_err(|_| invalid("invalid_send_at", "sendAt is before 1970"))?;
                if ms > now_ms + MAX_SCHEDULE_MS {
                    return Err(invalid(
                        "invalid_send_at",
                        "sendAt is more than a year ahead",
                    ));
                }
                Some(ms)
            }
        };
        Ok(send_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_and_emails() {
        for good in ["+821012345678", "+14155550100", "+4420712345"] {
            assert!(valid_phone(good), "{good}");
        }
        for bad in [
            "821012345678",
            "+0101234567",
            "+82 10 1234",
            "+1234",
            "+1234567890123456",
            "+82-10-1234-5678",
        ] {
            assert!(!valid_phone(bad), "{bad}");
        }
        for good in ["nina@example.com", "a.b+tag@mail.example.co.kr"] {
            assert!(valid_email(good), "{good}");
        }
        for bad in [
            "",
            "nina",
            "nina@",
            "@example.com",
            "nina@example",
            "ni na@example.com",
            "nina@@example.com",
            "nina@exa_mple.com",
            ".nina@example.com",
            "nina@example.c0m",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn the_issue_settings_parse_and_validate() {
        let s: Settings = serde_json::from_str(
            r#"{"channels": {"push": true, "sms": false, "email": true},
               "categories": {"marketing": false},
               "phone": "+821012345678", "email": "nina@example.com",
               "quietHours": {"start": "22:00", "end": "07:00", "timeZone": "Asia/Seoul"}}"#,
        )
        .unwrap();
        s.validate().unwrap();
        assert!(!s.channels.allows(Channel::Sms));
        assert!(!s.category_on("marketing"));
        assert!(s.category_on("security"));
        let mut bad = s.clone();
        bad.quiet_hours.as_mut().unwrap().time_zone = "Mars/Olympus".into();
        assert!(matches!(
            bad.validate(),
            Err(NotifyError::Invalid("invalid_time_zone", _))
        ));
        let mut bad = s.clone();
        bad.quiet_hours.as_mut().unwrap().start = "25:00".into();
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<Settings>(r#"{"colour": "red"}"#).is_err());
        assert_eq!(Settings::default().channels, Channels::default());
    }

    #[test]
    fn quiet_hours_end_in_the_users_zone() {
        let s: Settings = serde_json::from_str(
            r#"{"quietHours": {"start": "22:00", "end": "07:00", "timeZone": "Asia/Seoul"}}"#,
        )
        .unwrap();
        // 2026-11-26T14:30:00Z is 23:30 in Seoul: quiet until 07:00 KST = 22:00Z.
        let at = 1_795_703_400_000u64; // 2026-11-26T14:30:00Z
        assert_eq!(
            crate::shortener::link::format_instant(at),
            "2026-11-26T14:30:00.000Z"
        );
        let until = s.quiet_until(at).unwrap();
        assert_eq!(
            crate::shortener::link::format_instant(until),
            "2026-11-26T22:00:00.000Z"
        );
        // 03:00Z is 12:00 in Seoul: not quiet.
        assert_eq!(s.quiet_until(at + 12 * 3600 * 1000 + 30 * 60 * 1000), None);
        // A same-day window.
        let lunch: Settings = serde_json::from_str(
            r#"{"quietHours": {"start": "12:00", "end": "13:00", "timeZone": "UTC"}}"#,
        )
        .unwrap();
        let noon_thirty = 1_795_703_400_000u64 - 2 * 3600 * 1000; // 12:30Z
        assert_eq!(
            lunch
                .quiet_until(noon_thirty)
                .map(crate::shortener::link::format_instant),
            Some("2026-11-26T13:00:00.000Z".into())
        );
    }

    #[test]
    fn push_and_sms_sizes_are_checked_only_for_those_channels() {
        let request = |channels: &str, body: usize, data: usize| -> SendRequest {
            serde_json::from_value(serde_json::json!({
                "eventId": "e", "userId": "u", "category": "c",
                "channels": serde_json::from_str::<serde_json::Value>(channels).unwrap(),
                "title": "t", "body": "b".repeat(body), "data": {"d": "x".repeat(data)},
            }))
            .unwrap()
        };
        let code = |r: SendRequest| match r.validate(0) {
            Err(NotifyError::Invalid(code, _)) => code,
            Err(e) => panic!("{e}"),
            Ok(_) => "ok",
        };
        assert_eq!(code(request(r#"["push"]"#, 1_900, 1_900)), "ok");
        assert_eq!(
            code(request(r#"["push"]"#, 1_900, 2_100)),
            "invalid_push_payload"
        );
        assert_eq!(code(request(r#"["email"]"#, 1_900, 2_100)), "ok");
        assert_eq!(code(request(r#"["sms"]"#, 1_598, 0)), "ok");
        assert_eq!(code(request(r#"["sms"]"#, 1_599, 0)), "invalid_body");
        assert_eq!(code(request(r#"["email"]"#, 1_999, 0)), "ok");
    }

    #[test]
    fn devices_are_checked_and_named_by_their_token() {
        let ios = RegisterDevice {
            platform: DevicePlatform::Ios,
            token: "ab".repeat(32),
        };
        ios.validate().unwrap();
        assert_eq!(ios.device_id(), ios.clone().device_id());
        assert_eq!(ios.device_id().len(), 16);
        let bad = RegisterDevice {
            platform: DevicePlatform::Ios,
            token: "xyz".into(),
        };
        assert!(bad.validate().is_err());
        let fcm = RegisterDevice {
            platform: DevicePlatform::Android,
            token: "fcm:APA91b-token_value.1234".into(),
        };
        fcm.validate().unwrap();
        assert_ne!(fcm.device_id(), ios.device_id());
    }
}
