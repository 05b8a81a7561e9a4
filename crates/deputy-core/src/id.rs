//! Identifiers. A task id is a UUIDv7 (time-ordered, so it says when a task was made),
//! but its text form puts the random bytes first: UUIDv7's leading characters are a
//! timestamp shared by every task created in the same minute, so a short prefix of the
//! standard form would never tell two tasks apart. Printing the bytes reversed gives
//! ids whose first 8 characters are random, which is what a user types.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Length of a task id's text form.
pub const ID_LEN: usize = 32;
/// Shortest prefix accepted in place of a full id.
pub const MIN_PREFIX: usize = 8;
/// Length of the short form shown in tables.
pub const SHORT_LEN: usize = 12;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(Uuid);

impl TaskId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// The short form printed in tables: a prefix long enough to be unique in practice.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(SHORT_LEN);
        s
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

/// Lowercase hex of 16 bytes, encoded on the stack: every statement that names a task
/// binds its id as text, and a `write!` per byte made formatting ids a visible share of
/// the store's writer thread (`to_string` also grew its buffer three times).
fn hex<'a>(bytes: impl Iterator<Item = &'a u8>) -> [u8; ID_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; ID_LEN];
    for (pair, b) in text.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    text
}

fn unhex(s: &str, reversed: bool) -> Option<[u8; 16]> {
    if s.len() != ID_LEN || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // Either case: every hex digit is one ASCII byte, checked above.
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let text = s.as_bytes();
    let mut bytes = [0u8; 16];
    for (i, slot) in bytes.iter_mut().enumerate() {
        let at = if reversed { 15 - i } else { i };
        *slot = digit(text[at * 2])? << 4 | digit(text[at * 2 + 1])?;
    }
    Some(bytes)
}

impl TaskId {
    /// The form a database stores: the UUIDv7's bytes in their own, time-ordered order.
    /// Every index keyed by task (the tasks' own, attempts, events by task, output) then
    /// takes new entries at its right edge, where the text form's random first bytes
    /// put each one on a random page: a commit of 90 tasks dirtied about 90 pages per
    /// such index, and the noop benchmark wrote 6.6 pages per task to the WAL.
    pub fn key(&self) -> String {
        let text = hex(self.0.as_bytes().iter());
        // Only ASCII hex digits were written.
        String::from_utf8_lossy(&text).into_owned()
    }

    /// Reads what [`TaskId::key`] wrote.
    pub fn from_key(key: &str) -> Result<Self, IdError> {
        unhex(key, false)
            .map(|b| Self(Uuid::from_bytes(b)))
            .ok_or_else(|| IdError::Malformed(truncate_for_message(key)))
    }

    /// A `LIKE` pattern matching the keys of the ids whose text form starts with
    /// `prefix` (lowercase hex, validated by [`IdRef`]): the text form is the key's bytes
    /// in reverse order, so a text prefix fixes the key's last characters.
    pub fn key_pattern_for_prefix(prefix: &str) -> String {
        let mut pattern = [b'_'; ID_LEN];
        for (i, c) in prefix.bytes().take(ID_LEN).enumerate() {
            // Character i of the text is nibble i % 2 of byte i / 2 counted from the
            // end; in the key that byte is at 15 - i / 2, its nibbles in the same order.
            pattern[(15 - i / 2) * 2 + i % 2] = c;
        }
        String::from_utf8_lossy(&pattern).into_owned()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = hex(self.0.as_bytes().iter().rev());
        // Only ASCII hex digits were written.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({self})")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "`{0}` is not a task id: ids are {ID_LEN} hex characters, or a prefix of at least {MIN_PREFIX}"
    )]
    Malformed(String),
}

impl FromStr for TaskId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        unhex(s, true)
            .map(|b| Self(Uuid::from_bytes(b)))
            .ok_or_else(|| IdError::Malformed(truncate_for_message(s)))
    }
}

impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.to_ascii_lowercase()
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What a user may type where a task id is expected: a full id or a unique prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdRef {
    Full(TaskId),
    Prefix(String),
}

