//! The key layout: every Redis key any service reads or writes is built here, so the prefix and
//! the per-sale hash tags live in one place.
//!
//! A sale's keys all carry the hash tag `{sale:<id>}`, so on Redis Cluster they sit in one slot
//! and one script may touch any of them; every script is handed each key it touches in KEYS.
//! The denylist's keys share the tag `{deny}` for the same reason: a denial and its
//! announcement are one `MULTI`, and a check asks the token, its session and the marker in one
//! pipeline, which on a cluster must all go to one node.

use std::sync::Arc;

use uuid::Uuid;

/// Builds every Redis key, so the prefix (and the per-sale hash tags) live in one place.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: Arc<str>,
}

impl Keys {
    /// Keys under `prefix` (e.g. `flash:`, or `test:<uuid>:` in tests).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix itself, for scans that clean up after tests.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Marks a logged-out access token (by `jti`) until it would have expired anyway.
    pub fn denied_token(&self, jti: Uuid) -> String {
        format!("{}{{deny}}:jti:{jti}", self.prefix)
    }

    /// Units of a flash sale the front door may still admit.
    pub fn sale_gate(&self, sale: Uuid) -> String {
        format!("{}{{sale:{sale}}}:gate", self.prefix)
    }

    /// What the front door needs to know about a sale (window, limit, cancelled).
    pub fn sale_meta(&self, sale: Uuid) -> String {
        format!("{}{{sale:{sale}}}:meta", self.prefix)
    }

    /// Counter handing out each sale's ticket sequence numbers.
    pub fn sale_seq(&self, sale: Uuid) -> String {
        format!("{}{{sale:{sale}}}:seq", self.prefix)
    }

    /// Highest sequence number the workers have finished (position = seq - served).
    pub fn sale_served(&self, sale: Uuid) -> String {
        format!("{}{{sale:{sale}}}:served", self.prefix)
    }

    /// Measured drain rate of a sale (tickets per second), for wait estimates.
    pub fn sale_drain_rate(&self, sale: Uuid) -> String {
        format!("{}{{sale:{sale}}}:rate", self.prefix)
    }

    /// The window the drain rate is being measured over (hash: start, count).
    pub fn sale_drain_window(&self, sale: Uuid) -> String {
        format!("{}{{sale:{sale}}}:rate-window", self.prefix)
    }

    /// The token bucket of a sale's outflow limit, shared by every worker process.
    pub fn sale_outflow(&self, sale: Uuid) -> String {
        format!("{}{{sale:{sale}}}:outflow", self.prefix)
    }

    /// The sale's waitlist: ticket ids, first come first served.
    pub fn sale_waitlist(&self, sale: Uuid) -> String {
        format!("{}{{sale:{sale}}}:waitlist", self.prefix)
    }

    /// Counter handing out waitlist numbers (waitlist position = number - left).
    pub fn sale_waitlist_seq(&self, sale: Uuid) -> String {
        format!("{}{{sale:{sale}}}:waitlist-seq", self.prefix)
    }

    /// How many tickets have left the waitlist (promoted or sold out), in order.
    pub fn sale_waitlist_left(&self, sale: Uuid) -> String {
        format!("{}{{sale:{sale}}}:waitlist-left", self.prefix)
    }

    /// Waitlisted tickets being promoted: taken off the waitlist with their unit, not yet
    /// confirmed in the queue. A promoter that crashed is finished by the next one.
    pub fn sale_promoting(&self, sale: Uuid) -> String {
        format!("{}{{sale:{sale}}}:promoting", self.prefix)
    }

    /// Tickets that entered the sale's pre-queue, in arrival order (the draw sorts them).
    pub fn sale_prequeue(&self, sale: Uuid) -> String {
        format!("{}{{sale:{sale}}}:prequeue", self.prefix)
    }

    /// Tickets that arrived after the start but before the pre-queue was released: served
    /// right behind it, first come first served.
    pub fn sale_backlog(&self, sale: Uuid) -> String {
        format!("{}{{sale:{sale}}}:backlog", self.prefix)
    }

    /// Held by the one admission process releasing the sale's pre-queue.
    pub fn sale_draw_lock(&self, sale: Uuid) -> String {
        format!("{}{{sale:{sale}}}:draw-lock", self.prefix)
    }

    /// The ticket a member holds in a sale (one entry per member per sale).
    pub fn member_ticket(&self, sale: Uuid, member: Uuid) -> String {
        format!("{}{{sale:{sale}}}:member:{member}", self.prefix)
    }

    /// A ticket's state (hash: member, seq, status, order_id), under its sale's hash tag so the
    /// gate script can create it atomically with taking the unit.
    /// (Built by hand, not by `format!`: every poll and entry builds one, and formatting
    /// two UUIDs cost ten times as much.)
    pub fn ticket(&self, sale: Uuid, ticket: Uuid) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 90);
        key.push_str(&self.prefix);
        key.push_str("{sale:");
        key.push_str(sale.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        key.push_str("}:ticket:");
        key.push_str(ticket.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        key
    }

    /// What every ticket key of a sale starts with, for scripts that name tickets by id.
    pub fn ticket_prefix(&self, sale: Uuid) -> String {
        format!("{}{{sale:{sale}}}:ticket:", self.prefix)
    }

    /// A `SCAN MATCH` pattern for every ticket of a sale: audits and clean-ups walk them.
    pub fn sale_tickets_pattern(&self, sale: Uuid) -> String {
        format!("{}{{sale:{sale}}}:ticket:*", self.prefix)
    }

    /// The sales whose ticket ids start with `tag` (a set, nearly always of one): lets
    /// `GET /tickets/{id}` find the ticket's keys from the id alone.
    pub fn sale_tag(&self, tag: u32) -> String {
        format!("{}sale-tag:{tag:08x}", self.prefix)
    }

    /// The cached representation of a product (`<version>|<json>`).
    pub fn product(&self, product: Uuid) -> String {
        format!("{}product:{product}", self.prefix)
    }

    /// Marks a whole login session (by `sid`) whose access tokens must stop working: logged
    /// out, or its refresh token was reused.
    pub fn denied_session(&self, sid: Uuid) -> String {
        format!("{}{{deny}}:sid:{sid}", self.prefix)
    }

    /// Present while the denylist in Redis is whole: gone with everything else when Redis loses
    /// its keys, which tells the next check to refill the denylist from PostgreSQL.
    pub fn denylist_whole(&self) -> String {
        format!("{}{{deny}}:whole", self.prefix)
    }

    /// The pub/sub channel on which every denial is announced as it is written, so a service
    /// that mirrors the denylist hears of a logout without asking Redis on each request.
    pub fn denylist_channel(&self) -> String {
        format!("{}deny:feed", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_key_is_its_sales_ticket_prefix_and_its_id() {
        let keys = Keys::new("flash:");
        let (sale, ticket) = (Uuid::new_v4(), Uuid::new_v4());
        let key = keys.ticket(sale, ticket);
        assert_eq!(key, format!("{}{ticket}", keys.ticket_prefix(sale)));
        assert!(key.starts_with(&format!("flash:{{sale:{sale}}}:")));
    }
}
