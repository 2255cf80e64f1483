//! Bearer tokens bound to the holders they may act as and, optionally, to the slots they may
//! use.
//!
//! Configuration is a map from token to its binding, e.g. (YAML, the `witness-server
//! --tokens` file; the Worker's `WITNESS_TOKENS` secret is the same map as JSON):
//!
//! ```yaml
//! tok-a: {holders: [region-a], slots: [app-1]}   # region-a, on slot app-1 only
//! tok-b: {holders: [region-b], slots: [app-1, team/app-2]}
//! tok-c: [region-c]     # the list form: holders only, EVERY slot (as before slots existed)
//! tok-ops: ["*"]        # any holder, every slot (upstream's shared allow-list behaviour)
//! ```
//!
//! A binding names its holders (`"*"` = any holder) and, in the object form, its `slots`:
//! exact slot names as they appear decoded in `/lease/<slot>` (`"*"` = every slot). The list
//! form and an object without `slots` allow every slot, so existing token files keep working;
//! give each region's token its slots so that a token leaked from one application cannot take
//! or release another application's lease. A request on a slot the token is not bound to is
//! refused with 403 `forbidden_slot` before anything is read or written; a request as a holder
//! the token is not bound to with 403 `forbidden_holder`.
//!
//! An empty map rejects every request, as upstream's Worker does with an empty allow-list.
//! Tokens are compared in constant time, and every configured token is compared on every
//! request, so the time taken does not reveal which token nearly matched.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use subtle::ConstantTimeEq;

/// Holder name that lets a token act as any holder.
pub const ANY_HOLDER: &str = "*";
/// Slot name that lets a token use every slot.
pub const ANY_SLOT: &str = "*";

/// What one token is bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// Holders the token may act as (`"*"`: any).
    pub holders: Vec<String>,
    /// Slots the token may use; `None` (the list form, or an object without `slots`): every
    /// slot.
    pub slots: Option<Vec<String>>,
}

impl Binding {
    /// A binding to `holders` on every slot.
    pub fn holders<H: Into<String>>(holders: impl IntoIterator<Item = H>) -> Binding {
        Binding {
            holders: holders.into_iter().map(Into::into).collect(),
            slots: None,
        }
    }

    /// Restricted to `slots`.
    pub fn on_slots<S: Into<String>>(mut self, slots: impl IntoIterator<Item = S>) -> Binding {
        self.slots = Some(slots.into_iter().map(Into::into).collect());
        self
    }
}

/// Either `[holders]` or `{holders: [..], slots: [..]}`; any other key is an error, so a
/// misspelt `slots` cannot silently open every slot.
impl<'de> Deserialize<'de> for Binding {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Binding, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Binding;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of holders or a map {holders: [..], slots: [..]}")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Binding, A::Error> {
                let mut holders = Vec::new();
                while let Some(h) = seq.next_element::<String>()? {
                    holders.push(h);
                }
                Ok(Binding {
                    holders,
                    slots: None,
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Binding, A::Error> {
                let mut holders: Option<Vec<String>> = None;
                let mut slots: Option<Vec<String>> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "holders" if holders.is_none() => holders = Some(map.next_value()?),
                        "slots" if slots.is_none() => slots = Some(map.next_value()?),
                        "holders" | "slots" => {
                            return Err(de::Error::custom(format!("duplicate field `{key}`")));
                        }
                        other => {
                            return Err(de::Error::unknown_field(other, &["holders", "slots"]));
                        }
                    }
                }
                Ok(Binding {
                    holders: holders.ok_or_else(|| de::Error::missing_field("holders"))?,
                    slots,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// The token configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Tokens {
    map: BTreeMap<String, Binding>,
}

/// What an authenticated token may do.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    binding: &'a Binding,
}

impl Grant<'_> {
    /// True when the token may act as `holder`.
    pub fn may_act_as(&self, holder: &str) -> bool {
        self.binding
            .holders
            .iter()
            .any(|h| h == holder || h == ANY_HOLDER)
    }

    /// True when the token may use `slot` (the decoded slot name).
    pub fn may_use_slot(&self, slot: &str) -> bool {
        self.binding
            .slots
            .as_ref()
            .is_none_or(|ss| ss.iter().any(|s| s == slot || s == ANY_SLOT))
    }
}

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// Not a map of token → binding.
    #[error(
        "tokens config is not a map of token -> [holders] or token -> {{holders: [..], slots: [..]}}: {0}"
    )]
    Shape(String),
    /// A token or holder entry is empty.
    #[error("tokens config has an empty token or holder list (token #{0})")]
    Empty(usize),
    /// A `slots` list is empty or names an empty slot.
    #[error(
        "tokens config has an empty slots list or slot name (token #{0}); leave `slots` out to allow every slot"
    )]
    EmptySlots(usize),
}

