use crate::json::quote;
use crate::EventError;

/// Decodes an object key as S3 writes it in event notifications.
///
/// S3 form-urlencodes notification keys (`application/x-www-form-urlencoded`): a space
/// becomes `+` and other bytes outside a safe set become `%XX`, so `a b+c%.csv` arrives as
/// `a+b%2Bc%25.csv`. Decoding is the reverse, in that order: `+` is a space, then each `%XX`
/// is a byte, and the bytes must be UTF-8 as every key is.
///
/// A `%` not followed by two hex digits is an error rather than kept as it is (which is what
/// `percent_encoding::percent_decode` does): S3 never writes one, so the key did not come from
/// S3 as expected, and a guessed key could name a different object than the event meant.
///
/// ```
/// use s3_compressor_events::decode_key;
///
/// assert_eq!(
///     decode_key("incoming/a+b%2Bc%25.csv").ok().as_deref(),
///     Some("incoming/a b+c%.csv")
/// );
/// assert!(decode_key("incoming/100%.csv").is_err());
/// ```
pub fn decode_key(raw: &str) -> Result<String, EventError> {
    decode_key_at(raw, "key")
}

/// [`decode_key`], naming the key by its path in the payload in errors.
pub(crate) fn decode_key_at(raw: &str, at: &str) -> Result<String, EventError> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut offset = 0;
    while let Some(&byte) = bytes.get(offset) {
        match byte {
            b'+' => {
                decoded.push(b' ');
                offset += 1;
            }
            b'%' => {
                let high = bytes.get(offset + 1).copied().and_then(hex_digit);
                let low = bytes.get(offset + 2).copied().and_then(hex_digit);
                let (Some(high), Some(low)) = (high, low) else {
                    let escape: String = raw
                        .get(offset..)
                        .unwrap_or_default()
                        .chars()
                        .take(3)
                        .collect();
                    return Err(EventError::InvalidEscape {
                        at: at.to_owned(),
                        key: quote(raw),
                        escape: quote(&escape),
                        offset,
                    });
                };
                decoded.push((high << 4) | low);
                offset += 3;
            }
            other => {
                decoded.push(other);
                offset += 1;
            }
        }
    }
    String::from_utf8(decoded).map_err(|_| EventError::NotUtf8 {
        at: at.to_owned(),
        key: quote(raw),
    })
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    use proptest::prelude::*;

    /// What form-urlencoding leaves alone besides letters and digits (the WHATWG
    /// `application/x-www-form-urlencoded` set plus `~`, which RFC 3986 also calls unreserved).
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');

    /// Encodes like S3 does: spaces as `+`, every other byte outside [`UNRESERVED`] as `%XX`.
    fn form_encode(key: &str) -> String {
        key.split(' ')
            .map(|part| utf8_percent_encode(part, UNRESERVED).to_string())
            .collect::<Vec<_>>()
            .join("+")
    }

    #[test]
    fn plus_is_a_space_and_escapes_are_bytes() {
        for (raw, key) in [
            ("incoming/report.csv", "incoming/report.csv"),
            ("incoming/a+b.csv", "incoming/a b.csv"),
            ("incoming/a%2Bb.csv", "incoming/a+b.csv"),
            ("incoming/100%25.csv", "incoming/100%.csv"),
            ("incoming/%2525", "incoming/%25"),
            ("incoming/%E6%97%A5%E6%9C%AC.txt", "incoming/日本.txt"),
            ("incoming/%e6%97%a5.txt", "incoming/日.txt"),
            ("incoming%2Fnested/x", "incoming/nested/x"),
            ("++", "  "),
            ("", ""),
            // Already-decoded characters that S3 would have escaped are kept as they are.
            ("incoming/日本 x.txt", "incoming/日本 x.txt"),
        ] {
            assert_eq!(decode_key(raw).expect(raw), key, "decoding {raw}");
        }
    }

    #[test]
    fn invalid_escapes_are_refused_with_where_they_are() {
        for (raw, message) in [
            (
                "incoming/%G1.csv",
                "key \"incoming/%G1.csv\" has an invalid percent-escape \"%G1\" at byte 9; \
                 S3 escapes a byte as % and two hex digits",
            ),
            (
                "incoming/100%",
                "key \"incoming/100%\" has an invalid percent-escape \"%\" at byte 12; \
                 S3 escapes a byte as % and two hex digits",
            ),
            (
                "a%4",
                "key \"a%4\" has an invalid percent-escape \"%4\" at byte 1; \
                 S3 escapes a byte as % and two hex digits",
            ),
            (
                "a%%41",
                "key \"a%%41\" has an invalid percent-escape \"%%4\" at byte 1; \
                 S3 escapes a byte as % and two hex digits",
            ),
            (
                "a%日本",
                "key \"a%日本\" has an invalid percent-escape \"%日本\" at byte 1; \
                 S3 escapes a byte as % and two hex digits",
            ),
        ] {
            let error = decode_key(raw).expect_err(raw);
            assert_eq!(error.to_string(), message);
            assert!(matches!(error, EventError::InvalidEscape { .. }));
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused() {
        for raw in ["incoming/%FF.csv", "%E6%97", "%C0%AF"] {
            let error = decode_key(raw).expect_err(raw);
            assert_eq!(
                error.to_string(),
                format!("key \"{raw}\" decodes to bytes that are not UTF-8")
            );
        }
    }

    #[test]
    fn errors_inside_a_payload_name_the_path() {
        let error = decode_key_at("%zz", "payload.Records[1].s3.object.key").expect_err("bad");
        assert_eq!(error.at(), "payload.Records[1].s3.object.key");
        assert!(error
            .to_string()
            .starts_with("payload.Records[1].s3.object.key \"%zz\" has an invalid"));
    }

    #[test]
    fn the_encoder_in_these_tests_matches_s3() {
        // The examples from AWS's documentation and from keys seen in real notifications.
        assert_eq!(form_encode("red flower.jpg"), "red+flower.jpg");
        assert_eq!(
            form_encode("test/10:47:07.log.bz2"),
            "test%2F10%3A47%3A07.log.bz2"
        );
        assert_eq!(form_encode("a+b%c"), "a%2Bb%25c");
    }

    proptest! {
        #[test]
        fn decoding_inverts_form_encoding(key in any::<String>()) {
            prop_assert_eq!(decode_key(&form_encode(&key)).expect("encoded by us"), key);
        }

        #[test]
        fn decoding_never_panics(raw in any::<String>()) {
            let _ = decode_key(&raw);
        }

        #[test]
        fn decoding_never_panics_on_escape_soup(raw in "[%+a-fA-F0-9Gg/ 日]{0,24}") {
            if let Err(error) = decode_key(&raw) {
                prop_assert!(!error.to_string().is_empty());
            }
        }

        #[test]
        fn keys_without_escapes_only_lose_their_pluses(raw in "[^%]{0,40}") {
            prop_assert_eq!(decode_key(&raw).expect("no escapes"), raw.replace('+', " "));
        }
    }
}
