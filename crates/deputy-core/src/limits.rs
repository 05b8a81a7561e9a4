//! Bounds on everything a user sends. Checked at submit, so nothing oversized is stored.

pub const MAX_COMMAND_BYTES: usize = 128 * 1024;
pub const MAX_ARGV: usize = 4096;
pub const MAX_NAME_BYTES: usize = 256;
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_BYTES: usize = 128;
pub const MAX_GROUP_BYTES: usize = 64;
pub const MAX_ENV_VARS: usize = 256;
pub const MAX_ENV_KEY_BYTES: usize = 256;
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
pub const MAX_CWD_BYTES: usize = 4096;
pub const MAX_DEPENDENCIES: usize = 1000;
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
pub const MAX_TIMEOUT_MS: u64 = 30 * 24 * 3600 * 1000;
pub const MAX_ATTEMPTS: u32 = 100;
pub const MIN_OUTPUT_CAP: u64 = 1024;
pub const MAX_OUTPUT_CAP: u64 = 1 << 30;
pub const DEFAULT_OUTPUT_CAP: u64 = 10 << 20;
pub const MAX_BATCH: usize = 1000;
pub const MAX_GROUP_PARALLEL: u32 = 10_000;

/// Group names: letters, digits, `-`, `_`, `.`; 1 to 64 characters.
pub fn check_group_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_GROUP_BYTES {
        return Err(format!(
            "a group name must be 1 to {MAX_GROUP_BYTES} characters long"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "group name `{}` may only use letters, digits, `-`, `_` and `.`",
            crate::id::truncate_for_message(name)
        ));
    }
    Ok(())
}
