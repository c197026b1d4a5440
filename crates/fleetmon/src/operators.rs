//! `fleetmon user ...`, `fleetmon token ...` and `fleetmon audit verify`: operator accounts,
//! API tokens and the audit log, in the data directory a server uses (`--data-dir`). A running
//! server sees a new or removed account at its next request. Every change is audited with the
//! actor `cli:$USER` and the source `local`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use fleetmon_server::clock::{Clock, SystemClock};
use fleetmon_server::operators::audit::{self, AuditLog};
use fleetmon_server::operators::users::{self, User};
use fleetmon_server::operators::{AuthConfig, Operators, Role, new_totp_secret};

use crate::say;

#[derive(Debug, Args)]
pub struct DataDir {
    /// The server's data directory (users.json, audit.log live there).
    #[arg(long, env = "FLEETMON_DATA_DIR", default_value = "fleetmon-data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add an operator account. The password is asked for on the terminal, or read from
    /// --password-file (its first line).
    Add {
        name: String,
        /// Make the account an admin (same as --role admin).
        #[arg(long, conflicts_with = "role")]
        admin: bool,
        /// viewer, operator or admin [default: viewer].
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Turn on two-factor login: prints the TOTP secret and otpauth:// URI to add to an
        /// authenticator app.
        #[arg(long)]
        totp: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List accounts: name, role, two-factor.
    List {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Remove an account; its sessions end.
    Remove {
        name: String,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Set a new password (asked for, or from --password-file).
    Passwd {
        name: String,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Turn two-factor login on with a new secret (printed), or off with --off.
    Totp {
        name: String,
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token (`Authorization: Bearer TOKEN`); printed once, only its hash kept.
    Create {
        /// What it is for, e.g. `ci` or `prometheus`.
        #[arg(long)]
        name: String,
        /// viewer, operator or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List tokens (names and roles; the tokens themselves are not kept).
    List {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Revoke the token named NAME.
    Revoke {
        name: String,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chain; names the first broken line.
    Verify {
        #[command(flatten)]
        dir: DataDir,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?}: expected viewer, operator or admin"))
}

fn operators(dir: &Path) -> Operators {
    Operators::new(dir, AuthConfig::default(), Arc::new(SystemClock))
}

/// `cli:$USER`, the audit log's actor for command-line changes.
pub fn cli_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned())
    )
}

fn record(ops: &Operators, action: &str, detail: &str) {
    ops.record(&cli_actor(), "local", action, "ok", detail);
}

/// Appends a CA action to the audit log of `data_dir`.
pub fn audit_ca(data_dir: &Path, action: &str, detail: &str) -> anyhow::Result<()> {
    AuditLog::new(data_dir)
        .append(
            &audit::Action {
                actor: &cli_actor(),
                source: "local",
                action,
                outcome: "ok",
                detail,
            },
            SystemClock.now_ms(),
        )
        .context("writing the audit log")?;
    Ok(())
}

pub fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            admin,
            role,
            password_file,
            totp,
            dir,
        } => {
            let role = if admin {
                Role::Admin
            } else {
                role.unwrap_or(Role::Viewer)
            };
            users::check_name(&name)?;
            let ops = operators(&dir.data_dir);
            if ops.users.accounts().user(&name).is_some() {
                bail!("user {name:?} already exists");
            }
            let password = read_password(password_file.as_deref(), true)?;
            let (secret, uri) = if totp {
                let (s, u) = new_totp_secret(&name).context("no secure random numbers")?;
                (Some(s), Some(u))
            } else {
                (None, None)
            };
            ops.users.add_user(User {
                name: name.clone(),
                role,
                password: users::hash_password(&password)?,
                totp: secret.clone(),
                created_ms: ops.now_ms(),
            })?;
            let with = if totp { ", two-factor" } else { "" };
            record(&ops, "user.add", &format!("{name} ({role}{with})"));
            say(&format!(
                "user {name:?} added as {role} in {}",
                ops.users.path().display()
            ));
            if let (Some(secret), Some(uri)) = (secret, uri) {
                say(&format!(
                    "TOTP secret {secret}\n{uri}\nAdd it to an authenticator app now; it is not shown again."
                ));
            }
        }
        UserCommand::List { dir } => {
            let ops = operators(&dir.data_dir);
            say(&format!("{:<24} {:<9} TWO-FACTOR", "USER", "ROLE"));
            for u in &ops.users.accounts().users {
                let two = if u.totp.is_some() { "on" } else { "off" };
                say(&format!("{:<24} {:<9} {two}", u.name, u.role.as_str()));
            }
        }
        UserCommand::Remove { name, dir } => {
            let ops = operators(&dir.data_dir);
            ops.users.remove_user(&name)?;
            record(&ops, "user.remove", &name);
            say(&format!("user {name:?} removed"));
        }
        UserCommand::Passwd {
            name,
            password_file,
            dir,
        } => {
            let ops = operators(&dir.data_dir);
            if ops.users.accounts().user(&name).is_none() {
                bail!("no user {name:?}");
            }
            let hash = users::hash_password(&read_password(password_file.as_deref(), true)?)?;
            ops.users.change_user(&name, |u| u.password = hash)?;
            record(&ops, "user.password", &name);
            say(&format!("password of {name:?} changed"));
        }
        UserCommand::Totp { name, off, dir } => {
            let ops = operators(&dir.data_dir);
            if off {
                ops.users.change_user(&name, |u| u.totp = None)?;
                record(&ops, "user.totp", &format!("{name}: off"));
                say(&format!("two-factor login off for {name:?}"));
            } else {
                let (secret, uri) = new_totp_secret(&name).context("no secure random numbers")?;
                let s = secret.clone();
                ops.users.change_user(&name, |u| u.totp = Some(s))?;
                record(&ops, "user.totp", &format!("{name}: new secret"));
                say(&format!("TOTP secret {secret}\n{uri}"));
            }
        }
    }
    Ok(())
}

pub fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { name, role, dir } => {
            let ops = operators(&dir.data_dir);
            let token = ops.users.create_token(&name, role, ops.now_ms())?;
            record(&ops, "token.create", &format!("{name} ({role})"));
            say(&token);
        }
        TokenCommand::List { dir } => {
            let ops = operators(&dir.data_dir);
            say(&format!("{:<24} {:<9} CREATED", "TOKEN", "ROLE"));
            for t in &ops.users.accounts().tokens {
                say(&format!(
                    "{:<24} {:<9} {}",
                    t.name,
                    t.role.as_str(),
                    fleetmon_alert_time(t.created_ms)
                ));
            }
        }
        TokenCommand::Revoke { name, dir } => {
            let ops = operators(&dir.data_dir);
            ops.users.revoke_token(&name)?;
            record(&ops, "token.revoke", &name);
            say(&format!("token {name:?} revoked"));
        }
    }
    Ok(())
}

