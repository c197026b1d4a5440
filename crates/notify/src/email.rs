//! Email over SMTP with `lettre` (rustls, ring provider, system trust store).

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Message, SmtpTransport, Transport};
use tracing::debug;

use crate::config::{EmailConfig, SmtpTls};
use crate::deliver::{Deliver, Outcome};
use crate::payload::Notification;
use crate::secret::Secret;

pub(crate) fn parse_mailbox(s: &str) -> Result<Mailbox, String> {
    s.parse::<Mailbox>()
        .map_err(|e| format!("`{s}` is not an email address: {e}"))
}

/// An SMTP integration.
pub struct EmailSender {
    transport: SmtpTransport,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl EmailSender {
    /// Builds the transport; `password` is the resolved secret, if any.
    pub fn new(cfg: &EmailConfig, password: Option<Secret>) -> Result<Self, String> {
        let builder = match cfg.tls {
            SmtpTls::None => SmtpTransport::builder_dangerous(cfg.smtp_host.as_str()),
            SmtpTls::Starttls => SmtpTransport::starttls_relay(&cfg.smtp_host)
                .map_err(|e| format!("smtp_host `{}`: {e}", cfg.smtp_host))?,
            SmtpTls::Tls => SmtpTransport::relay(&cfg.smtp_host)
                .map_err(|e| format!("smtp_host `{}`: {e}", cfg.smtp_host))?,
        };
        let mut builder = builder.port(cfg.port()).timeout(Some(cfg.timeout));
        if let Some(user) = &cfg.username {
            let pw = password.map(|p| p.expose().to_owned()).unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), pw));
        }
        Ok(EmailSender {
            transport: builder.build(),
            from: parse_mailbox(&cfg.from)?,
            to: cfg
                .to
                .iter()
                .map(|t| parse_mailbox(t))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// The message for a notification: subject is its title, body its plain-text summary.
pub fn build_message(
    n: &Notification,
    from: &Mailbox,
    to: &[Mailbox],
) -> Result<Message, lettre::error::Error> {
    let mut b = Message::builder()
        .from(from.clone())
        .subject(n.title())
        .header(lettre::message::header::ContentType::TEXT_PLAIN);
    for t in to {
        b = b.to(t.clone());
    }
    b.body(n.summary_text())
}

impl Deliver for EmailSender {
    fn deliver(&mut self, n: &Notification) -> Outcome {
        let msg = match build_message(n, &self.from, &self.to) {
            Ok(m) => m,
            Err(e) => {
                return Outcome::Permanent {
                    reason: format!("cannot build email: {e}"),
                };
            }
        };
        debug!(id = %n.id, "email delivery attempt");
        match self.transport.send(&msg) {
            Ok(_) => Outcome::Delivered,
            Err(e) if e.is_permanent() => Outcome::Permanent {
                reason: format!("SMTP: {e}"),
            },
            Err(e) => Outcome::Retry {
                reason: format!("SMTP: {e}"),
                retry_after: None,
            },
        }
    }
}
