//! Destinations: `--dest NAME=HOST:PORT[,tls][,ca=FILE][,sni=HOST]`, and
//! the TLS client configuration a TLS destination gets (rustls with the
//! ring provider; roots from `ca=FILE`, or the system's bundle).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

/// The system's CA bundle, for `tls` without `ca=`.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// One `--dest`, as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestSpec {
    pub name: String,
    /// `HOST:PORT` as written (resolved at start).
    pub addr: String,
    pub tls: bool,
    pub ca: Option<PathBuf>,
    /// The name the certificate must carry (default: HOST).
    pub sni: Option<String>,
}

impl std::str::FromStr for DestSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<DestSpec, String> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected NAME=HOST:PORT[,tls][,ca=FILE][,sni=HOST]"))?;
        if !crate::layout::valid_name(name) {
            return Err(format!(
                "{name:?}: a destination name is 1-64 of [A-Za-z0-9._-], not starting with '.'"
            ));
        }
        let mut parts = rest.split(',');
        let addr = parts.next().unwrap_or_default().to_string();
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!("{addr:?}: expected HOST:PORT"));
        }
        let mut d = DestSpec {
            name: name.to_string(),
            addr,
            tls: false,
            ca: None,
            sni: None,
        };
        for opt in parts {
            match opt.split_once('=') {
                None if opt == "tls" => d.tls = true,
                Some(("ca", f)) if !f.is_empty() => d.ca = Some(f.into()),
                Some(("sni", h)) if !h.is_empty() => d.sni = Some(h.into()),
                _ => {
                    return Err(format!(
                        "{opt:?}: unknown destination option (tls, ca=FILE, sni=HOST)"
                    ));
                }
            }
        }
        if (d.ca.is_some() || d.sni.is_some()) && !d.tls {
            return Err(format!("{s:?}: ca= and sni= need tls"));
        }
        Ok(d)
    }
}

/// A destination ready to connect to.
#[derive(Clone, Debug)]
pub struct Dest {
    pub name: String,
    pub addr: SocketAddr,
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl DestSpec {
    /// Resolves the address and loads the TLS roots.
    pub fn resolve(&self) -> Result<Dest, String> {
        let addr = self
            .addr
            .to_socket_addrs()
            .map_err(|e| format!("destination {}: {}: {e}", self.name, self.addr))?
            .next()
            .ok_or_else(|| format!("destination {}: {} has no address", self.name, self.addr))?;
        let tls = if self.tls {
            let host = self.sni.clone().unwrap_or_else(|| {
                let h = self.addr.rsplit_once(':').map_or("", |(h, _)| h);
                h.trim_start_matches('[').trim_end_matches(']').to_string()
            });
            let server = ServerName::try_from(host.clone())
                .map_err(|e| format!("destination {}: {host:?}: {e}", self.name))?;
            let roots = self.ca.clone().unwrap_or_else(|| SYSTEM_ROOTS.into());
            Some((
                client_config(&roots).map_err(|e| format!("destination {}: {e}", self.name))?,
                server,
            ))
        } else {
            None
        };
        Ok(Dest {
            name: self.name.clone(),
            addr,
            tls,
        })
    }
}

/// A rustls client configuration trusting the certificates in `ca`.
pub fn client_config(ca: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificates", ca.display()));
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        let d: DestSpec = "logs=127.0.0.1:9000,tls,ca=/tmp/ca.pem".parse().unwrap();
        assert_eq!(
            d,
            DestSpec {
                name: "logs".into(),
                addr: "127.0.0.1:9000".into(),
                tls: true,
                ca: Some("/tmp/ca.pem".into()),
                sni: None
            }
        );
        let d: DestSpec = "a=localhost:1".parse().unwrap();
        assert!(!d.tls);
        for bad in [
            "nohost",
            "=h:1",
            "a=h",
            "a=h:99999",
            "a=:1",
            "a=h:1,gzip",
            "a=h:1,ca=/x",
            "../x=h:1",
        ] {
            assert!(bad.parse::<DestSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_ca_file_is_an_error_not_a_panic() {
        let d: DestSpec = "a=127.0.0.1:1,tls,ca=/nonexistent/ca.pem".parse().unwrap();
        let e = d.resolve().unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
