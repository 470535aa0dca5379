//! Entry rate limits (governor): one for the whole process, one per member, and optionally one
//! per client address (bot friction: many accounts behind one address); and a quota of polls
//! of tickets that do not exist, per member.
//!
//! Per process: N admission replicas admit up to N times the global rate, which is the point
//! of scaling them; the per-member limit is also per process, so a balancer should keep a
//! member on one replica (or accept N times the quota).

use std::{
    collections::HashMap,
    net::IpAddr,
    num::NonZeroU32,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use flash_core::{ApiError, domain::MemberId};
use governor::{
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock,
};

/// The door's limiters.
pub(crate) struct EntryLimits {
    global: DefaultDirectRateLimiter,
    per_member: DefaultKeyedRateLimiter<MemberId>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl EntryLimits {
    /// Limits per process, per member and (0 = none) per client address.
    pub(crate) fn new(
        per_second: u32,
        per_member_per_minute: u32,
        per_address_per_minute: u32,
    ) -> Self {
        Self {
            global: RateLimiter::direct(Quota::per_second(nonzero(per_second))),
            per_member: RateLimiter::keyed(Quota::per_minute(nonzero(per_member_per_minute))),
            per_address: (per_address_per_minute > 0)
                .then(|| RateLimiter::keyed(Quota::per_minute(nonzero(per_address_per_minute)))),
        }
    }

    /// Admits one entry by `member` from `address`, or says when to retry (429).
    pub(crate) fn check(&self, member: MemberId, address: IpAddr) -> Result<(), ApiError> {
        // The limiter's own clock: making a new one per request asks the CPU (CPUID) what
        // timer it has, which a virtual machine answers slowly.
        let now = self.global.clock().now();
        self.global
            .check()
            .and_then(|()| self.per_member.check_key(&member))
            .and_then(|()| {
                self.per_address
                    .as_ref()
                    .map_or(Ok(()), |limit| limit.check_key(&address))
            })
            .map_err(|not_until| {
                metrics::counter!("flash_admission_tickets_total", "outcome" => "rate_limited")
                    .increment(1);
                ApiError::RateLimited {
                    retry_after: not_until.wait_time_from(now),
                }
            })
    }

    /// Forgets members whose quota has fully replenished; run periodically.
    pub(crate) fn forget_idle(&self) {
        self.per_member.retain_recent();
        if let Some(limit) = &self.per_address {
            limit.retain_recent();
        }
    }
}

/// Polls of tickets that do not exist, per member. A miss is the dearest poll (the ticket's
/// sales read again from Redis, then PostgreSQL asked for an order), and no buyer makes many:
/// past the quota, a member's polls are refused (429) until it refills, before any lookup.
pub(crate) struct PollMisses {
    quota: DefaultKeyedRateLimiter<MemberId>,
    /// Members refused until then; the count spares every other poll the lock.
    barred: Mutex<HashMap<MemberId, Instant>>,
    any_barred: AtomicUsize,
}

impl PollMisses {
    /// `per_minute` misses per member (at least 1).
    pub(crate) fn new(per_minute: u32) -> Self {
        Self {
            quota: RateLimiter::keyed(Quota::per_minute(nonzero(per_minute))),
            barred: Mutex::default(),
            any_barred: AtomicUsize::new(0),
        }
    }

    /// Lets a poll of `member` look its ticket up, or says when to retry (429).
    pub(crate) fn check(&self, member: MemberId) -> Result<(), ApiError> {
        if self.any_barred.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut barred = self.lock();
        match barred.get(&member) {
            Some(until) if *until > now => Err(ApiError::RateLimited {
                retry_after: until.duration_since(now),
            }),
            Some(_) => {
                barred.remove(&member);
                self.any_barred.store(barred.len(), Ordering::Relaxed);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a poll of `member` that found no ticket: `not_found` within the quota; past it,
    /// the member is barred and told when to retry.
    pub(crate) fn missed(&self, member: MemberId, not_found: ApiError) -> ApiError {
        let Err(not_until) = self.quota.check_key(&member) else {
            return not_found;
        };
        metrics::counter!("flash_admission_poll_misses_barred_total").increment(1);
        let retry_after = not_until.wait_time_from(self.quota.clock().now());
        let mut barred = self.lock();
        barred.insert(member, Instant::now() + retry_after);
        self.any_barred.store(barred.len(), Ordering::Relaxed);
        ApiError::RateLimited { retry_after }
    }

    /// Forgets members whose quota refilled and bars that ended; run periodically.
    pub(crate) fn forget_idle(&self) {
        self.quota.retain_recent();
        let now = Instant::now();
        let mut barred = self.lock();
        barred.retain(|_, until| *until > now);
        self.any_barred.store(barred.len(), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MemberId, Instant>> {
        // Each use is one map operation: a panic elsewhere cannot leave it half-changed.
        self.barred
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How often idle members are forgotten.
pub(crate) const FORGET_INTERVAL: Duration = Duration::from_secs(60);
