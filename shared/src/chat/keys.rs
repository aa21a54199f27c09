//! The chat tables' layout. Chat table: a conversation's partition holds its
//! meta, members, messages, event log, idempotency keys and the delivery
//! watermark; a user's partition mirrors their memberships; a user's stream
//! partition is their sync log. Connections table: connections, presence,
//! heartbeat buckets and the sweeper's watermark.

use crate::feed::keys::pad;
use crate::ports::table::{Key, SortKey};

pub const META: &str = "meta";
pub const MEMBER_PREFIX: &str = "member#";
pub const MSG_PREFIX: &str = "msg#";
pub const EVENT_PREFIX: &str = "ev#";
pub const CONV_PREFIX: &str = "conv#";
pub const ENTRY_PREFIX: &str = "p#";
pub const OUTBOX_SHARDS: u64 = 8;

/// The news feed's block items between two users, both ways.
pub fn block_keys(a: &str, b: &str) -> [Key; 2] {
    [
        crate::feed::keys::block_key(a, b),
        crate::feed::keys::block_key(b, a),
    ]
}

pub fn conv_pk(cid: &str) -> String {
    format!("conv#{cid}")
}

pub fn meta_key(cid: &str) -> Key {
    Key::new(conv_pk(cid), META)
}

pub fn member_key(cid: &str, user: &str) -> Key {
    Key::new(conv_pk(cid), format!("{MEMBER_PREFIX}{user}"))
}

pub fn message_key(cid: &str, id: u64) -> Key {
    Key::new(conv_pk(cid), format!("{MSG_PREFIX}{}", pad(id)))
}

pub fn event_key(cid: &str, n: u64) -> Key {
    Key::new(conv_pk(cid), format!("{EVENT_PREFIX}{}", pad(n)))
}

pub fn idem_key(cid: &str, user: &str, client_id: &str) -> Key {
    Key::new(conv_pk(cid), format!("idem#{user}#{client_id}"))
}

pub fn delivered_key(cid: &str) -> Key {
    Key::new(conv_pk(cid), "delivered")
}

pub fn user_pk(user: &str) -> String {
    format!("user#{user}")
}

pub fn membership_key(user: &str, cid: &str) -> Key {
    Key::new(user_pk(user), format!("{CONV_PREFIX}{cid}"))
}

pub fn user_count_key(user: &str) -> Key {
    Key::new(user_pk(user), "count")
}

pub fn stream_pk(user: &str) -> String {
    format!("stream#{user}")
}

pub fn stream_head_key(user: &str) -> Key {
    Key::new(stream_pk(user), "head")
}

pub fn stream_entry_key(user: &str, position: u64) -> Key {
    Key::new(stream_pk(user), format!("{ENTRY_PREFIX}{}", pad(position)))
}

pub fn stream_seen_key(user: &str, event_id: u64) -> Key {
    Key::new(stream_pk(user), format!("seen#{}", pad(event_id)))
}

/// Stream entries with positions in `lo..=hi`.
pub fn entry_range(lo: u64, hi: u64) -> SortKey {
    SortKey::Between(
        format!("{ENTRY_PREFIX}{}", pad(lo)),
        format!("{ENTRY_PREFIX}{}", pad(hi)),
    )
}

/// Events `lo..=hi` of a conversation's log.
pub fn event_range(lo: u64, hi: u64) -> SortKey {
    SortKey::Between(
        format!("{EVENT_PREFIX}{}", pad(lo)),
        format!("{EVENT_PREFIX}{}", pad(hi)),
    )
}

/// Messages with ids in `lo..=hi`.
pub fn message_range(lo: u64, hi: u64) -> SortKey {
    SortKey::Between(
        format!("{MSG_PREFIX}{}", pad(lo)),
        format!("{MSG_PREFIX}{}", pad(hi)),
    )
}

pub fn outbox_pk(shard: u64) -> String {
    format!("outbox#{shard}")
}

pub fn outbox_key(cid: &str, n: u64) -> Key {
    let shard = fnv(cid) % OUTBOX_SHARDS;
    Key::new(outbox_pk(shard), format!("{cid}#{}", pad(n)))
}

/// A stable, cheap hash for spreading keys over shards.
pub fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// Connections table.

pub fn connection_key(connection_id: &str) -> Key {
    Key::new(format!("conn#{connection_id}"), "conn")
}

pub fn presence_key(user: &str) -> Key {
    Key::new(format!("presence#{user}"), "presence")
}

pub fn bucket_pk(bucket: u64) -> String {
    format!("hb#{bucket}")
}

pub fn bucket_key(bucket: u64, connection_id: &str) -> Key {
    Key::new(bucket_pk(bucket), connection_id)
}

pub fn sweep_key() -> Key {
    Key::new("sweep", "watermark")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_sort_as_numbers_and_stay_apart_from_the_head() {
        assert!(stream_entry_key("u", 9).sk < stream_entry_key("u", 10).sk);
        assert!(entry_range(0, u64::MAX >> 1).matches(&stream_entry_key("u", 5).sk));
        assert!(!entry_range(0, u64::MAX >> 1).matches("head"));
        assert!(!entry_range(0, u64::MAX >> 1).matches(&stream_seen_key("u", 5).sk));
        assert!(event_key("c", 2).sk < event_key("c", 11).sk);
    }
}
