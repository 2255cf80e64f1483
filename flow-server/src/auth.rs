//! Bearer tokens: one set for writers (POST events, DELETE), one for readers (snapshot,
//! stream). An empty set leaves that side open. Tokens are compared in constant time
//! (`subtle`), and every configured token is compared, so the time does not tell which one
//! nearly matched.

use subtle::ConstantTimeEq;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// POST events, DELETE flows.
    Ingest,
    /// Snapshot and stream.
    Read,
}

/// The configured token sets.
#[derive(Clone, Default)]
pub struct Auth {
    ingest: Vec<Vec<u8>>,
    read: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens.
        f.debug_struct("Auth")
            .field("ingest_tokens", &self.ingest.len())
            .field("read_tokens", &self.read.len())
            .finish()
    }
}

impl Auth {
    /// Token sets; empty means open.
    pub fn new(ingest: Vec<String>, read: Vec<String>) -> Self {
        Self {
            ingest: ingest.into_iter().map(String::into_bytes).collect(),
            read: read.into_iter().map(String::into_bytes).collect(),
        }
    }

    /// True when neither side needs a token.
    pub fn is_open(&self) -> bool {
        self.ingest.is_empty() && self.read.is_empty()
    }

    /// True when `access` needs no token.
    pub fn is_open_for(&self, access: Access) -> bool {
        self.set(access).is_empty()
    }

    fn set(&self, access: Access) -> &[Vec<u8>] {
        match access {
            Access::Ingest => &self.ingest,
            Access::Read => &self.read,
        }
    }

    /// Whether `presented` (the bearer token, if any) grants `access`.
    pub fn allows(&self, access: Access, presented: Option<&str>) -> bool {
        let set = self.set(access);
        if set.is_empty() {
            return true;
        }
        let Some(p) = presented else { return false };
        let p = p.as_bytes();
        let mut ok = subtle::Choice::from(0);
        for t in set {
            ok |= t.as_slice().ct_eq(p);
        }
        ok.into()
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sets_are_open_and_sets_are_separate() {
        let a = Auth::new(vec!["w".into()], vec![]);
        assert!(a.allows(Access::Read, None));
        assert!(!a.allows(Access::Ingest, None));
        assert!(!a.allows(Access::Ingest, Some("x")));
        assert!(a.allows(Access::Ingest, Some("w")));
        let b = Auth::new(vec!["w".into()], vec!["r1".into(), "r2".into()]);
        assert!(b.allows(Access::Read, Some("r2")));
        assert!(
            !b.allows(Access::Read, Some("w")),
            "an ingest token is not a read token"
        );
        assert!(!b.allows(Access::Ingest, Some("r1")));
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn debug_never_prints_tokens() {
        let a = Auth::new(vec!["secret".into()], vec![]);
        assert!(!format!("{a:?}").contains("secret"));
    }
}
