//! The encodings the ledger and auth need, each a thin, named use of a well-kept crate:
//! base64 (RFC 4648, standard alphabet, padded: `base64ct`, constant-time), hex,
//! HMAC-SHA256 (RFC 2104: `hmac`), a constant-time comparison (`subtle`) and
//! percent-encoding (RFC 3986: `percent-encoding`). Each is tested against its RFC's vectors.

use base64ct::{Base64, Encoding};
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub fn base64_encode(data: &[u8]) -> String {
    Base64::encode_string(data)
}

/// Strict decoding: padding required, no whitespace, no non-zero trailing bits.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    Base64::decode_vec(text).ok()
}

pub fn hex(data: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Compares without an early exit, so the time taken does not reveal how many leading
/// bytes of a guessed secret were right. Lengths are not secret.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// What RFC 3986 leaves unescaped in a component: letters, digits and `-._~`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes a path segment or query value (RFC 3986 unreserved characters pass).
pub fn url_encode(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

/// Decodes a query-string key or value (`application/x-www-form-urlencoded`: `+` is a
/// space). `None` for a `%` not followed by two hex digits or bytes that are not UTF-8:
/// a malformed parameter is an error, never guessed at.
pub fn form_decode(s: &str) -> Option<String> {
    strict_decode(&s.replace('+', " "))
}

/// Decodes one path segment (RFC 3986: `+` is a plus sign, only `%XX` is decoded).
pub fn path_decode(s: &str) -> Option<String> {
    strict_decode(s)
}

fn strict_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let well_formed = b
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == b'%')
        .all(|(i, _)| b.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)));
    if !well_formed {
        return None;
    }
    percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes());
        }
        for bad in ["Zg", "Zg=", "Z===", "Zh==", "Zm9v!A==", "Zg==Zg==", " Zg="] {
            assert!(base64_decode(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn hmac_rfc4231_vectors() {
        // RFC 4231 test cases 1, 2 and 6 (key longer than the block).
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn ct_eq_and_hex() {
        assert!(ct_eq(b"secret", b"secret"));
        assert!(!ct_eq(b"secret", b"secreT"));
        assert!(!ct_eq(b"secret", b"secret2"));
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])).unwrap(), vec![0, 1, 254, 255]);
        assert!(unhex("0g").is_none());
    }

    #[test]
    fn percent_encoding_rfc3986() {
        assert_eq!(url_encode("grp/app name~x+y"), "grp%2Fapp%20name~x%2By");
        assert_eq!(url_encode("é"), "%C3%A9");
        assert_eq!(form_decode("a%20b+c").unwrap(), "a b c");
        // In a path, `+` is a plus sign (GitLab refs and paths can hold one).
        assert_eq!(path_decode("a+b%2Fc").unwrap(), "a+b/c");
        for bad in ["%", "%2", "%zz", "a%G1", "%ff"] {
            assert!(form_decode(bad).is_none() && path_decode(bad).is_none(), "{bad:?}");
        }
    }
}
