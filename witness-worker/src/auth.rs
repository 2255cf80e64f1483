//! Bearer tokens bound to the holders they may act as.
//!
//! Configuration is a map from token to holder names, e.g. (YAML, the `witness-server
//! --tokens` file; the Worker's `WITNESS_TOKENS` secret is the same map as JSON):
//!
//! ```yaml
//! tok-a: [region-a]
//! tok-b: [region-b]
//! tok-ops: ["*"]        # any holder (upstream's shared allow-list behaviour)
//! ```
//!
//! An empty map rejects every request, as upstream's Worker does with an empty allow-list.
//! Tokens are compared in constant time, and every configured token is compared on every
//! request, so the time taken does not reveal which token nearly matched.

use serde::Deserialize;
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;

/// Holder name that lets a token act as any holder.
pub const ANY_HOLDER: &str = "*";

/// The token configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Tokens {
    map: BTreeMap<String, Vec<String>>,
}

/// What an authenticated token may do.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    holders: &'a [String],
}

impl Grant<'_> {
    /// True when the token may act as `holder`.
    pub fn may_act_as(&self, holder: &str) -> bool {
        self.holders.iter().any(|h| h == holder || h == ANY_HOLDER)
    }
}

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// Not a map of token → list of holders.
    #[error("tokens config is not a map of token -> [holders]: {0}")]
    Shape(String),
    /// A token or holder entry is empty.
    #[error("tokens config has an empty token or holder list (token #{0})")]
    Empty(usize),
}

impl Tokens {
    /// From pairs.
    pub fn new<I, T, H>(pairs: I) -> Tokens
    where
        I: IntoIterator<Item = (T, Vec<H>)>,
        T: Into<String>,
        H: Into<String>,
    {
        Tokens {
            map: pairs
                .into_iter()
                .map(|(t, hs)| (t.into(), hs.into_iter().map(Into::into).collect()))
                .collect(),
        }
    }

    /// Checks the shape after deserializing: no empty token, no empty holder list.
    pub fn validated(self) -> Result<Tokens, TokensError> {
        for (i, (t, hs)) in self.map.iter().enumerate() {
            if t.trim().is_empty() || hs.is_empty() || hs.iter().any(|h| h.is_empty()) {
                return Err(TokensError::Empty(i));
            }
        }
        Ok(self)
    }

    /// Parses the JSON form (the Worker secret).
    pub fn from_json(s: &str) -> Result<Tokens, TokensError> {
        serde_json::from_str::<Tokens>(s)
            .map_err(|e| TokensError::Shape(e.to_string()))?
            .validated()
    }

    /// Number of tokens configured.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no token is configured (every request is refused).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Authenticates an `Authorization` header value (`Bearer <t>`, scheme case-insensitive).
    pub fn authenticate(&self, header: Option<&str>) -> Option<Grant<'_>> {
        let header = header?.trim();
        let (scheme, token) = header.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = token.trim().as_bytes();
        let mut found: Option<&[String]> = None;
        for (t, holders) in &self.map {
            // Compare every token, always, so timing does not depend on which one matches.
            if bool::from(t.as_bytes().ct_eq(token)) {
                found = Some(holders);
            }
        }
        found.map(|holders| Grant { holders })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_grants_only_its_holders() {
        let t = Tokens::new([("tok-a", vec!["region-a"]), ("tok-ops", vec!["*"])]);
        let g = t.authenticate(Some("Bearer tok-a")).unwrap();
        assert!(g.may_act_as("region-a"));
        assert!(!g.may_act_as("region-b"));
        assert!(
            t.authenticate(Some("bearer tok-ops"))
                .unwrap()
                .may_act_as("x")
        );
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Basic tok-a"),
            Some("Bearer tok-b"),
        ] {
            assert!(t.authenticate(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn empty_config_rejects_everyone() {
        assert!(Tokens::default().authenticate(Some("Bearer x")).is_none());
    }

    #[test]
    fn invalid_configs_are_refused() {
        assert!(Tokens::from_json(r#"{"t": []}"#).is_err());
        assert!(Tokens::from_json(r#"{"": ["a"]}"#).is_err());
        assert!(Tokens::from_json(r#"["t"]"#).is_err());
        assert_eq!(Tokens::from_json(r#"{"t": ["a"]}"#).unwrap().len(), 1);
    }
}
