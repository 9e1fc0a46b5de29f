/// A new identifier: 32 lowercase hex digits of a UUIDv7, so ids sort by creation time
/// (newest-first listings and cursors need no extra column) and are easy to type.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Whether `s` has the shape of an id made by [`new_id`].
pub fn is_valid_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id();
        assert!(a < b, "{a} should sort before {b}");
        assert!(is_valid_id(&a));
        assert!(!is_valid_id("../etc/passwd"));
    }
}
