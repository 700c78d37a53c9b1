//! Shared secrets: a bearer token compared in constant time, a keyring of the tokens a file
//! accepts (several during a rotation), and the `Authorization: Bearer` header that carries one.

use std::path::{Path, PathBuf};

use axum::http::{header::AUTHORIZATION, HeaderMap};

/// Why a secret could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read {path} (`{field}`): {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The configuration key that names it.
        field: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Nothing is left once whitespace (and, in a keyring, comment lines) is dropped.
    #[error("the secret from {origin} is empty; put a long random string there")]
    Empty {
        /// Where it came from.
        origin: String,
    },
}

/// A bearer token, compared in constant time.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A token from its text (trimmed); `origin` names it in the error if it is empty.
    pub fn new(text: &str, origin: &str) -> Result<Self, TokenError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TokenError::Empty {
                origin: origin.to_owned(),
            });
        }
        Ok(Self(text.to_owned()))
    }

    /// Whether `offered` is this token; the time taken does not depend on where they differ.
    pub fn matches(&self, offered: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), offered.as_bytes());
        let mut diff = (a.len() != b.len()) as u8;
        for (i, x) in a.iter().enumerate() {
            diff |= x ^ b.get(i).copied().unwrap_or(!x);
        }
        std::hint::black_box(diff) == 0
    }

    /// The token text, for clients sending it.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

/// The tokens one secret file accepts: one per line, blank lines and `#` comments skipped.
/// The first is the one this side sends; every one is accepted, so a secret rotates without
/// a moment where the two ends disagree (add the new one, switch the senders, drop the old).
#[derive(Clone, Debug)]
pub struct Keyring(Vec<Token>);

impl Keyring {
    /// The keyring in `text`; `origin` names it in the error if it holds no token.
    pub fn parse(text: &str, origin: &str) -> Result<Self, TokenError> {
        let tokens: Vec<Token> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| Token::new(l, origin).ok())
            .collect();
        if tokens.is_empty() {
            return Err(TokenError::Empty {
                origin: origin.to_owned(),
            });
        }
        Ok(Self(tokens))
    }

    /// The keyring in the file at `path`, named by the configuration key `field` in errors.
    pub fn read(path: &Path, field: &'static str) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_owned(),
            field,
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The token to send.
    pub fn current(&self) -> &Token {
        &self.0[0]
    }

    /// Whether `offered` is one of the tokens (each compared in constant time, all compared).
    pub fn accepts(&self, offered: &str) -> bool {
        self.0
            .iter()
            .fold(false, |found, t| t.matches(offered) | found)
    }
}

/// The token an `Authorization: Bearer TOKEN` header carries, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly() {
        let t = Token::new(" s3cret\n", "test").unwrap();
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3cre"));
        assert!(!t.matches("s3cret!"));
        assert!(!t.matches("S3cret"));
        assert!(!t.matches(""));
        assert!(Token::new(" \n", "test").is_err());
        assert_eq!(format!("{t:?}"), "Token(..)");
    }

    #[test]
    fn a_keyring_accepts_every_line_and_sends_the_first() {
        let ring = Keyring::parse("# rotated 2026-12\nnew-one\n\n  old-one  \n", "f").unwrap();
        assert_eq!(ring.current().secret(), "new-one");
        assert!(ring.accepts("new-one") && ring.accepts("old-one"));
        assert!(!ring.accepts("# rotated 2026-12") && !ring.accepts(""));
        let e = Keyring::parse("# only a comment\n \n", "the file").unwrap_err();
        assert!(e.to_string().contains("the file"), "{e}");
        let missing = Keyring::read(Path::new("/nonexistent/secret"), "cluster.secret_file");
        let e = missing.unwrap_err().to_string();
        assert!(e.contains("`cluster.secret_file`"), "{e}");
    }

    #[test]
    fn the_bearer_header_is_read_and_anything_else_is_none() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, "Bearer abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
    }
}
