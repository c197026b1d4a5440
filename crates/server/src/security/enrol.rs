//! Enrolment: a device makes its own key and a certificate request, and trades a single-use,
//! expiring token (from `fleetmon ca enrol-token DEVICE`) for a certificate — the private key
//! never leaves the device. The token names the device; the certificate's common name is
//! that device whatever the request asked for. Both outcomes are security events.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::Security;
use super::ca::CaError;
use super::events::Kind;

/// How long an enrolled certificate is valid.
pub const CERT_DAYS: i64 = 365;

/// `POST /api/v1/enrol` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub token: String,
    /// PEM certificate signing request.
    pub csr: String,
}

/// What the device gets back.
#[derive(Debug, Serialize)]
pub struct Response {
    pub device: String,
    /// PEM certificate.
    pub certificate: String,
    /// PEM CA certificate: what the device's TLS client should trust.
    pub ca: String,
    pub serial: String,
    pub not_after_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("this server has no CA; enrolment is off (see `fleetmon ca init`)")]
    NoCa,
    #[error("enrolment token is unknown, used or expired")]
    BadToken,
    #[error("{0}")]
    BadRequest(String),
    #[error("enrolment failed: {0}")]
    Internal(String),
}

/// Signs `req.csr` if `req.token` is good. Blocking (file locks and writes).
pub fn enrol(
    security: &Security,
    req: &Request,
    source: Option<SocketAddr>,
) -> Result<Response, EnrolError> {
    let ca = security.ca.as_ref().ok_or(EnrolError::NoCa)?;
    let now = security.now_ms();
    let refuse = |device: Option<&str>, detail: String| {
        security
            .events
            .record(now, Kind::EnrolmentRefused, device, source, detail);
    };
    match ca.enrol(&req.token, &req.csr, CERT_DAYS, now) {
        Ok(made) => {
            let ca_pem = ca
                .ca_pem()
                .map_err(|e| EnrolError::Internal(e.to_string()))?;
            security.events.record(
                now,
                Kind::Enrolled,
                Some(&made.record.device),
                source,
                format!("certificate {} issued by enrolment", made.record.serial),
            );
            Ok(Response {
                device: made.record.device,
                certificate: made.cert_pem,
                ca: ca_pem,
                serial: made.record.serial,
                not_after_ms: made.record.not_after_ms,
            })
        }
        Err(CaError::BadToken) => {
            let device = ca.token_device(&req.token);
            refuse(
                device.as_deref(),
                "enrolment token unknown, already used or expired".to_owned(),
            );
            Err(EnrolError::BadToken)
        }
        Err(e @ (CaError::BadRequest(_) | CaError::DeviceId(_))) => {
            refuse(
                ca.token_device(&req.token).as_deref(),
                format!("enrolment request refused: {e}"),
            );
            Err(EnrolError::BadRequest(e.to_string()))
        }
        Err(e) => Err(EnrolError::Internal(e.to_string())),
    }
}
