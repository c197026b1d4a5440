//! The `fleetmon` operator binary: parses the command line and hands over to the libraries.
//! Its output on stdout is its interface (URLs, JSON summaries); logs go to stderr.

mod alerts;
mod anomaly;
mod ca;
mod cli;
mod config;
mod demo;
mod operators;

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use fleetmon_server::Server;
use fleetmon_server::clock::SystemClock;

use cli::{Cli, Command, ServerArgs, SimArgs};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log.as_deref());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => server(*args).await,
            Command::Sim(args) => sim(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Anomaly(command) => anomaly::run(command),
            Command::Alerts(args) => alerts::list(&args),
            Command::Silence(command) => alerts::silence(command),
            Command::Ca(args) => ca::run(args),
            Command::User(command) => operators::user(command),
            Command::Token(command) => operators::token(command),
            Command::Audit(command) => operators::audit(command),
            Command::Config(cli::ConfigCommand::Default) => {
                say(config::DEFAULT.trim_end());
                Ok(())
            }
        }
    })
}

fn init_logging(filter: Option<&str>) {
    let filter = filter
        .map(str::to_owned)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_owned());
    let env_filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("fleetmon: log filter {filter:?} is invalid ({e}); using `info`");
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let server = Server::start(config, Arc::new(SystemClock))
        .await
        .context("starting the server")?;
    let tls = server
        .mqtt_tls_addr()
        .map_or_else(String::new, |a| format!(" mqtts://{a}"));
    say(&format!(
        "fleetmon server: http://{}/ mqtt://{}{tls}",
        server.http_addr(),
        server.mqtt_addr()
    ));
    if let Some(token) = server.setup_token() {
        say(&format!(
            "no operator account exists and login is required. Create the first admin within this run with the one-time setup token:\n  curl -X POST http://{}/api/v1/setup -H 'Content-Type: application/json' -d '{{\"token\": \"{token}\", \"user\": \"NAME\", \"password\": \"...\", \"totp\": true}}'\nor run `fleetmon user add NAME --admin` on this machine.",
            server.http_addr()
        ));
    }
    wait_for_stop(&server).await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Until Ctrl-C or SIGTERM; each SIGHUP meanwhile reloads the alert rules and device tags.
async fn wait_for_stop(server: &Server) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            let stop = wait_for_signal();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = hup.recv() => {
                        match server.reload_rules() {
                            Ok(()) => tracing::info!("alert rules reloaded"),
                            Err(e) => tracing::error!(error = %e, "alert rules not reloaded; the old ones stay"),
                        }
                        match server.reload_device_tags() {
                            Ok(true) => tracing::info!("device tags reloaded"),
                            Ok(false) => {}
                            Err(e) => tracing::error!(error = %e, "device tags not reloaded; the old ones stay"),
                        }
                    }
                }
            }
        }
    }
    wait_for_signal().await;
}

async fn sim(args: SimArgs) -> anyhow::Result<()> {
    let options = args.into_options()?;
    let summary = fleetmon_sim::run(options, wait_for_signal())
        .await
        .context("running the simulated fleet")?;
    say(&serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// Writes a line of output. A closed stdout (`fleetmon demo | head`) is not an error worth
/// dying for: the work goes on, the line is dropped.
pub fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