impl FromStr for IdRef {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        if lower.len() == ID_LEN {
            return lower.parse().map(IdRef::Full);
        }
        if lower.len() < MIN_PREFIX
            || lower.len() > ID_LEN
            || !lower.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(IdError::Malformed(truncate_for_message(s)));
        }
        Ok(IdRef::Prefix(lower))
    }
}

impl fmt::Display for IdRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdRef::Full(id) => id.fmt(f),
            IdRef::Prefix(p) => f.write_str(p),
        }
    }
}

impl Serialize for IdRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IdRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A daemon's identity in the store. Persisted in the data dir so a restarted daemon
/// recognises the tasks its previous life left running.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    pub fn generate() -> Self {
        Self(format!(
            "node-{}",
            &Uuid::now_v7().simple().to_string()[20..]
        ))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn truncate_for_message(s: &str) -> String {
    crate::text::cut_bytes(s, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An id whose every byte is told apart from its neighbours.
    fn sample() -> TaskId {
        TaskId::from_uuid(Uuid::from_bytes([
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x89, 0xab, 0xcd, 0xef, 0xf0, 0x1a,
            0xa1, 0xff,
        ]))
    }

    #[test]
    fn text_form_round_trips_and_starts_random() {
        let a = TaskId::new();
        let b = TaskId::new();
        assert_eq!(a.to_string().len(), ID_LEN);
        assert_eq!(a.to_string().parse::<TaskId>().unwrap(), a);
        // Two ids made in the same millisecond still differ in their first 8 characters
        // (with overwhelming probability), because the random bytes come first.
        assert_ne!(a.to_string()[..8], b.to_string()[..8]);
    }

    #[test]
    fn text_form_is_the_bytes_reversed_in_lowercase_hex() {
        let id = sample();
        assert_eq!(id.to_string(), "ffa11af0efcdab890706050403020100");
        assert_eq!(
            format!("{id:?}"),
            "TaskId(ffa11af0efcdab890706050403020100)"
        );
    }

    #[test]
    fn the_key_is_time_ordered_and_round_trips() {
        let id = sample();
        assert_eq!(id.key(), "000102030405060789abcdeff01aa1ff");
        assert_eq!(TaskId::from_key(&id.key()).unwrap(), id);
        assert!(TaskId::from_key(&id.to_string()).unwrap() != id);
        assert!(TaskId::from_key("nothex").is_err());
        assert_eq!(TaskId::from_key(&id.key().to_uppercase()).unwrap(), id);
        // Ids made later have larger keys (UUIDv7 leads with the time), whatever their
        // random bytes.
        let at = |ms: u64| {
            let ts = uuid::Timestamp::from_unix(
                uuid::NoContext,
                ms / 1000,
                (ms % 1000) as u32 * 1_000_000,
            );
            TaskId::from_uuid(Uuid::new_v7(ts))
        };
        for ms in [1, 999, 1_000, 1_700_000_000_123] {
            assert!(at(ms + 1).key() > at(ms).key(), "{ms}");
        }
    }

    #[test]
    fn a_text_prefix_becomes_a_pattern_over_the_key() {
        let id = sample();
        let text = id.to_string();
        let key = id.key();
        for len in [MIN_PREFIX, 9, 12, 31, ID_LEN] {
            let pattern = TaskId::key_pattern_for_prefix(&text[..len]);
            assert_eq!(pattern.len(), ID_LEN);
            assert_eq!(pattern.bytes().filter(|c| *c != b'_').count(), len);
            let matches = pattern
                .bytes()
                .zip(key.bytes())
                .all(|(p, k)| p == b'_' || p == k);
            assert!(matches, "{pattern} against {key}");
        }
        assert_eq!(
            TaskId::key_pattern_for_prefix("ffa11af0e"),
            format!("{}e_f01aa1ff", "_".repeat(22))
        );
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(matches!("abcdef12".parse::<IdRef>(), Ok(IdRef::Prefix(_))));
        assert!("abc".parse::<IdRef>().is_err());
        assert!("zzzzzzzz".parse::<IdRef>().is_err());
        let id = TaskId::new();
        assert_eq!(id.to_string().parse::<IdRef>().unwrap(), IdRef::Full(id));
        assert_eq!(
            id.to_string().to_uppercase().parse::<IdRef>().unwrap(),
            IdRef::Full(id)
        );
    }
}
