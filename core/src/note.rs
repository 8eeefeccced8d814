//! C2SP signed-note and tlog-checkpoint with Ed25519, and the key formats Go's
//! `golang.org/x/mod/sumdb/note` uses (verifier key `name+hash+base64(0x01‖pub)`,
//! signer key `PRIVATE+KEY+name+hash+base64(0x01‖seed)`).

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::encoding::{base64_decode, base64_encode, sha256};
use crate::merkle::Hash;

const ALG_ED25519: u8 = 0x01;
const SIG_PREFIX: &str = "\u{2014} ";

#[derive(Debug, Clone, PartialEq)]
pub struct NoteError(pub String);

impl std::fmt::Display for NoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoteError {}

fn err<T>(msg: impl Into<String>) -> Result<T, NoteError> {
    Err(NoteError(msg.into()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Key id: the first four bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key).
pub fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut data = Vec::with_capacity(name.len() + 34);
    data.extend_from_slice(name.as_bytes());
    data.push(b'\n');
    data.push(ALG_ED25519);
    data.extend_from_slice(public);
    let h = sha256(&data);
    u32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

#[derive(Clone)]
pub struct NoteSigner {
    pub name: String,
    pub id: u32,
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seed never appears in logs or debug output.
        write!(f, "NoteSigner({}+{:08x})", self.name, self.id)
    }
}

impl NoteSigner {
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        if !valid_name(name) {
            return err(format!("key name {name:?} is empty or contains '+' or spaces"));
        }
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(Self {
            name: name.into(),
            id,
            key,
        })
    }

    /// Parses `PRIVATE+KEY+name+hash+base64(0x01‖seed)`.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let rest = text
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| NoteError("signing key must start with PRIVATE+KEY+".into()))?;
        let parts: Vec<&str> = rest.splitn(3, '+').collect();
        let [name, hash, b64] = parts[..] else {
            return err("signing key must be PRIVATE+KEY+name+hash+key");
        };
        let raw = base64_decode(b64).ok_or_else(|| NoteError("signing key is not base64".into()))?;
        if raw.len() != 33 || raw[0] != ALG_ED25519 {
            return err("signing key is not an Ed25519 key");
        }
        let signer = Self::from_seed(name, raw[1..].try_into().expect("32 bytes"))?;
        if format!("{:08x}", signer.id) != hash {
            return err("signing key hash does not match its key");
        }
        Ok(signer)
    }

    pub fn private_key_text(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!("PRIVATE+KEY+{}+{:08x}+{}", self.name, self.id, base64_encode(&raw))
    }

    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs `text` (which must end in a newline) and returns the whole note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') {
            return err("note text must end with a newline");
        }
        let sig = self.key.sign(text.as_bytes());
        let mut raw = self.id.to_be_bytes().to_vec();
        raw.extend_from_slice(&sig.to_bytes());
        Ok(format!("{text}\n{SIG_PREFIX}{} {}\n", self.name, base64_encode(&raw)))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct NoteVerifier {
    pub name: String,
    pub id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses a verifier key `name+hash+base64(0x01‖public)`. The name cannot hold '+',
    /// but the base64 can, so split from the left exactly twice.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let parts: Vec<&str> = text.trim().splitn(3, '+').collect();
        let [name, hash, b64] = parts[..] else {
            return err("verifier key must be name+hash+key");
        };
        let raw = base64_decode(b64).ok_or_else(|| NoteError("verifier key is not base64".into()))?;
        if raw.len() != 33 || raw[0] != ALG_ED25519 {
            return err("verifier key is not an Ed25519 key");
        }
        let public: [u8; 32] = raw[1..].try_into().expect("32 bytes");
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| NoteError("verifier key is not a valid Ed25519 point".into()))?;
        let id = key_id(name, &public);
        if !valid_name(name) || format!("{id:08x}") != hash {
            return err("verifier key hash does not match its name and key");
        }
        Ok(Self {
            name: name.into(),
            id,
            key,
        })
    }

    pub fn text(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, base64_encode(&raw))
    }

    /// Verifies a signed note and returns its text. At least one signature must be by this
    /// key and valid; signatures by other keys are ignored, as the spec allows.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| NoteError("note has no signature block".into()))?;
        let text = &note[..split + 1];
        let sigs = &note[split + 2..];
        if !sigs.ends_with('\n') {
            return err("note signature block must end with a newline");
        }
        let mut found_ours = false;
        for line in sigs.lines() {
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or_else(|| NoteError(format!("malformed signature line {line:?}")))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or_else(|| NoteError(format!("malformed signature line {line:?}")))?;
            let raw = base64_decode(b64).ok_or_else(|| NoteError("signature is not base64".into()))?;
            if raw.len() < 4 {
                return err("signature is too short");
            }
            if name != self.name || u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) != self.id {
                continue;
            }
            found_ours = true;
            let sig =
                Signature::from_slice(&raw[4..]).map_err(|_| NoteError("signature has the wrong length".into()))?;
            if self.key.verify(text.as_bytes(), &sig).is_err() {
                return err("signature does not verify");
            }
        }
        if !found_ours {
            return err(format!("note is not signed by {}", self.name));
        }
        Ok(text)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, base64_encode(&self.root))
    }

    /// Parses a checkpoint body (the note text); extension lines after the root are kept
    /// out of the result but allowed, as the spec says.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| NoteError("checkpoint has no origin".into()))?;
        let size_line = lines.next().ok_or_else(|| NoteError("checkpoint has no size".into()))?;
        if size_line.is_empty()
            || !size_line.bytes().all(|b| b.is_ascii_digit())
            || (size_line.len() > 1 && size_line.starts_with('0'))
        {
            return err("checkpoint size is not a decimal number");
        }
        let size = size_line
            .parse()
            .map_err(|_| NoteError("checkpoint size is out of range".into()))?;
        let root_line = lines.next().ok_or_else(|| NoteError("checkpoint has no root".into()))?;
        let root: Hash = base64_decode(root_line)
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| NoteError("checkpoint root is not a base64 SHA-256 hash".into()))?;
        Ok(Self {
            origin: origin.into(),
            size,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let signer = NoteSigner::from_seed("audit.example/log", [7u8; 32]).unwrap();
        let parsed = NoteSigner::parse(&signer.private_key_text()).unwrap();
        assert_eq!(parsed.id, signer.id);
        assert!(!format!("{signer:?}").contains(&signer.private_key_text()[20..]));
        let v = NoteVerifier::parse(&signer.verifier().text()).unwrap();
        let cp = Checkpoint {
            origin: "audit.example/log".into(),
            size: 5,
            root: [9u8; 32],
        };
        let note = signer.sign(&cp.body()).unwrap();
        assert_eq!(Checkpoint::parse(v.open(&note).unwrap()).unwrap(), cp);
        let forged = note.replace("\n5\n", "\n6\n");
        assert!(v.open(&forged).is_err());
        let other = NoteSigner::from_seed("audit.example/log", [8u8; 32]).unwrap();
        assert!(other.verifier().open(&note).is_err());
    }
}
