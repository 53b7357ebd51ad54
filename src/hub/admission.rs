//! Connection admission: total, per-IP and per-user caps, held by an RAII ticket so a
//! connection's slot is returned however it ends.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::config::Limits;

#[derive(Default)]
pub struct Admission {
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    per_user: DashMap<String, usize>,
}

/// Why a connection was turned away.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    ServerFull,
    TooManyFromAddress,
    TooManyForUser,
}

impl Refusal {
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::ServerFull => "the server is at its connection limit; try again later",
            Refusal::TooManyFromAddress => "too many connections from this address",
            Refusal::TooManyForUser => "too many connections for this user; close another tab",
        }
    }
}

/// Holds one connection's slots; dropping it gives them back.
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    user: Option<String>,
}

/// Increments `map[key]` unless it is at `limit`.
fn take_slot<K: std::hash::Hash + Eq>(map: &DashMap<K, usize>, key: K, limit: usize) -> bool {
    let mut count = map.entry(key).or_insert(0);
    if *count >= limit {
        return false;
    }
    *count += 1;
    true
}

fn give_slot<K: std::hash::Hash + Eq>(map: &DashMap<K, usize>, key: &K) {
    map.remove_if_mut(key, |_, count| {
        *count -= 1;
        *count == 0
    });
}

impl Admission {
    pub fn admit(
        self: &Arc<Self>,
        limits: &Limits,
        ip: IpAddr,
        user: Option<&str>,
    ) -> Result<Ticket, Refusal> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::ServerFull);
        }
        if !take_slot(&self.per_ip, ip, limits.max_connections_per_ip) {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::TooManyFromAddress);
        }
        if let Some(user) = user {
            if !take_slot(
                &self.per_user,
                user.to_owned(),
                limits.max_connections_per_user,
            ) {
                self.release(ip, None);
                return Err(Refusal::TooManyForUser);
            }
        }
        Ok(Ticket {
            admission: self.clone(),
            ip,
            user: user.map(str::to_owned),
        })
    }

    fn release(&self, ip: IpAddr, user: Option<&String>) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        give_slot(&self.per_ip, &ip);
        if let Some(user) = user {
            give_slot(&self.per_user, user);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.release(self.ip, self.user.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            max_connections_per_user: 1,
            ..Limits::default()
        }
    }

    #[test]
    fn each_cap_refuses_and_tickets_give_slots_back() {
        let admission = Arc::new(Admission::default());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = admission.admit(&limits(), a, Some("bob")).unwrap();
        assert_eq!(
            admission.admit(&limits(), b, Some("bob")).err(),
            Some(Refusal::TooManyForUser)
        );
        let _second = admission.admit(&limits(), a, None).unwrap();
        assert_eq!(
            admission.admit(&limits(), a, None).err(),
            Some(Refusal::TooManyFromAddress)
        );
        let _third = admission.admit(&limits(), b, None).unwrap();
        assert_eq!(
            admission.admit(&limits(), b, None).err(),
            Some(Refusal::ServerFull)
        );
        drop(first);
        assert!(admission.admit(&limits(), b, Some("bob")).is_ok());
        assert_eq!(
            admission.per_user.len(),
            0,
            "the dropped ticket above gave bob's slot back"
        );
    }
}
