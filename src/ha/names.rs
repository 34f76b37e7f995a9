//! Names that come from the store and go into PostgreSQL.

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`).
const MAX_SLOT_NAME: usize = 63;

/// The replication slot name for a member: lower-cased, every character
/// outside `[a-z0-9_]` replaced by `_`, at most 63 bytes, never empty
/// (PostgreSQL's rules for slot names). Member names come from the store
/// and may hold anything; this never panics. Two names that differ only in
/// the replaced characters share a slot, so keep member names distinct in
/// `[a-z0-9_]`.
pub fn sanitize_slot_name(member: &str) -> String {
    let mut slot: String = member
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_SLOT_NAME)
        .collect();
    if slot.is_empty() {
        slot.push('_');
    }
    slot
}
