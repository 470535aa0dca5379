//! Entry rate limits (governor): one for the whole process, one per member, and optionally one
//! per client address (bot friction: many accounts behind one address).
//!
//! Per process: N admission replicas admit up to N times the global rate, which is the point
//! of scaling them; the per-member limit is also per process, so a balancer should keep a
//! member on one replica (or accept N times the quota).

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

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

/// How often idle members are forgotten.
pub(crate) const FORGET_INTERVAL: Duration = Duration::from_secs(60);
