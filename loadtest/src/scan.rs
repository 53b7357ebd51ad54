//! Cheap field extraction from the server's JSON, so 10,000 clients can keep up with
//! hundreds of thousands of messages a second without a full parse of each.

use std::sync::LazyLock;

use memchr::memmem::Finder;

static SEQ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"seq\":"));
static SENT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"text\":\"t="));

/// The room event's `seq`.
pub fn seq(json: &[u8]) -> Option<u64> {
    digits_after(json, &SEQ)
}

/// The send time a load-test chat message carries: its text starts `t=<micros> `.
pub fn sent_micros(json: &[u8]) -> Option<u64> {
    digits_after(json, &SENT)
}

fn digits_after(json: &[u8], finder: &Finder<'_>) -> Option<u64> {
    let start = finder.find(json)? + finder.needle().len();
    let mut value: u64 = 0;
    let mut any = false;
    for byte in json[start..].iter().take_while(|b| b.is_ascii_digit()) {
        value = value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
        any = true;
    }
    any.then_some(value)
}

/// The string right after `"name":"` (up to the next quote; our values are unescaped).
pub fn string_field<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let pattern = format!("\"{name}\":\"");
    let start = json.find(&pattern)? + pattern.len();
    let rest = &json[start..];
    rest.find('"').map(|end| &rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = r#"{"room":"r","seq":42,"ts":1,"id":"e1","type":"chat","from":{"id":"a","name":"A"},"text":"t=1700000000123456 xxx"}"#;

    #[test]
    fn reads_the_fields_a_load_test_needs() {
        assert_eq!(seq(CHAT.as_bytes()), Some(42));
        assert_eq!(string_field(CHAT, "type"), Some("chat"));
        assert_eq!(sent_micros(CHAT.as_bytes()), Some(1_700_000_000_123_456));
        assert_eq!(seq(br#"{"type":"presence","viewers":3}"#), None);
        assert_eq!(sent_micros(br#"{"type":"chat","text":"hello"}"#), None);
    }
}
