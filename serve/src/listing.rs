//! What a listing answers besides its keys (see [`crate::index`]): the delimiter echoed, and
//! `encoding-type=url`.
//!
//! The AWS CLI (botocore) always asks for URL encoding and decodes what it gets: keys returned
//! as they are would list `report+1.csv` as `report 1.csv` and `a%41` as `aA`. We encode the
//! fields S3 documents as encoded.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use s3s::dto::{CommonPrefix, EncodingType, ListObjectsOutput, ListObjectsV2Output, Object};

/// Everything but the unreserved characters of RFC 3986 and `/`, which S3 leaves as is.
const KEY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// S3 reads `delimiter=` (empty, as rclone and `--delimiter ''` send it) as no delimiter, and
/// answers none.
pub(crate) fn delimiter(delimiter: Option<String>) -> Option<String> {
    delimiter.filter(|d| !d.is_empty())
}

fn encode(value: &mut String) {
    *value = utf8_percent_encode(value, KEY).to_string();
}

fn encode_opt(value: &mut Option<String>) {
    if let Some(value) = value {
        encode(value);
    }
}

fn wants_url(encoding: Option<&EncodingType>) -> bool {
    encoding.is_some_and(|e| e.as_str() == EncodingType::URL)
}

fn encode_entries(contents: &mut Option<Vec<Object>>, prefixes: &mut Option<Vec<CommonPrefix>>) {
    for object in contents.iter_mut().flatten() {
        encode_opt(&mut object.key);
    }
    for prefix in prefixes.iter_mut().flatten() {
        encode_opt(&mut prefix.prefix);
    }
}

/// ListObjectsV2: `Delimiter`, `Prefix`, `StartAfter`, `Key` and common prefixes.
pub(crate) fn encode_v2(output: &mut ListObjectsV2Output) {
    if !wants_url(output.encoding_type.as_ref()) {
        return;
    }
    encode_entries(&mut output.contents, &mut output.common_prefixes);
    encode_opt(&mut output.delimiter);
    encode_opt(&mut output.prefix);
    encode_opt(&mut output.start_after);
}

/// ListObjects: `Delimiter`, `Marker`, `NextMarker`, `Key` and common prefixes. Not `Prefix`:
/// S3 returns it as sent, and botocore, which decodes the others, leaves it as it is (ceph's
/// s3-tests `test_bucket_list_prefix_unreadable`).
pub(crate) fn encode_v1(output: &mut ListObjectsOutput) {
    if !wants_url(output.encoding_type.as_ref()) {
        return;
    }
    encode_entries(&mut output.contents, &mut output.common_prefixes);
    encode_opt(&mut output.delimiter);
    encode_opt(&mut output.marker);
    encode_opt(&mut output.next_marker);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_only_when_asked() {
        let listing = |encoding: Option<&str>| ListObjectsV2Output {
            encoding_type: encoding.map(|e| EncodingType::from(e.to_owned())),
            contents: Some(vec![Object {
                key: Some("incoming/a b+c%41/ü.csv".to_owned()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let key =
            |output: &ListObjectsV2Output| output.contents.as_ref().and_then(|c| c[0].key.clone());

        let mut encoded = listing(Some("url"));
        encode_v2(&mut encoded);
        assert_eq!(
            key(&encoded).as_deref(),
            Some("incoming/a%20b%2Bc%2541/%C3%BC.csv")
        );

        let mut plain = listing(None);
        encode_v2(&mut plain);
        assert_eq!(key(&plain).as_deref(), Some("incoming/a b+c%41/ü.csv"));
    }
}