fn fleetmon_alert_time(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn audit(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { dir } => {
            let path = AuditLog::new(&dir.data_dir).path().to_owned();
            let ok = audit::verify(&path)?;
            say(&format!(
                "{}: {} lines, chain intact; last line's SHA-256 {}",
                path.display(),
                ok.lines,
                ok.head
            ));
        }
    }
    Ok(())
}

/// The password: the first line of `file`, or asked for twice on the terminal without echo.
fn read_password(file: Option<&Path>, confirm: bool) -> anyhow::Result<String> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the password file {}", file.display()))?;
        return Ok(text.lines().next().unwrap_or_default().to_owned());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("no terminal to ask for a password on: give --password-file FILE");
    }
    let first = prompt("Password: ")?;
    if confirm {
        let again = prompt("Again: ")?;
        if again != first {
            bail!("the passwords differ");
        }
    }
    Ok(first)
}

/// Asks on stderr and reads a line from the terminal with echo off.
fn prompt(question: &str) -> anyhow::Result<String> {
    let mut err = std::io::stderr();
    let _ = write!(err, "{question}");
    let _ = err.flush();
    let stdin = std::io::stdin();
    let old = rustix::termios::tcgetattr(&stdin).context("reading the terminal settings")?;
    let mut quiet = old.clone();
    quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
    rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet)
        .context("turning echo off")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &old);
    let _ = writeln!(err);
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
