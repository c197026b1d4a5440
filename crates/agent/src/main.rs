//! The `fleetmon-agent` binary: parses flags, builds the configuration, calls the library.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleetmon_agent::collect::{AgentStats, Collector, system};
use fleetmon_agent::config::{Config, DEFAULT_TOML, Overrides};
use fleetmon_agent::snapshot;

#[derive(Debug, Parser)]
#[command(name = "fleetmon-agent", version, about = "fleetmon device agent")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Prints one collection.
    Snapshot {
        /// JSON array of {"metric","labels","value"} (the only format).
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "DIR", default_value = "/proc")]
        proc_root: PathBuf,
        #[arg(long, value_name = "DIR", default_value = "/sys")]
        sys_root: PathBuf,
        #[arg(long, value_name = "DIR", default_value = "/etc")]
        etc_root: PathBuf,
        #[arg(long, value_name = "DIR", default_value = "/")]
        host_root: PathBuf,
        /// How long cpu usage is measured over.
        #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
        cpu_window: Duration,
        #[arg(long, value_name = "FILE")]
        firmware_file: Option<PathBuf>,
        #[arg(long, value_name = "CMD")]
        firmware_command: Option<String>,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
    /// Runs the agent.
    Run(RunArgs),
    /// Gets this device a certificate: makes a key and a certificate request, trades the
    /// token from `fleetmon ca enrol-token DEVICE` for a certificate, and writes key,
    /// certificate and CA where `server.tls_key_file`, `tls_cert_file` and `tls_ca_file` say.
    Enrol(EnrolArgs),
}

#[derive(Debug, clap::Args)]
struct EnrolArgs {
    /// The server's HTTP base URL, e.g. http://server:8427.
    #[arg(long, value_name = "URL", env = "FLEETMON_AGENT_ENROL_SERVER")]
    server: String,
    /// The single-use enrolment token.
    #[arg(long, env = "FLEETMON_AGENT_ENROL_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long, value_name = "FILE", env = "FLEETMON_AGENT_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "FLEETMON_AGENT_DEVICE_ID")]
    device_id: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Prints the commented default configuration.
    Default,
    /// Parses and validates a file, then prints the effective configuration.
    Check {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[arg(long, value_name = "FILE", env = "FLEETMON_AGENT_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "FLEETMON_AGENT_DEVICE_ID")]
    device_id: Option<String>,
    #[arg(long, value_name = "HOST:PORT", env = "FLEETMON_AGENT_MQTT")]
    mqtt: Option<String>,
    #[arg(long, value_name = "URL", env = "FLEETMON_AGENT_HTTP_URL")]
    http_url: Option<String>,
    #[arg(long, env = "FLEETMON_AGENT_INTERVAL", value_parser = humantime::parse_duration)]
    interval: Option<Duration>,
    #[arg(long, value_name = "DIR", env = "FLEETMON_AGENT_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    #[arg(long, env = "FLEETMON_AGENT_SPOOL_MAX_BYTES")]
    spool_max_bytes: Option<u64>,
    #[arg(long, value_name = "DIR", env = "FLEETMON_AGENT_PROC_ROOT")]
    proc_root: Option<PathBuf>,
    #[arg(long, value_name = "DIR", env = "FLEETMON_AGENT_SYS_ROOT")]
    sys_root: Option<PathBuf>,
}

fn load(args: RunArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.apply(Overrides {
        device_id: args.device_id,
        mqtt: args.mqtt,
        http_url: args.http_url,
        interval: args.interval,
        spool_dir: args.spool_dir,
        spool_max_bytes: args.spool_max_bytes,
        proc_root: args.proc_root,
        sys_root: args.sys_root,
    });
    Ok(config.validate()?)
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[allow(clippy::print_stdout)] // printing is this binary's job
fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Cmd::Snapshot {
            json: _,
            proc_root,
            sys_root,
            etc_root,
            host_root,
            cpu_window,
            firmware_file,
            firmware_command,
        } => {
            let roots = fleetmon_agent::collect::Roots {
                proc_root,
                sys_root,
                etc_root,
                host_root,
            };
            let firmware =
                system::firmware_version(firmware_file.as_deref(), firmware_command.as_deref());
            let mut collector = Collector::new(roots, firmware, Arc::new(AgentStats::default()));
            let entries = snapshot::take(&mut collector, cpu_window, wall_clock_ms());
            println!("{}", snapshot::to_json(&entries)?);
        }
        Cmd::Config {
            command: ConfigCmd::Default,
        } => print!("{DEFAULT_TOML}"),
        Cmd::Config {
            command: ConfigCmd::Check { config },
        } => {
            let c = Config::load(&config)?.validate()?;
            println!("{c:#?}");
        }
        Cmd::Enrol(args) => {
            let mut config = match &args.config {
                Some(path) => Config::load(path)?,
                None => Config::default(),
            };
            config.apply(Overrides {
                device_id: args.device_id,
                ..Overrides::default()
            });
            let config = config.validate().context("configuration")?;
            let done = fleetmon_agent::enrol::enrol(&config, &args.server, &args.token)
                .context("enrolment")?;
            println!(
                "enrolled {:?}: certificate {} in {}, key in {}{}",
                done.device,
                done.serial,
                done.cert_file.display(),
                done.key_file.display(),
                done.ca_file
                    .map(|p| format!(", CA in {}", p.display()))
                    .unwrap_or_default()
            );
        }
        Cmd::Run(args) => {
            let config = load(args).context("configuration")?;
            fleetmon_agent::agent::run_blocking(config)?;
        }
    }
    Ok(())
}
