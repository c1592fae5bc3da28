//! A JSON Web Key Set, prepared once (per snapshot, or per fetch of a `jwksUri`): each key
//! parsed into a verifying key with its `kid` and the algorithms it may verify.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::JwtError;
use super::token::Token;

/// The most keys one set may hold (the rest are ignored, with a warning).
pub const MAX_KEYS: usize = 64;

/// Why a key set cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    /// Not a JWKS document.
    #[error("not a JSON Web Key Set: {0}")]
    Json(String),
    /// No key of the set can verify anything.
    #[error("the key set has no usable key{0}")]
    NoKeys(String),
}

struct Key {
    kid: Option<String>,
    algs: &'static [Algorithm],
    key: DecodingKey,
}

/// The usable keys of one set.
pub struct KeySet {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.len())
            .finish()
    }
}

const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

fn algs_of(jwk: &Jwk) -> Option<&'static [Algorithm]> {
    let by_type: &'static [Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKey(_) => HMAC,
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => return None,
        },
    };
    // A key that names its algorithm verifies only that one.
    match jwk.common.key_algorithm.map(|a| a.to_string()) {
        None => Some(by_type),
        Some(a) => {
            let i = by_type.iter().position(|b| format!("{b:?}") == a)?;
            Some(&by_type[i..=i])
        }
    }
}

impl KeySet {
    /// Parses a JWKS document. Keys the proxy cannot use (an unknown curve, a key for
    /// encryption) are skipped; a set left with none is an error.
    pub fn parse(json: &str) -> Result<KeySet, KeySetError> {
        let set: JwkSet =
            serde_json::from_str(json).map_err(|e| KeySetError::Json(e.to_string()))?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate().take(MAX_KEYS) {
            let encryption = matches!(
                jwk.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            );
            let Some(algs) = algs_of(jwk).filter(|_| !encryption) else {
                skipped.push(format!("keys[{i}]: key type or algorithm not supported"));
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    algs,
                    key,
                }),
                Err(e) => skipped.push(format!("keys[{i}]: {e}")),
            }
        }
        if keys.is_empty() {
            let why = if skipped.is_empty() {
                String::new()
            } else {
                format!(" ({})", skipped.join("; "))
            };
            return Err(KeySetError::NoKeys(why));
        }
        Ok(KeySet { keys })
    }

    /// Checks the token's signature as Envoy does: with a `kid`, the keys of that `kid`;
    /// without one, every key; only keys that may verify the token's `alg`.
    pub fn verify(&self, t: &Token<'_>) -> Result<(), JwtError> {
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| t.kid.is_none() || k.kid == t.kid)
            .filter(|k| k.algs.contains(&t.alg))
            .peekable();
        if candidates.peek().is_none() {
            return Err(JwtError::KidAlgMismatch);
        }
        let signed = t.signed.as_bytes();
        if candidates
            .any(|k| jsonwebtoken::crypto::verify(t.signature, signed, &k.key, t.alg) == Ok(true))
        {
            Ok(())
        } else {
            Err(JwtError::VerificationFail)
        }
    }
}
