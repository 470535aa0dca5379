//! The gateway's rate limits (governor): one per route group, keyed by client address, so
//! password guessing on `/auth/*` is slowed without throttling catalog browsing.
//!
//! Per process, like the entry limits: N replicas allow N times the quota.

use std::{net::IpAddr, num::NonZeroU32};

use flash_core::ApiError;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

use super::RouteGroup;
use crate::config::GatewayArgs;

/// One optional limiter per route group (`None` = that group is not limited).
pub(super) struct RouteLimits {
    auth: Option<DefaultKeyedRateLimiter<IpAddr>>,
    members: Option<DefaultKeyedRateLimiter<IpAddr>>,
    catalog: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

fn per_minute(n: u32) -> Option<DefaultKeyedRateLimiter<IpAddr>> {
    NonZeroU32::new(n).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
}

impl RouteLimits {
    /// The limits the settings ask for.
    pub(super) fn new(args: &GatewayArgs) -> Self {
        Self {
            auth: per_minute(args.gateway_auth_rate_per_address_per_min),
            members: per_minute(args.gateway_members_rate_per_address_per_min),
            catalog: per_minute(args.gateway_catalog_rate_per_address_per_min),
        }
    }

    fn of(&self, group: RouteGroup) -> Option<&DefaultKeyedRateLimiter<IpAddr>> {
        match group {
            RouteGroup::Auth => self.auth.as_ref(),
            RouteGroup::Members => self.members.as_ref(),
            RouteGroup::Catalog => self.catalog.as_ref(),
        }
    }

    /// Admits one request to `group` from `address`, or says when to retry (429).
    pub(super) fn check(&self, group: RouteGroup, address: IpAddr) -> Result<(), ApiError> {
        let Some(limit) = self.of(group) else {
            return Ok(());
        };
        limit.check_key(&address).map_err(|not_until| {
            metrics::counter!("flash_admission_gateway_rate_limited_total", "group" => group.name())
                .increment(1);
            ApiError::RateLimited {
                retry_after: not_until.wait_time_from(limit.clock().now()),
            }
        })
    }

    /// Forgets addresses whose quota has fully replenished; run periodically.
    pub(super) fn forget_idle(&self) {
        for limit in [&self.auth, &self.members, &self.catalog]
            .into_iter()
            .flatten()
        {
            limit.retain_recent();
        }
    }
}
