//! `fleetmon alerts` and `fleetmon silence add|list|expire`: the alerting API of a running
//! server, from the command line.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::say;

#[derive(Debug, Args)]
pub struct ServerUrl {
    /// The server's HTTP address.
    #[arg(long, env = "FLEETMON_URL", default_value = "http://127.0.0.1:8427")]
    pub server: String,
    /// An API token (`fleetmon token create`), needed once the server has accounts.
    #[arg(long, env = "FLEETMON_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ServerUrl {
    /// `Authorization` for the token, if any.
    fn auth(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }
}

#[derive(Debug, Args)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub url: ServerUrl,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Silence alerts matching every MATCHER (e.g. `alertname=DeviceOffline`, `site=~"b.*"`).
    Add {
        #[command(flatten)]
        url: ServerUrl,
        /// Label matchers: name=value, name!=value, name=~regex, name!~regex.
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long, e.g. 2h.
        #[arg(long, default_value = "1h")]
        duration: String,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
        /// Who [default: $USER].
        #[arg(long)]
        author: Option<String>,
    },
    /// List silences.
    List {
        #[command(flatten)]
        url: ServerUrl,
    },
    /// Expire a silence now.
    Expire {
        #[command(flatten)]
        url: ServerUrl,
        id: String,
    },
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

fn answer(
    url: &str,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> anyhow::Result<Value> {
    let mut response = response.with_context(|| format!("no answer from {url}"))?;
    let status = response.status();
    let body: Value = response
        .body_mut()
        .read_json()
        .with_context(|| format!("{url} answered {status} without JSON"))?;
    if !status.is_success() {
        let why = body["error"].as_str().unwrap_or("no reason given");
        bail!("{url}: {status}: {why}");
    }
    Ok(body)
}

fn get(server: &ServerUrl, path: &str) -> anyhow::Result<Value> {
    let url = format!("{}{path}", server.server.trim_end_matches('/'));
    let mut request = agent().get(&url);
    if let Some(auth) = server.auth() {
        request = request.header("Authorization", auth);
    }
    answer(&url, request.call())
}

pub fn list(args: &AlertsArgs) -> anyhow::Result<()> {
    let body = get(&args.url, "/api/v1/alerts")?;
    if args.json {
        say(&serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let alerts = body["alerts"].as_array().cloned().unwrap_or_default();
    if alerts.is_empty() {
        say("no alerts");
        return Ok(());
    }
    say(&format!(
        "{:<8} {:<24} {:<9} {:<20} {}",
        "STATE", "ALERT", "SEVERITY", "DEVICE", "SUMMARY"
    ));
    for a in &alerts {
        let l = &a["labels"];
        let muted = a["muting"].as_object().is_some_and(|m| {
            m.values().any(|v| {
                v.as_array().is_some_and(|x| !x.is_empty())
                    || v.as_bool() == Some(true)
                    || v.is_string()
            })
        });
        say(&format!(
            "{:<8} {:<24} {:<9} {:<20} {}{}",
            a["state"].as_str().unwrap_or(""),
            l["alertname"].as_str().unwrap_or(""),
            l["severity"].as_str().unwrap_or(""),
            l["device"].as_str().unwrap_or(""),
            a["annotations"]["summary"].as_str().unwrap_or(""),
            if muted { "  (muted)" } else { "" }
        ));
    }
    Ok(())
}

pub fn silence(command: SilenceCommand) -> anyhow::Result<()> {
    match command {
        SilenceCommand::Add {
            url,
            matchers,
            duration,
            comment,
            author,
        } => {
            let author = author
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "fleetmon-cli".to_owned());
            let target = format!("{}/api/v1/silences", url.server.trim_end_matches('/'));
            let body = json!({
                "matchers": matchers,
                "duration": duration,
                "createdBy": author,
                "comment": comment,
            });
            let mut request = agent().post(&target);
            if let Some(auth) = url.auth() {
                request = request.header("Authorization", auth);
            }
            let answer = answer(&target, request.send_json(&body))?;
            say(answer["silenceID"].as_str().unwrap_or(""));
        }
        SilenceCommand::List { url } => {
            let body = get(&url, "/api/v1/silences")?;
            for s in body["silences"].as_array().cloned().unwrap_or_default() {
                let matchers: Vec<String> = s["matchers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|m| {
                        let op = match (m["isEqual"].as_bool(), m["isRegex"].as_bool()) {
                            (Some(false), Some(true)) => "!~",
                            (_, Some(true)) => "=~",
                            (Some(false), _) => "!=",
                            _ => "=",
                        };
                        format!(
                            "{}{op}{:?}",
                            m["name"].as_str().unwrap_or(""),
                            m["value"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                say(&format!(
                    "{}  {:<8} until {}  {}  by {}  {}",
                    s["id"].as_str().unwrap_or(""),
                    s["status"]["state"]
                        .as_str()
                        .or(s["state"].as_str())
                        .unwrap_or(""),
                    s["endsAt"].as_str().unwrap_or(""),
                    matchers.join(","),
                    s["createdBy"].as_str().unwrap_or(""),
                    s["comment"].as_str().unwrap_or("")
                ));
            }
        }
        SilenceCommand::Expire { url, id } => {
            let target = format!("{}/api/v1/silences/{id}", url.server.trim_end_matches('/'));
            let mut request = agent().delete(&target);
            if let Some(auth) = url.auth() {
                request = request.header("Authorization", auth);
            }
            answer(&target, request.call())?;
            say(&format!("expired {id}"));
        }
    }
    Ok(())
}
