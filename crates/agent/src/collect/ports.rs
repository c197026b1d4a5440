//! Listening ports from `<proc_root>/net/{tcp,tcp6,udp,udp6}`.
//!
//! A TCP socket listens when its state is `0A` (LISTEN). A UDP socket "listens" when it is
//! bound to a local port and not connected (state `07`, remote address all zeros, remote
//! port 0), which is how a UDP server waits for datagrams.
//!
//! On the live machine (`proc_root` = `/proc`) the same set comes from netlink `sock_diag`
//! instead, which is far cheaper (see [`super::sock_diag`]); the files are the fallback.
//!
//! Reported as `listening_ports` (the number of distinct `(protocol, port)` pairs, IPv4 and
//! IPv6 counted once) and the list itself as info-style series
//! `listening_port{protocol="tcp"|"udp",port="22"}` = 1, one per pair.

use std::collections::BTreeSet;

use super::{CollectError, Out, Roots, read_opt};

/// Distinct listening `(protocol, port)` pairs of one `/proc/net/{tcp,udp}*` file.
pub fn parse(text: &str, udp: bool) -> Vec<u16> {
    let mut ports = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let (Some((_, lport)), Some((raddr, rport))) = (f[1].split_once(':'), f[2].split_once(':'))
        else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(lport, 16) else {
            continue;
        };
        let listening = if udp {
            f[3] == "07" && rport == "0000" && raddr.bytes().all(|b| b == b'0') && port != 0
        } else {
            f[3] == "0A"
        };
        if listening {
            ports.push(port);
        }
    }
    ports
}

/// The listening pairs from the `/proc/net` files; `None` when none of them exists.
pub fn from_files(roots: &Roots) -> Result<Option<BTreeSet<(&'static str, u16)>>, CollectError> {
    let mut set: BTreeSet<(&'static str, u16)> = BTreeSet::new();
    let mut any = false;
    for (file, proto, udp) in [
        ("tcp", "tcp", false),
        ("tcp6", "tcp", false),
        ("udp", "udp", true),
        ("udp6", "udp", true),
    ] {
        if let Some(text) = read_opt(&roots.proc_root.join("net").join(file))? {
            any = true;
            set.extend(parse(&text, udp).into_iter().map(|p| (proto, p)));
        }
    }
    Ok(any.then_some(set))
}

pub fn collect(roots: &Roots, out: &mut Out) -> Result<(), CollectError> {
    let live = roots.proc_root == std::path::Path::new("/proc");
    let set = match live.then(super::sock_diag::listening) {
        Some(Ok(set)) => set,
        Some(Err(error)) => {
            tracing::debug!(%error, "sock_diag unavailable; reading /proc/net");
            match from_files(roots)? {
                Some(set) => set,
                None => return Ok(()),
            }
        }
        None => match from_files(roots)? {
            Some(set) => set,
            None => return Ok(()),
        },
    };
    out.push("listening_ports", &[], set.len() as f64);
    for (proto, port) in set {
        out.push(
            "listening_port",
            &[("protocol", proto), ("port", &port.to_string())],
            1.0,
        );
    }
    Ok(())
}
