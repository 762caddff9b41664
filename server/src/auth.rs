//! Credentials: publish keys, JWTs (HS256 with `--jwt-secret`; RS256, ES256 or EdDSA with a PEM
//! `--jwt-public-key`), and the channel patterns of their claims.
//!
//! Claims read: `exp` (required), `sub` (the user), `ssehub.subscribe` and `ssehub.publish`
//! (a pattern or a list: an exact channel name, a prefix ending in `*` such as `comments/*`, or
//! `*`), `ssehub.info` (any JSON, shown in presence).

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::config::Config;

/// The claims the hub reads from a JWT.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Claims {
    /// Seconds since the epoch after which the token is refused (and its streams end).
    pub(crate) exp: u64,
    /// The user.
    #[serde(default)]
    pub(crate) sub: Option<String>,
    #[serde(default, rename = "ssehub.subscribe")]
    subscribe: Patterns,
    #[serde(default, rename = "ssehub.publish")]
    publish: Patterns,
    /// Shown beside the user in presence.
    #[serde(default, rename = "ssehub.info")]
    pub(crate) info: Option<serde_json::Value>,
}

/// One pattern or a list of them.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(untagged)]
enum Patterns {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Patterns {
    fn matches(&self, channel: &str) -> bool {
        match self {
            Patterns::None => false,
            Patterns::One(p) => pattern_matches(p, channel),
            Patterns::Many(ps) => ps.iter().any(|p| pattern_matches(p, channel)),
        }
    }
}

/// `*` matches every channel, `prefix*` every channel starting with `prefix`, anything else
/// only the channel of that exact name.
pub(crate) fn pattern_matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}

/// What a request's credential allows.
#[derive(Clone, Debug)]
pub(crate) enum Grant {
    /// A publish key, or development mode: everything.
    All,
    /// A JWT: what its claims say, until it expires.
    Token(Box<Claims>),
}

impl Grant {
    pub(crate) fn may_publish(&self, channel: &str) -> bool {
        match self {
            Grant::All => true,
            Grant::Token(c) => c.publish.matches(channel),
        }
    }

    pub(crate) fn may_subscribe(&self, channel: &str) -> bool {
        match self {
            Grant::All => true,
            Grant::Token(c) => c.subscribe.matches(channel),
        }
    }

    pub(crate) fn claims(&self) -> Option<&Claims> {
        match self {
            Grant::All => None,
            Grant::Token(c) => Some(c),
        }
    }
}

/// Why a credential is refused (`401`).
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) String);

/// The hub's keys.
pub(crate) struct Auth {
    publish_keys: Vec<Vec<u8>>,
    jwt: Vec<(Algorithm, DecodingKey)>,
    leeway: u64,
    development: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("publish_keys", &self.publish_keys.len())
            .field("jwt", &self.jwt.iter().map(|(a, _)| *a).collect::<Vec<_>>())
            .field("development", &self.development)
            .finish()
    }
}

impl Auth {
    /// The keys of `config`; an unreadable or unknown public key is an error.
    pub(crate) fn from_config(config: &Config) -> Result<Auth, String> {
        let mut jwt = Vec::new();
        if let Some(secret) = &config.jwt_secret {
            let key = DecodingKey::from_secret(secret.as_bytes())
                .map_err(|e| format!("--jwt-secret: {e}"))?;
            jwt.push((Algorithm::HS256, key));
        }
        if let Some(path) = &config.jwt_public_key {
            let pem = std::fs::read(path)
                .map_err(|e| format!("--jwt-public-key {}: {e}", path.display()))?;
            let loaded = [
                (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem)),
                (Algorithm::ES256, DecodingKey::from_ec_pem(&pem)),
                (Algorithm::EdDSA, DecodingKey::from_ed_pem(&pem)),
            ];
            let before = jwt.len();
            jwt.extend(
                loaded
                    .into_iter()
                    .filter_map(|(alg, key)| key.ok().map(|k| (alg, k))),
            );
            if jwt.len() == before {
                return Err(format!(
                    "--jwt-public-key {}: not a PEM RSA, EC (P-256) or Ed25519 public key",
                    path.display()
                ));
            }
        }
        Ok(Auth {
            publish_keys: config
                .publish_keys
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect(),
            jwt,
            leeway: config.jwt_leeway,
            development: config.development(),
        })
    }

    /// Whether JWTs can be verified.
    pub(crate) fn has_jwt(&self) -> bool {
        !self.jwt.is_empty()
    }

    fn is_publish_key(&self, credential: &str) -> bool {
        let given = credential.as_bytes();
        // Every key is compared, in constant time each.
        self.publish_keys.iter().fold(false, |found, k| {
            found | bool::from(k.as_slice().ct_eq(given))
        })
    }

    /// What `credential` (a publish key or a JWT; `None` when the request had none) allows.
    pub(crate) fn grant(&self, credential: Option<&str>) -> Result<Grant, Refused> {
        if self.development {
            return Ok(Grant::All);
        }
        let Some(credential) = credential.filter(|c| !c.is_empty()) else {
            return Err(Refused("missing credentials".into()));
        };
        if self.is_publish_key(credential) {
            return Ok(Grant::All);
        }
        self.verify(credential).map(|c| Grant::Token(Box::new(c)))
    }

    fn verify(&self, token: &str) -> Result<Claims, Refused> {
        if self.jwt.is_empty() {
            return Err(Refused("invalid credentials".into()));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Refused("invalid credentials: not a publish key or a JWT".into()))?;
        let Some((alg, key)) = self.jwt.iter().find(|(a, _)| *a == header.alg) else {
            return Err(Refused(format!(
                "invalid token: algorithm {:?} is not accepted",
                header.alg
            )));
        };
        let mut validation = Validation::new(*alg);
        validation.leeway = self.leeway;
        validation.validate_aud = false;
        validation.validate_nbf = true;
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    Refused("token expired".into())
                }
                _ => Refused(format!("invalid token: {e}")),
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "a/b"));
        assert!(pattern_matches("comments/*", "comments/1"));
        assert!(!pattern_matches("comments/*", "comments"));
        assert!(pattern_matches("comments/1", "comments/1"));
        assert!(!pattern_matches("comments/1", "comments/12"));
        let many = Patterns::Many(vec!["a".into(), "b/*".into()]);
        assert!(many.matches("b/c") && many.matches("a") && !many.matches("c"));
        assert!(!Patterns::None.matches("a"));
    }
}
