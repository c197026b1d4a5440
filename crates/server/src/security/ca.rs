//! The built-in certificate authority, as a directory on disk that both `fleetmon ca ...` and
//! the running server use:
//!
//! ```text
//! CA_DIR/
//!   ca.pem  ca.key          the CA certificate and its key (0600)
//!   server.pem server.key   the server's certificate and key (0600)
//!   devices/ID.pem ID.key   certificates made by `ca issue` (the key 0600)
//!   index.json              every certificate issued: device, serial, validity, revocation
//!   tokens.json             enrolment tokens, SHA-256 hashed, single use (0600)
//!   LOCK                    held while index.json or tokens.json is rewritten
//! ```
//!
//! The index is the revocation list too: the server polls it and closes live connections of
//! certificates revoked there. Files are replaced whole (write, fsync, rename), so a reader
//! never sees half of one.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

const DAY_MS: i64 = 86_400_000;
/// Certificates start a little in the past, so a device whose clock is behind accepts them.
const BACKDATE_MS: i64 = 5 * 60_000;

/// Why a CA operation failed. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no CA in {0}: create one with `fleetmon ca init --ca-dir {0}`")]
    NotInitialised(PathBuf),
    #[error("a CA already exists in {0}; it is left as it is")]
    AlreadyInitialised(PathBuf),
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path} is damaged: {problem}")]
    Damaged { path: PathBuf, problem: String },
    #[error("device id {0:?} is invalid: use 1 to 128 of A-Z a-z 0-9 . _ : -")]
    DeviceId(String),
    #[error("no certificate was issued to device {0:?}")]
    UnknownDevice(String),
    #[error("enrolment token is unknown, used or expired")]
    BadToken,
    #[error("certificate request: {0}")]
    BadRequest(String),
    #[error("the system random source failed")]
    Random,
}

