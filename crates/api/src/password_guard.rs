//! Slows the guessing of a user's password. A password is checked in two places — login,
//! and the current password a password change asks for — and each check costs an argon2
//! hash, so without a brake a client could try as many passwords as the server has CPU
//! for, and keep it busy doing so.
//!
//! The brake is per user name (known or not, so it tells nothing about who exists), the
//! way NIST SP 800-63B asks verifiers to limit failed attempts on one account: the first
//! [`FREE_TRIES`] checks since the user's last success go through; each later one must come
//! at least a wait after the previous one, doubling from [`FIRST_WAIT`] up to
//! [`LONGEST_WAIT`]. A try that comes too soon is answered 429 at once, without hashing.
//! A try counts when it is let through, not when it fails, so parallel requests cannot all
//! slip in before the first failure is recorded; a success clears the count.
//!
//! It is per server and in memory: a restart forgets it, and several servers each brake on
//! their own (the attacker gains a factor of their number, not a way around it). Keys are
//! user names, not client addresses, because behind a reverse proxy every client shares
//! one address and a brake by address would lock everyone out together.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Checks let through without waiting since a user's last success.
pub const FREE_TRIES: u32 = 5;
/// The wait before the first try beyond the free ones; it doubles with each further try.
pub const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait between two tries (about 300 guesses a day once reached).
pub const LONGEST_WAIT: Duration = Duration::from_secs(300);
/// A name with no try for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Names tracked at once. When full, names not braked now are forgotten first, so a flood
/// of made-up names cannot push out one being braked.
const NAMES: usize = 65_536;

/// The tries of one user name since its last success.
#[derive(Debug, Clone, Copy)]
struct Tries {
    count: u32,
    last: Instant,
}

impl Tries {
    /// How long after `last` the next try may come.
    fn wait(&self) -> Duration {
        match self.count.checked_sub(FREE_TRIES) {
            None => Duration::ZERO,
            Some(over) => FIRST_WAIT
                .checked_mul(1u32.checked_shl(over).unwrap_or(u32::MAX))
                .unwrap_or(LONGEST_WAIT)
                .min(LONGEST_WAIT),
        }
    }
}

/// The brake on password checks; one per server (cheap to clone).
#[derive(Clone, Default)]
pub struct PasswordGuard {
    tries: std::sync::Arc<Mutex<HashMap<String, Tries>>>,
}

impl PasswordGuard {
    /// Lets a password check for `user` go ahead, counting it, or says how long to wait.
    pub fn admit(&self, user: &str) -> Result<(), Duration> {
        self.admit_at(user, Instant::now())
    }

    /// The check for `user` was right: its count starts again.
    pub fn succeeded(&self, user: &str) {
        self.tries.lock().remove(user);
    }

    fn admit_at(&self, user: &str, now: Instant) -> Result<(), Duration> {
        let mut tries = self.tries.lock();
        if let Some(t) = tries.get_mut(user) {
            let since = now.saturating_duration_since(t.last);
            if since >= FORGET_AFTER {
                t.count = 0;
            }
            let wait = t.wait();
            if since < wait {
                return Err(wait - since);
            }
            t.count = t.count.saturating_add(1);
            t.last = now;
            return Ok(());
        }
        if tries.len() >= NAMES {
            tries.retain(|_, t| {
                now.saturating_duration_since(t.last) < FORGET_AFTER && t.count >= FREE_TRIES
            });
            if tries.len() >= NAMES {
                // Every tracked name is being braked: the new one goes unbraked this once
                // rather than any braked one being let go.
                return Ok(());
            }
        }
        tries.insert(
            user.to_string(),
            Tries {
                count: 1,
                last: now,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_free_tries_pass_then_each_waits_twice_as_long() {
        let guard = PasswordGuard::default();
        let t0 = Instant::now();
        for _ in 0..FREE_TRIES {
            guard.admit_at("ann", t0).unwrap();
        }
        // The sixth at once is refused, for the first wait; after it, it passes.
        assert_eq!(guard.admit_at("ann", t0), Err(FIRST_WAIT));
        let t1 = t0 + FIRST_WAIT;
        guard.admit_at("ann", t1).unwrap();
        assert_eq!(guard.admit_at("ann", t1), Err(FIRST_WAIT * 2));
        let t2 = t1 + FIRST_WAIT * 2;
        guard.admit_at("ann", t2).unwrap();
        assert_eq!(
            guard.admit_at("ann", t2 + Duration::from_secs(1)),
            Err(FIRST_WAIT * 4 - Duration::from_secs(1))
        );
        // Another name is not braked by ann's tries.
        guard.admit_at("bob", t2).unwrap();
    }

    #[test]
    fn the_wait_stops_growing_at_the_longest() {
        let guard = PasswordGuard::default();
        let mut now = Instant::now();
        for _ in 0..200 {
            if let Err(wait) = guard.admit_at("ann", now) {
                assert!(wait <= LONGEST_WAIT, "{wait:?}");
                now += wait;
                guard.admit_at("ann", now).unwrap();
            }
        }
        assert_eq!(guard.admit_at("ann", now), Err(LONGEST_WAIT));
    }

    #[test]
    fn a_success_starts_the_count_again_and_so_does_a_long_pause() {
        let guard = PasswordGuard::default();
        let t0 = Instant::now();
        for _ in 0..FREE_TRIES {
            guard.admit_at("ann", t0).unwrap();
        }
        guard.succeeded("ann");
        for _ in 0..FREE_TRIES {
            guard.admit_at("ann", t0).unwrap();
        }
        assert!(guard.admit_at("ann", t0).is_err());
        let later = t0 + FORGET_AFTER;
        for _ in 0..FREE_TRIES {
            guard.admit_at("ann", later).unwrap();
        }
        assert!(guard.admit_at("ann", later).is_err());
    }

    #[test]
    fn a_flood_of_names_does_not_release_a_braked_one() {
        let guard = PasswordGuard::default();
        let t0 = Instant::now();
        for _ in 0..=FREE_TRIES {
            let _ = guard.admit_at("ann", t0);
        }
        for i in 0..NAMES + 10 {
            guard.admit_at(&format!("made-up-{i}"), t0).unwrap();
        }
        assert!(guard.tries.lock().len() <= NAMES);
        assert!(guard.admit_at("ann", t0).is_err());
    }
}
