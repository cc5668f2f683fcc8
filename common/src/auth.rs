//! Shared-token authentication for every gRPC call.
//!
//! When the learner has a token, each request must carry
//! `authorization: Bearer <token>`; anything else is answered
//! `UNAUTHENTICATED` before it reaches the service. The comparison takes the
//! same time whatever the bytes (only the length can be learned from timing).
//! Actors attach the token with [`AttachToken`].

use std::path::Path;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Environment variable holding the token itself.
pub const TOKEN_ENV: &str = "FLOTILLA_AUTH_TOKEN";

/// A token that cannot be used; names where it came from.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{origin}: the token must be 16 to 4096 characters long, got {len}")]
    Length { origin: String, len: usize },
    #[error("{origin}: the token may hold only visible ASCII characters (no spaces)")]
    Characters { origin: String },
    #[error("{origin}: not usable as a header value: {message}")]
    Header { origin: String, message: String },
    #[error("cannot read token file {}: {source}", .path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A shared secret, kept as the `authorization` value it travels in
/// (`Bearer <token>`), built once. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(MetadataValue<Ascii>);

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(..)")
    }
}

impl AuthToken {
    /// Checks a token: 16 to 4096 visible ASCII characters.
    pub fn new(token: &str, origin: &str) -> Result<Self, AuthError> {
        if token.len() < 16 || token.len() > 4096 {
            return Err(AuthError::Length {
                origin: origin.to_owned(),
                len: token.len(),
            });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthError::Characters {
                origin: origin.to_owned(),
            });
        }
        let bearer = format!("Bearer {token}").parse().map_err(
            |e: tonic::metadata::errors::InvalidMetadataValue| AuthError::Header {
                origin: origin.to_owned(),
                message: e.to_string(),
            },
        )?;
        Ok(AuthToken(bearer))
    }

    /// The token of a binary: from `file` when given, else from the
    /// environment variable [`TOKEN_ENV`]; `None` when neither is set.
    pub fn load(file: Option<&Path>) -> Result<Option<Self>, AuthError> {
        Self::from_sources(file, std::env::var(TOKEN_ENV).ok().as_deref())
    }

    /// The token from a file (surrounding whitespace ignored), else from the
    /// value of [`TOKEN_ENV`]; `None` when neither is given.
    pub fn from_sources(
        file: Option<&Path>,
        env_value: Option<&str>,
    ) -> Result<Option<Self>, AuthError> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
                path: path.to_owned(),
                source,
            })?;
            return Self::new(text.trim(), &format!("token file {}", path.display())).map(Some);
        }
        match env_value {
            Some(v) if !v.is_empty() => Self::new(v.trim(), TOKEN_ENV).map(Some),
            _ => Ok(None),
        }
    }

    /// Whether `presented` (an `authorization` header value) carries this token.
    pub fn admits(&self, presented: Option<&[u8]>) -> bool {
        presented.is_some_and(|p| constant_time_eq(p, self.0.as_bytes()))
    }
}

/// Equal bytes, compared without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Server side: rejects requests without the token (admits all when `None`).
#[derive(Clone, Debug)]
pub struct RequireToken(pub Option<AuthToken>);

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.0 else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        if token.admits(presented) {
            Ok(request)
        } else {
            metrics::counter!(crate::metrics::AUTH_FAILURES).increment(1);
            Err(Status::unauthenticated(
                "missing or wrong token: give the learner's shared token with FLOTILLA_AUTH_TOKEN or --auth-token-file",
            ))
        }
    }
}

/// Client side: adds the token to every request (nothing when `None`).
#[derive(Clone, Debug)]
pub struct AttachToken(pub Option<AuthToken>);

impl Interceptor for AttachToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.0.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-secret";

    #[test]
    fn tokens_are_checked_for_length_and_characters() {
        assert!(AuthToken::new(TOKEN, "t").is_ok());
        assert!(AuthToken::new("short", "t")
            .unwrap_err()
            .to_string()
            .contains("16 to 4096"));
        let spaced = AuthToken::new("0123456789 abcdef", "t")
            .unwrap_err()
            .to_string();
        assert!(spaced.contains("visible ASCII"), "{spaced}");
        assert!(AuthToken::new(&"x".repeat(4097), "t").is_err());
    }

    #[test]
    fn the_file_wins_over_the_environment_and_whitespace_is_trimmed() {
        let dir = crate::testing::TempDir::new("auth");
        let file = dir.join("token");
        std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
        let t = AuthToken::from_sources(Some(&file), Some("another-token-of-16")).unwrap();
        assert_eq!(t, Some(AuthToken::new(TOKEN, "t").unwrap()));
        assert_eq!(AuthToken::from_sources(None, Some("")).unwrap(), None);
        assert_eq!(AuthToken::from_sources(None, None).unwrap(), None);
        let missing = AuthToken::from_sources(Some(&dir.join("nope")), None)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("cannot read token file"), "{missing}");
    }

    #[test]
    fn the_server_admits_only_the_right_bearer_token() {
        let token = AuthToken::new(TOKEN, "t").unwrap();
        let mut server = RequireToken(Some(token.clone()));
        let mut client = AttachToken(Some(token));
        let signed = client.call(Request::new(())).unwrap();
        assert!(server.call(signed).is_ok());

        let unsigned = Request::new(());
        let err = server.call(unsigned).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);

        let mut wrong = AttachToken(Some(
            AuthToken::new("0123456789abcdef-secreT", "t").unwrap(),
        ));
        let err = server
            .call(wrong.call(Request::new(())).unwrap())
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);

        // No token configured: everything passes, nothing is attached.
        assert!(RequireToken(None).call(Request::new(())).is_ok());
        let plain = AttachToken(None).call(Request::new(())).unwrap();
        assert!(plain.metadata().get("authorization").is_none());
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
