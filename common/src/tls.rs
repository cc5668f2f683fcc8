//! TLS for the gRPC link (rustls): the learner's certificate, optionally a CA
//! whose client certificates it requires (mutual TLS), and the CA actors
//! trust. Files are PEM; every problem names the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS file that cannot be used; names the file and its role.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {source}", .path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {} is not a PEM file", .path.display())]
    NotPem { what: &'static str, path: PathBuf },
}

fn read_pem(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(TlsError::NotPem {
            what,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// The learner's side: its certificate chain and key, and when `client_ca` is
/// given, only clients with a certificate signed by that CA get in.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerTlsConfig, TlsError> {
    let identity = Identity::from_pem(
        read_pem(cert, "TLS certificate")?,
        read_pem(key, "TLS key")?,
    );
    let mut config = ServerTlsConfig::new()
        .identity(identity)
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = client_ca {
        config = config.client_ca_root(Certificate::from_pem(read_pem(ca, "client CA")?));
    }
    Ok(config)
}

/// The actor's side: the CA that signed the learner's certificate, its own
/// certificate and key for mutual TLS, and the name to expect in the
/// learner's certificate when it differs from the URL's host.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    domain: Option<&str>,
) -> Result<ClientTlsConfig, TlsError> {
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read_pem(ca, "TLS CA")?))
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some((cert, key)) = identity {
        config = config.identity(Identity::from_pem(
            read_pem(cert, "TLS client certificate")?,
            read_pem(key, "TLS client key")?,
        ));
    }
    if let Some(d) = domain {
        config = config.domain_name(d);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_non_pem_files_are_named() {
        let dir = crate::testing::TempDir::new("tls");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = server_config(&dir.join("none.pem"), &junk, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read TLS certificate") && e.contains("none.pem"),
            "{e}"
        );
        let e = server_config(&junk, &junk, None).unwrap_err().to_string();
        assert!(e.contains("junk.pem is not a PEM file"), "{e}");
        let e = client_config(&junk, None, None).unwrap_err().to_string();
        assert!(e.contains("TLS CA"), "{e}");
    }
}