impl Tokens {
    /// From pairs of token and holders; each token may use every slot.
    pub fn new<I, T, H>(pairs: I) -> Tokens
    where
        I: IntoIterator<Item = (T, Vec<H>)>,
        T: Into<String>,
        H: Into<String>,
    {
        Tokens::with_bindings(pairs.into_iter().map(|(t, hs)| (t, Binding::holders(hs))))
    }

    /// From pairs of token and binding.
    pub fn with_bindings<T: Into<String>>(pairs: impl IntoIterator<Item = (T, Binding)>) -> Tokens {
        Tokens {
            map: pairs.into_iter().map(|(t, b)| (t.into(), b)).collect(),
        }
    }

    /// Checks the shape after deserializing: no empty token, no empty holder list, no empty
    /// slot list.
    pub fn validated(self) -> Result<Tokens, TokensError> {
        for (i, (t, b)) in self.map.iter().enumerate() {
            if t.trim().is_empty() || b.holders.is_empty() || b.holders.iter().any(|h| h.is_empty())
            {
                return Err(TokensError::Empty(i));
            }
            if b.slots
                .as_ref()
                .is_some_and(|ss| ss.is_empty() || ss.iter().any(|s| s.is_empty()))
            {
                return Err(TokensError::EmptySlots(i));
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
        let mut found: Option<&Binding> = None;
        for (t, binding) in &self.map {
            // Compare every token, always, so timing does not depend on which one matches.
            if bool::from(t.as_bytes().ct_eq(token)) {
                found = Some(binding);
            }
        }
        found.map(|binding| Grant { binding })
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

    #[test]
    fn both_forms_parse_from_yaml_and_json_and_only_the_object_form_binds_slots() {
        let yaml = "tok-a: {holders: [region-a], slots: [app-1, team/app-2]}\n\
                    tok-b: [region-b]\n\
                    tok-c: {holders: [region-c]}\n\
                    tok-d: {holders: [region-d], slots: ['*']}\n";
        let from_yaml: Tokens = serde_yaml::from_str::<Tokens>(yaml)
            .unwrap()
            .validated()
            .unwrap();
        let from_json = Tokens::from_json(
            r#"{"tok-a":{"holders":["region-a"],"slots":["app-1","team/app-2"]},
                "tok-b":["region-b"],"tok-c":{"holders":["region-c"]},
                "tok-d":{"holders":["region-d"],"slots":["*"]}}"#,
        )
        .unwrap();
        assert_eq!(from_yaml, from_json);
        let t = from_yaml;
        let grant = |tok: &str| t.authenticate(Some(&format!("Bearer {tok}"))).unwrap();
        let a = grant("tok-a");
        assert!(a.may_act_as("region-a") && !a.may_act_as("region-b"));
        assert!(a.may_use_slot("app-1") && a.may_use_slot("team/app-2"));
        for other in ["app-2", "app-10", "app-", "team", "team/app-2/x", "*", ""] {
            assert!(!a.may_use_slot(other), "{other:?}");
        }
        for every in ["tok-b", "tok-c", "tok-d"] {
            assert!(grant(every).may_use_slot("anything/at-all"), "{every}");
        }
    }

    #[test]
    fn malformed_slot_bindings_are_refused_with_the_reason() {
        for (bad, why) in [
            (
                r#"{"t": {"holders": ["a"], "slots": []}}"#,
                "empty slots list",
            ),
            (
                r#"{"t": {"holders": ["a"], "slots": [""]}}"#,
                "empty slots list",
            ),
            (
                r#"{"t": {"holders": ["a"], "slot": ["x"]}}"#,
                "unknown field `slot`",
            ),
            (r#"{"t": {"slots": ["x"]}}"#, "missing field `holders`"),
            (
                r#"{"t": {"holders": [], "slots": ["x"]}}"#,
                "empty token or holder",
            ),
            (r#"{"t": {"holders": ["a"], "slots": "x"}}"#, "invalid type"),
            (r#"{"t": "a"}"#, "a list of holders or a map"),
        ] {
            let e = Tokens::from_json(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
