//! In-process rate limits (governor) on the endpoints that cost the most or can be abused:
//! login (password guessing) and verification emails (spam).
//!
//! Limits are per process: with N member-api replicas behind a balancer a client gets up to N
//! times the quota, which still bounds guessing. Keys are forgotten when idle, so memory stays
//! bounded however many addresses are tried.

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use flash_core::{ApiError, domain::MemberId};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

use crate::config::LimitArgs;

/// The member-api rate limiters.
pub(crate) struct Limits {
    login_by_email: DefaultKeyedRateLimiter<String>,
    login_by_ip: DefaultKeyedRateLimiter<IpAddr>,
    verification_by_member: DefaultKeyedRateLimiter<MemberId>,
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Limits {
    pub(crate) fn new(args: &LimitArgs) -> Self {
        Self {
            login_by_email: RateLimiter::keyed(Quota::per_minute(nonzero(
                args.login_per_minute_per_email,
            ))),
            login_by_ip: RateLimiter::keyed(Quota::per_minute(nonzero(
                args.login_per_minute_per_ip,
            ))),
            verification_by_member: RateLimiter::keyed(Quota::per_hour(nonzero(
                args.verification_emails_per_hour,
            ))),
        }
    }

    /// Admits one login attempt for this address and email, or says when to retry. Both are
    /// charged before the password is checked, so a known and an unknown email behave alike.
    pub(crate) fn check_login(&self, ip: IpAddr, email: &str) -> Result<(), ApiError> {
        let by_ip = self.login_by_ip.check_key(&ip);
        let by_email = self.login_by_email.check_key(&email.to_owned());
        match (by_ip, by_email) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(not_until), _) | (_, Err(not_until)) => Err(ApiError::RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }),
        }
    }

    /// Admits one verification email for this member.
    pub(crate) fn check_verification(&self, member: MemberId) -> Result<(), ApiError> {
        self.verification_by_member
            .check_key(&member)
            .map_err(|not_until| ApiError::RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            })
    }

    /// Forgets keys whose quota has fully replenished; run periodically.
    pub(crate) fn forget_idle(&self) {
        self.login_by_email.retain_recent();
        self.login_by_ip.retain_recent();
        self.verification_by_member.retain_recent();
    }
}

/// How often idle rate-limit keys are forgotten.
pub(crate) const FORGET_INTERVAL: Duration = Duration::from_secs(60);
