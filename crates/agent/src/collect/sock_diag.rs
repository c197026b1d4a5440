//! Listening sockets through netlink `sock_diag` (`NETLINK_SOCK_DIAG`, the interface `ss`
//! uses), asking the kernel for TCP sockets in LISTEN and UDP sockets in CLOSE (bound) only.
//!
//! # Why not only `/proc/net/tcp`
//! Reading `/proc/net/tcp` walks the whole established-connections hash table on every read,
//! and that table grows with RAM: on a 24 GiB host one read costs about 6 ms of kernel time,
//! more than the rest of a collection together. The LISTEN filter here walks only the
//! listening table. [`super::ports`] uses this when it reads the live machine (`proc_root` is
//! `/proc`) and falls back to the `/proc/net` files when netlink is unavailable (old kernels,
//! seccomp) or when the roots point elsewhere (fixtures, a host's `/proc` in a container).
//!
//! # Messages (all fields host byte order unless noted)
//! Request: `nlmsghdr` (len u32, type u16 = `SOCK_DIAG_BY_FAMILY` 20, flags u16 =
//! `NLM_F_REQUEST | NLM_F_DUMP`, seq u32, pid u32) then `inet_diag_req_v2` (family u8,
//! protocol u8, ext u8, pad u8, states u32 bitmask, 48 zero bytes of `inet_diag_sockid`).
//! Answers: `nlmsghdr`s, 4-byte aligned, until `NLMSG_DONE` (3); each carries an
//! `inet_diag_msg` whose socket id starts at byte 4: source port (big-endian) at 4..6,
//! destination port at 6..8, destination address at 24..40.

use std::collections::BTreeSet;
use std::io;

use rustix::net::netlink::{SOCK_DIAG, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType, recv, sendto, socket};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TCP_LISTEN: u32 = 10;
const TCP_CLOSE: u32 = 7;

fn request(family: u8, protocol: u8, states: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(72);
    m.extend_from_slice(&72u32.to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, protocol, 0, 0]);
    m.extend_from_slice(&states.to_ne_bytes());
    m.extend_from_slice(&[0u8; 48]);
    m
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Parses one `recv` worth of answers into `ports`; returns true at `NLMSG_DONE`.
fn parse(buf: &[u8], udp: bool, ports: &mut BTreeSet<u16>) -> io::Result<bool> {
    let mut pos = 0;
    while pos + 16 <= buf.len() {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "short netlink message");
        let len = u32_at(buf, pos).ok_or_else(bad)? as usize;
        let kind = u16_at(buf, pos + 4).ok_or_else(bad)?;
        if len < 16 || pos + len > buf.len() {
            return Err(bad());
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = u32_at(buf, pos + 16).map_or(0, |e| e as i32);
                return Err(io::Error::from_raw_os_error(-errno));
            }
            _ => {
                let msg = &buf[pos + 16..pos + len];
                if let (Some(sport), Some(dport), Some(dst)) =
                    (msg.get(4..6), msg.get(6..8), msg.get(24..40))
                {
                    let sport = u16::from_be_bytes([sport[0], sport[1]]);
                    let connected = dport != [0, 0] || dst.iter().any(|&b| b != 0);
                    if sport != 0 && !(udp && connected) {
                        ports.insert(sport);
                    }
                }
            }
        }
        pos += (len + 3) & !3;
    }
    Ok(false)
}

fn dump(family: u8, protocol: u8, states: u32) -> io::Result<BTreeSet<u16>> {
    let fd = socket(AddressFamily::NETLINK, SocketType::DGRAM, Some(SOCK_DIAG))?;
    sendto(
        &fd,
        &request(family, protocol, states),
        SendFlags::empty(),
        &SocketAddrNetlink::new(0, 0),
    )?;
    let mut ports = BTreeSet::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let (n, _) = recv(&fd, &mut buf[..], RecvFlags::empty())?;
        if n == 0 {
            return Ok(ports);
        }
        if parse(&buf[..n], protocol == IPPROTO_UDP, &mut ports)? {
            return Ok(ports);
        }
    }
}

/// Listening `(protocol, port)` pairs of this network namespace: TCP in LISTEN, UDP bound and
/// unconnected, IPv4 and IPv6 together.
pub fn listening() -> io::Result<BTreeSet<(&'static str, u16)>> {
    let mut set = BTreeSet::new();
    for family in [AF_INET, AF_INET6] {
        for (name, protocol, state) in [
            ("tcp", IPPROTO_TCP, TCP_LISTEN),
            ("udp", IPPROTO_UDP, TCP_CLOSE),
        ] {
            match dump(family, protocol, 1 << state) {
                Ok(ports) => set.extend(ports.into_iter().map(|p| (name, p))),
                // A kernel without IPv6 answers ENOENT or EAFNOSUPPORT for that family.
                Err(e) if family == AF_INET6 && matches!(e.raw_os_error(), Some(2 | 97)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(set)
}
