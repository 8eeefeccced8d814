//! Canonical bytes of an event (ledger format v1): RFC 8785 JSON Canonicalization.
//!
//! Keys are sorted by their UTF-16 code units, strings use the minimal RFC 8785 escapes,
//! and numbers follow ECMAScript `Number.prototype.toString`. Integers are written as
//! their exact decimal digits, which equals ECMAScript for every |n| <= 2^53 - 1; GitLab
//! ids beyond that would be the only place the two could differ, and docs/LEDGER.md says so.

use serde_json::Value;

/// RFC 8785 bytes of `value`.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_value(&map[key], out);
            }
            out.push(b'}');
        }
    }
}

fn write_number(n: &serde_json::Number, out: &mut Vec<u8>) {
    if let Some(i) = n.as_i64() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(u) = n.as_u64() {
        out.extend_from_slice(u.to_string().as_bytes());
    } else {
        out.extend_from_slice(es6_number(n.as_f64().unwrap_or(0.0)).as_bytes());
    }
}

/// ECMAScript Number::toString for finite doubles (JSON has no NaN or infinity).
pub fn es6_number(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let abs = x.abs();
    if (1e-6..1e21).contains(&abs) {
        // Rust's Display is the shortest round-trip form without an exponent, as ES6 is here.
        return format!("{x}");
    }
    // Rust writes "1e21" / "1.5e-7"; ES6 wants an explicit sign on the exponent.
    let s = format!("{x:e}");
    match s.split_once('e') {
        Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
        _ => s,
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_by_utf16_and_escapes_minimally() {
        // RFC 8785 §3.2.3 sorting example: keys compare by UTF-16 code units.
        let v: Value = serde_json::from_str(
            r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#,
        )
        .unwrap();
        let got = String::from_utf8(to_vec(&v)).unwrap();
        let order: Vec<&str> = [
            "Carriage Return",
            "One",
            "Control",
            "Latin Small",
            "Euro Sign",
            "Emoji",
            "Hebrew",
        ]
        .to_vec();
        let mut last = 0;
        for name in order {
            let pos = got.find(name).unwrap();
            assert!(pos > last, "{name} out of order in {got}");
            last = pos;
        }
        assert_eq!(
            String::from_utf8(to_vec(&json!({"b": [1, "x\u{1}\"\\"], "a": null, "c": true}))).unwrap(),
            r#"{"a":null,"b":[1,"x\u0001\"\\"],"c":true}"#
        );
    }

    #[test]
    fn numbers_follow_ecmascript() {
        // Values from RFC 8785 Appendix B.
        for (x, want) in [
            (0.0, "0"),
            (-0.0, "0"),
            (1e21, "1e+21"),
            (1e-7, "1e-7"),
            (333333333.3333333, "333333333.3333333"),
            (9007199254740992.0, "9007199254740992"),
            (295147905179352830000.0, "295147905179352830000"),
            (5e-324, "5e-324"),
            (17.0, "17"),
            (49.503592, "49.503592"),
        ] {
            assert_eq!(es6_number(x), want, "{x}");
        }
        assert_eq!(to_vec(&json!(3580121225u64)), b"3580121225");
    }
}