/// One certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub device: String,
    /// Lower-case hex, no leading zeros.
    pub serial: String,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
    pub issued_ms: i64,
    /// `issued` (key made by the CA) or `enrolled` (key made by the device).
    pub how: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<i64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    certificates: Vec<Issued>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Token {
    sha256: String,
    device: String,
    expires_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used_ms: Option<i64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Tokens {
    tokens: Vec<Token>,
}

/// A certificate and, when the CA made it, its key (PEM).
#[derive(Debug)]
pub struct Made {
    pub cert_pem: String,
    pub key_pem: Option<String>,
    pub record: Issued,
}

/// The CA directory.
#[derive(Debug, Clone)]
pub struct CaDir {
    dir: PathBuf,
}

/// Lower-case hex of a serial without leading zero bytes (how x509 and rcgen may differ).
pub fn serial_hex(bytes: &[u8]) -> String {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower-case hex SHA-256 of a token.
fn token_hash(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random(len: usize) -> Result<Vec<u8>, CaError> {
    let mut bytes = vec![0u8; len];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Random)?;
    Ok(bytes)
}

fn datetime(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Writes `bytes` to `path` whole: a temporary file (with `mode`), fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

impl CaDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn ca_key_path(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    pub fn server_cert_path(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    pub fn server_key_path(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    pub fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    fn tokens_path(&self) -> PathBuf {
        self.dir.join("tokens.json")
    }

    /// True when the CA certificate and key are there.
    pub fn exists(&self) -> bool {
        self.ca_cert_path().is_file() && self.ca_key_path().is_file()
    }

    fn read(&self, path: &Path) -> Result<String, CaError> {
        std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound && !self.exists() {
                CaError::NotInitialised(self.dir.clone())
            } else {
                CaError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        })
    }

    /// Holds the directory's lock until dropped.
    fn lock(&self) -> Result<File, CaError> {
        let path = self.dir.join("LOCK");
        let io = |source| CaError::Io {
            path: path.clone(),
            source,
        };
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        f.lock().map_err(io)?;
        Ok(f)
    }

    /// Creates the CA: a P-256 key and a self-signed certificate valid for `days`.
    pub fn init(&self, name: &str, days: i64, now_ms: i64) -> Result<(), CaError> {
        if self.ca_key_path().exists() || self.ca_cert_path().exists() {
            return Err(CaError::AlreadyInitialised(self.dir.clone()));
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = datetime(now_ms - BACKDATE_MS);
        params.not_after = datetime(now_ms + days * DAY_MS);
        params.serial_number = Some(SerialNumber::from_slice(&self.new_serial()?));
        let cert = params.self_signed(&key)?;
        write_atomic(&self.ca_key_path(), key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&self.ca_cert_path(), cert.pem().as_bytes(), 0o644)?;
        Ok(())
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, CaError> {
        let key = KeyPair::from_pem(&self.read(&self.ca_key_path())?)?;
        Ok(Issuer::from_ca_cert_pem(
            &self.read(&self.ca_cert_path())?,
            key,
        )?)
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> Result<String, CaError> {
        self.read(&self.ca_cert_path())
    }

    /// 16 random bytes, positive and without a leading zero byte.
    fn new_serial(&self) -> Result<Vec<u8>, CaError> {
        let mut bytes = random(16)?;
        bytes[0] = (bytes[0] & 0x7f) | 0x10;
        Ok(bytes)
    }

    fn leaf_params(
        &self,
        cn: &str,
        names: &[String],
        not_before_ms: i64,
        not_after_ms: i64,
        purpose: ExtendedKeyUsagePurpose,
    ) -> Result<(CertificateParams, String), CaError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        params.use_authority_key_identifier_extension = true;
        params.not_before = datetime(not_before_ms);
        params.not_after = datetime(not_after_ms);
        let serial = self.new_serial()?;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        Ok((params, serial_hex(&serial)))
    }

    /// Writes `server.pem` and `server.key` for `names` (DNS names or IP addresses), valid for
    /// `days`. A running server picks them up without a restart.
    pub fn server_cert(&self, names: &[String], days: i64, now_ms: i64) -> Result<(), CaError> {
        let issuer = self.issuer()?;
        let cn = names.first().map_or("fleetmon server", String::as_str);
        let (params, _) = self.leaf_params(
            cn,
            names,
            now_ms - BACKDATE_MS,
            now_ms + days * DAY_MS,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        // The key first: a watcher that sees the new certificate finds its key already there.
        write_atomic(
            &self.server_key_path(),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_atomic(&self.server_cert_path(), cert.pem().as_bytes(), 0o644)?;
        Ok(())
    }

    /// A device certificate and key made here, valid from `not_before_ms` to `not_after_ms`
    /// (tests make expired ones this way), recorded in the index. Nothing is written besides
    /// the index: the caller decides where the key goes.
    pub fn issue(
        &self,
        device: &str,
        not_before_ms: i64,
        not_after_ms: i64,
        now_ms: i64,
    ) -> Result<Made, CaError> {
        check_device(device)?;
        let issuer = self.issuer()?;
        let (params, serial) = self.leaf_params(
            device,
            &[],
            not_before_ms,
            not_after_ms,
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let record = Issued {
            device: device.to_owned(),
            serial,
            not_before_ms,
            not_after_ms,
            issued_ms: now_ms,
            how: "issued".to_owned(),
            revoked_ms: None,
        };
        self.record(record.clone())?;
        Ok(Made {
            cert_pem: cert.pem(),
            key_pem: Some(key.serialize_pem()),
            record,
        })
    }

    /// Signs a device's certificate request for `device` (not recorded): the subject and
    /// extensions are the CA's choice (CN = device id, client authentication only); only the
    /// public key is taken from the request, whose signature proves the device holds the key.
    fn sign_request(
        &self,
        device: &str,
        csr_pem: &str,
        days: i64,
        now_ms: i64,
    ) -> Result<Made, CaError> {
        check_device(device)?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadRequest(e.to_string()))?;
        let issuer = self.issuer()?;
        let (not_before_ms, not_after_ms) = (now_ms - BACKDATE_MS, now_ms + days * DAY_MS);
        let (params, serial) = self.leaf_params(
            device,
            &[],
            not_before_ms,
            not_after_ms,
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let cert = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&issuer)?;
        Ok(Made {
            cert_pem: cert.pem(),
            key_pem: None,
            record: Issued {
                device: device.to_owned(),
                serial,
                not_before_ms,
                not_after_ms,
                issued_ms: now_ms,
                how: "enrolled".to_owned(),
                revoked_ms: None,
            },
        })
    }

    fn load_index(&self) -> Result<Index, CaError> {
        let path = self.index_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| CaError::Damaged {
                path,
                problem: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(source) => Err(CaError::Io { path, source }),
        }
    }

    fn save_index(&self, index: &Index) -> Result<(), CaError> {
        let json = serde_json::to_vec_pretty(index).map_err(|e| CaError::Damaged {
            path: self.index_path(),
            problem: e.to_string(),
        })?;
        write_atomic(&self.index_path(), &json, 0o644)
    }

    fn record(&self, issued: Issued) -> Result<(), CaError> {
        let _lock = self.lock()?;
        let mut index = self.load_index()?;
        index.certificates.push(issued);
        self.save_index(&index)
    }

    /// Every certificate issued, oldest first.
    pub fn list(&self) -> Result<Vec<Issued>, CaError> {
        if !self.exists() {
            return Err(CaError::NotInitialised(self.dir.clone()));
        }
        Ok(self.load_index()?.certificates)
    }

    /// Serials of revoked certificates.
    pub fn revoked_serials(&self) -> Result<HashSet<String>, CaError> {
        Ok(self
            .load_index()?
            .certificates
            .into_iter()
            .filter(|c| c.revoked_ms.is_some())
            .map(|c| c.serial)
            .collect())
    }

    /// Revokes every certificate of `device` not yet revoked; returns them.
    pub fn revoke(&self, device: &str, now_ms: i64) -> Result<Vec<Issued>, CaError> {
        let _lock = self.lock()?;
        let mut index = self.load_index()?;
        if !index.certificates.iter().any(|c| c.device == device) {
            return Err(CaError::UnknownDevice(device.to_owned()));
        }
        let mut revoked = Vec::new();
        for c in index
            .certificates
            .iter_mut()
            .filter(|c| c.device == device && c.revoked_ms.is_none())
        {
            c.revoked_ms = Some(now_ms);
            revoked.push(c.clone());
        }
        self.save_index(&index)?;
        Ok(revoked)
    }

    fn load_tokens(&self) -> Result<Tokens, CaError> {
        let path = self.tokens_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| CaError::Damaged {
                path,
                problem: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Tokens::default()),
            Err(source) => Err(CaError::Io { path, source }),
        }
    }

    fn save_tokens(&self, tokens: &mut Tokens, now_ms: i64) -> Result<(), CaError> {
        // Forget tokens a day past their use or expiry.
        tokens
            .tokens
            .retain(|t| t.used_ms.unwrap_or(t.expires_ms) + DAY_MS > now_ms);
        let json = serde_json::to_vec_pretty(tokens).map_err(|e| CaError::Damaged {
            path: self.tokens_path(),
            problem: e.to_string(),
        })?;
        write_atomic(&self.tokens_path(), &json, 0o600)
    }

    /// A new single-use enrolment token for `device`, valid for `ttl_ms`. Only its hash is
    /// kept; the token itself is returned once.
    pub fn enrol_token(&self, device: &str, ttl_ms: i64, now_ms: i64) -> Result<String, CaError> {
        check_device(device)?;
        if !self.exists() {
            return Err(CaError::NotInitialised(self.dir.clone()));
        }
        let token: String = random(32)?.iter().map(|b| format!("{b:02x}")).collect();
        let _lock = self.lock()?;
        let mut tokens = self.load_tokens()?;
        tokens.tokens.push(Token {
            sha256: token_hash(&token),
            device: device.to_owned(),
            expires_ms: now_ms + ttl_ms,
            used_ms: None,
        });
        self.save_tokens(&mut tokens, now_ms)?;
        Ok(token)
    }

    /// Uses up `token` and signs `csr_pem` for its device. A token works once, and not after
    /// it expired; a request that cannot be signed does not use the token up.
    pub fn enrol(
        &self,
        token: &str,
        csr_pem: &str,
        days: i64,
        now_ms: i64,
    ) -> Result<Made, CaError> {
        let hash = token_hash(token);
        let _lock = self.lock()?;
        let mut tokens = self.load_tokens()?;
        let t = tokens
            .tokens
            .iter_mut()
            .find(|t| t.sha256 == hash && t.used_ms.is_none() && t.expires_ms > now_ms)
            .ok_or(CaError::BadToken)?;
        let device = t.device.clone();
        let made = self.sign_request(&device, csr_pem, days, now_ms)?;
        t.used_ms = Some(now_ms);
        self.save_tokens(&mut tokens, now_ms)?;
        let mut index = self.load_index()?;
        index.certificates.push(made.record.clone());
        self.save_index(&index)?;
        Ok(made)
    }

    /// The device a token would enrol, without using it up (for the audit trail of a
    /// refused request).
    pub fn token_device(&self, token: &str) -> Option<String> {
        let hash = token_hash(token);
        self.load_tokens()
            .ok()?
            .tokens
            .into_iter()
            .find(|t| t.sha256 == hash)
            .map(|t| t.device)
    }
}

fn check_device(device: &str) -> Result<(), CaError> {
    if fleetmon_protocol::validate::is_valid_device_id(device) {
        Ok(())
    } else {
        Err(CaError::DeviceId(device.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const NOW: i64 = 1_750_000_000_000;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn init_issue_revoke_list() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CaDir::new(dir.path().join("ca"));
        assert!(matches!(ca.list(), Err(CaError::NotInitialised(_))));
        ca.init("test CA", 10, NOW).unwrap();
        assert_eq!(mode(&ca.ca_key_path()), 0o600);
        assert!(matches!(
            ca.init("again", 10, NOW),
            Err(CaError::AlreadyInitialised(_))
        ));
        ca.server_cert(&["localhost".into(), "127.0.0.1".into()], 10, NOW)
            .unwrap();
        assert_eq!(mode(&ca.server_key_path()), 0o600);
        let a = ca.issue("pi-1", NOW, NOW + DAY_MS, NOW).unwrap();
        let b = ca.issue("pi-1", NOW, NOW + DAY_MS, NOW).unwrap();
        assert_ne!(a.record.serial, b.record.serial);
        assert!(a.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(matches!(
            ca.issue("a/b", NOW, NOW, NOW),
            Err(CaError::DeviceId(_))
        ));
        assert_eq!(ca.revoke("pi-1", NOW + 1).unwrap().len(), 2);
        assert_eq!(ca.revoke("pi-1", NOW + 2).unwrap().len(), 0);
        assert!(matches!(
            ca.revoke("nope", NOW),
            Err(CaError::UnknownDevice(_))
        ));
        let listed = ca.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|c| c.revoked_ms == Some(NOW + 1)));
        assert_eq!(ca.revoked_serials().unwrap().len(), 2);
    }

    #[test]
    fn tokens_work_once_before_they_expire_and_are_kept_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CaDir::new(dir.path());
        ca.init("test CA", 10, NOW).unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let token = ca.enrol_token("pi-2", 60_000, NOW).unwrap();
        let stored = std::fs::read_to_string(ca.tokens_path()).unwrap();
        assert!(!stored.contains(&token));
        assert_eq!(mode(&ca.tokens_path()), 0o600);
        assert!(matches!(
            ca.enrol(&token, "not a csr", 1, NOW),
            Err(CaError::BadRequest(_))
        ));
        let made = ca.enrol(&token, &csr, 1, NOW).unwrap();
        assert_eq!(made.record.device, "pi-2");
        assert!(matches!(
            ca.enrol(&token, &csr, 1, NOW),
            Err(CaError::BadToken)
        ));
        let late = ca.enrol_token("pi-3", 60_000, NOW).unwrap();
        assert!(matches!(
            ca.enrol(&late, &csr, 1, NOW + 60_000),
            Err(CaError::BadToken)
        ));
        assert_eq!(ca.token_device(&late).as_deref(), Some("pi-3"));
    }
}
