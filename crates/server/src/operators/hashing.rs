//! Password hashing on threads of its own at the lowest CPU priority (nice 19). An Argon2 hash
//! takes tens of milliseconds of CPU; on a small server, a burst of logins — an attack's first
//! attempts, before throttling answers the rest without hashing — would otherwise take whole
//! scheduler slices from the threads serving everyone else. At nice 19 the kernel gives the
//! hashing what the other threads leave, so other operators' requests keep their latency.
//!
//! Jobs queue for [`Workers::run`]; callers bound how many wait (the login semaphore). The
//! threads are [`crate::background`]'s.

use crate::background::Workers;

/// The hashing threads.
pub type Hashing = Workers;

/// The niceness hashing threads ask for.
pub const NICE: i32 = 19;

/// Starts `threads` hashing threads (at least one).
pub fn start(threads: usize) -> Hashing {
    Workers::start("fleetmon-hash", threads, NICE)
}
