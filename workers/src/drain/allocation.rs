//! The drain's allocation rule: which tickets of a batch become orders, and what the others
//! are told. Pure, with the facts handed in, so that every rule is tested here without a
//! database, Redis or NATS; the drain around it only gathers the facts (Redis's view of the
//! tickets, then the sale's locked row and the database's view of them) and writes the outcome.

use std::collections::HashMap;

use flash_core::{
    domain::{MemberId, OrderId, TicketId, TicketStatus},
    jobs::TicketMessage,
};

/// The fate of one ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fate {
    Ordered(OrderId),
    SoldOut,
    Rejected(&'static str),
    /// The door withdrew it (its publish timed out but was stored): the buyer was told no.
    Withdrawn,
    /// Its buyer stopped polling longer ago than the sale allows: no order, and the unit goes
    /// back to the gate (where the waitlist, if any, gets it first).
    Expired,
    /// Decided sold out or rejected by an earlier delivery: this is a copy (the door publishes
    /// a `queued` ticket again when its buyer re-enters, and past the duplicate window both
    /// copies stay). The buyer has their answer; deciding again could change it.
    Decided,
}

impl Fate {
    /// The `outcome` label the drain counts this fate under.
    pub(super) fn outcome(&self) -> &'static str {
        match self {
            Self::Ordered(_) => TicketStatus::Ordered.as_str(),
            Self::SoldOut => TicketStatus::SoldOut.as_str(),
            Self::Rejected(_) => TicketStatus::Rejected.as_str(),
            Self::Withdrawn => TicketStatus::Withdrawn.as_str(),
            Self::Expired => TicketStatus::Expired.as_str(),
            Self::Decided => "duplicate",
        }
    }
}

/// What Redis holds of a ticket when its batch is fetched: its status, and its buyer's last
/// poll (ms since the epoch) as the door stamps it.
pub(super) type Seen = (Option<TicketStatus>, Option<i64>);

/// Tickets decided before the database is asked: withdrawn by the door (see
/// [`Fate::Withdrawn`]), abandoned by their buyer for longer than the sale allows (see
/// [`Fate::Expired`]; `abandon_after_secs` 0 never expires one), or decided already (see
/// [`Fate::Decided`]). `now_ms` is the drain's clock, in ms since the epoch.
pub(super) fn settled(
    seen: impl IntoIterator<Item = (TicketId, Seen)>,
    abandon_after_secs: u32,
    now_ms: i64,
) -> HashMap<TicketId, Fate> {
    let abandoned_before = now_ms - i64::from(abandon_after_secs) * 1000;
    seen.into_iter()
        .filter_map(|(ticket, (status, last_seen))| {
            let fate = match status? {
                TicketStatus::Withdrawn => Fate::Withdrawn,
                // Expired by an earlier delivery of this ticket.
                TicketStatus::Expired => Fate::Expired,
                // Only a worker's decision sets these on a published ticket (the door's own
                // sold-out tickets are never published); an ordered one has its order, which
                // the database finds.
                TicketStatus::SoldOut | TicketStatus::Rejected => Fate::Decided,
                TicketStatus::Queued
                    if abandon_after_secs > 0
                        && last_seen.is_some_and(|s| s < abandoned_before) =>
                {
                    Fate::Expired
                }
                _ => return None,
            };
            Some((ticket, fate))
        })
        .collect()
}

/// The facts of the sale's row the rule needs, read under the batch's row lock.
#[derive(Debug, Clone, Copy)]
pub(super) struct SaleFacts {
    /// Units not yet ordered.
    pub(super) quantity_left: i32,
    /// Live orders one member may hold in the sale.
    pub(super) per_member_limit: i32,
    /// A cancelled sale sells nothing more.
    pub(super) cancelled: bool,
}

/// What the database knows of a ticket before it is decided.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct KnownTicket {
    pub(super) ticket_id: TicketId,
    pub(super) member_id: MemberId,
    /// The order a redelivered ticket already has.
    pub(super) order_id: Option<OrderId>,
    pub(super) member_exists: bool,
    /// Live orders the member already holds in the sale.
    pub(super) live_orders: i32,
}

/// A unit given to a ticket: the order to insert for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Grant {
    pub(super) order: OrderId,
    pub(super) member: MemberId,
    pub(super) ticket: TicketId,
}

/// What the rule decided for a batch: every ticket's fate, and the new orders (in queue
/// order), whose number is what the sale's `quantity_left` must drop by.
#[derive(Debug)]
pub(super) struct Allocation {
    pub(super) fates: HashMap<TicketId, Fate>,
    pub(super) grants: Vec<Grant>,
}

/// Decides the tickets of one sale's share of a batch, in queue order (by `seq`, whatever
/// order they come in): a unit each while units are left, `sold_out` after, `rejected` above
/// the member's limit or for a member the database does not know. `sale` is `None` when the
/// database does not know the sale: every ticket is rejected. Tickets in `settled` keep their
/// fate, a redelivered ticket (one `known` with an order) keeps its order and takes no unit,
/// and a ticket that comes twice is decided once.
pub(super) fn allocate<'a>(
    sale: Option<SaleFacts>,
    known: &[KnownTicket],
    settled: HashMap<TicketId, Fate>,
    tickets: impl IntoIterator<Item = &'a TicketMessage>,
) -> Allocation {
    let mut fates = settled;
    let mut queue: Vec<&TicketMessage> = tickets.into_iter().collect();
    queue.sort_by_key(|t| t.seq);
    let Some(sale) = sale else {
        for ticket in queue {
            fates
                .entry(ticket.ticket_id)
                .or_insert(Fate::Rejected("unknown sale"));
        }
        return Allocation {
            fates,
            grants: Vec::new(),
        };
    };
    let mut holding = HashMap::new();
    for known in known {
        // A redelivered ticket already has its order.
        if let Some(order) = known.order_id {
            fates.insert(known.ticket_id, Fate::Ordered(order));
        }
        if known.member_exists {
            holding.insert(known.member_id, known.live_orders);
        }
    }

    let mut left = if sale.cancelled {
        0
    } else {
        sale.quantity_left
    };
    let mut grants = Vec::new();
    for ticket in queue {
        if fates.contains_key(&ticket.ticket_id) {
            continue;
        }
        let Some(held) = holding.get_mut(&ticket.member_id) else {
            fates.insert(ticket.ticket_id, Fate::Rejected("unknown member"));
            continue;
        };
        let fate = if *held >= sale.per_member_limit {
            // INVARIANT: at most per_member_limit live orders per member per sale (the
            // entitlements CHECK is the backstop; deciding here keeps the batch insert valid).
            Fate::Rejected("per-member limit reached")
        } else if left > 0 {
            left -= 1;
            *held += 1;
            let order = OrderId::new();
            grants.push(Grant {
                order,
                member: ticket.member_id,
                ticket: ticket.ticket_id,
            });
            Fate::Ordered(order)
        } else {
            Fate::SoldOut
        };
        fates.insert(ticket.ticket_id, fate);
    }
    Allocation { fates, grants }
}

#[cfg(test)]
mod tests {
    use flash_core::domain::SaleId;

    use super::*;

    const NOW_MS: i64 = 1_800_000_000_000;

    fn open(quantity_left: i32, per_member_limit: i32) -> Option<SaleFacts> {
        Some(SaleFacts {
            quantity_left,
            per_member_limit,
            cancelled: false,
        })
    }

    fn ticket(seq: i64, member: MemberId) -> TicketMessage {
        TicketMessage {
            ticket_id: TicketId::new(),
            sale_id: SaleId::new(),
            member_id: member,
            seq,
            admitted_at_ms: 0,
        }
    }

    /// What the database knows of tickets never decided, of members holding no order yet.
    fn unknown_to_the_database(tickets: &[TicketMessage]) -> Vec<KnownTicket> {
        tickets
            .iter()
            .map(|t| KnownTicket {
                ticket_id: t.ticket_id,
                member_id: t.member_id,
                order_id: None,
                member_exists: true,
                live_orders: 0,
            })
            .collect()
    }

    /// A batch of one ticket each of `n` members, in queue order.
    fn batch(n: i64) -> Vec<TicketMessage> {
        (1..=n).map(|seq| ticket(seq, MemberId::new())).collect()
    }

    fn granted(allocation: &Allocation) -> Vec<TicketId> {
        allocation.grants.iter().map(|g| g.ticket).collect()
    }

    #[test]
    fn units_go_in_queue_order_until_they_run_out() {
        let tickets = batch(5);
        let known = unknown_to_the_database(&tickets);
        // Fetched out of order: the queue's order decides, not the fetch's.
        let fetched = [4, 1, 3, 0, 2].map(|i| &tickets[i]);
        let allocation = allocate(open(3, 1), &known, HashMap::new(), fetched);
        assert_eq!(
            granted(&allocation),
            tickets[..3].iter().map(|t| t.ticket_id).collect::<Vec<_>>()
        );
        for grant in &allocation.grants {
            assert_eq!(allocation.fates[&grant.ticket], Fate::Ordered(grant.order));
            assert_eq!(
                Some(grant.member),
                tickets
                    .iter()
                    .find(|t| t.ticket_id == grant.ticket)
                    .map(|t| t.member_id)
            );
        }
        for late in &tickets[3..] {
            assert_eq!(allocation.fates[&late.ticket_id], Fate::SoldOut);
        }
        assert_eq!(allocation.fates.len(), 5);
    }

    #[test]
    fn every_grant_has_its_own_order() {
        let tickets = batch(3);
        let allocation = allocate(
            open(3, 1),
            &unknown_to_the_database(&tickets),
            HashMap::new(),
            &tickets,
        );
        let mut orders: Vec<OrderId> = allocation.grants.iter().map(|g| g.order).collect();
        orders.sort();
        orders.dedup();
        assert_eq!(orders.len(), 3);
    }

    #[test]
    fn the_member_limit_counts_across_one_batch() {
        let member = MemberId::new();
        let tickets: Vec<_> = (1..=3).map(|seq| ticket(seq, member)).collect();
        let allocation = allocate(
            open(10, 2),
            &unknown_to_the_database(&tickets),
            HashMap::new(),
            &tickets,
        );
        assert_eq!(
            granted(&allocation),
            [tickets[0].ticket_id, tickets[1].ticket_id]
        );
        assert_eq!(
            allocation.fates[&tickets[2].ticket_id],
            Fate::Rejected("per-member limit reached")
        );
    }

    #[test]
    fn the_member_limit_counts_the_orders_held_already() {
        let tickets = batch(2);
        let mut known = unknown_to_the_database(&tickets);
        known[0].live_orders = 1;
        let allocation = allocate(open(10, 1), &known, HashMap::new(), &tickets);
        assert_eq!(
            allocation.fates[&tickets[0].ticket_id],
            Fate::Rejected("per-member limit reached")
        );
        assert_eq!(granted(&allocation), [tickets[1].ticket_id]);
    }

    #[test]
    fn a_member_at_the_limit_takes_no_unit_from_those_behind() {
        let member = MemberId::new();
        let tickets = vec![
            ticket(1, member),
            ticket(2, member),
            ticket(3, MemberId::new()),
        ];
        let allocation = allocate(
            open(2, 1),
            &unknown_to_the_database(&tickets),
            HashMap::new(),
            &tickets,
        );
        assert_eq!(
            granted(&allocation),
            [tickets[0].ticket_id, tickets[2].ticket_id]
        );
        assert_eq!(
            allocation.fates[&tickets[1].ticket_id],
            Fate::Rejected("per-member limit reached")
        );
    }

    #[test]
    fn a_redelivered_ticket_keeps_its_order_and_takes_no_unit() {
        let tickets = batch(2);
        let mut known = unknown_to_the_database(&tickets);
        let order = OrderId::new();
        known[0].order_id = Some(order);
        known[0].live_orders = 1;
        let allocation = allocate(open(1, 1), &known, HashMap::new(), &tickets);
        assert_eq!(
            allocation.fates[&tickets[0].ticket_id],
            Fate::Ordered(order)
        );
        // The one unit left goes to the next ticket, not to the redelivered one again.
        assert_eq!(granted(&allocation), [tickets[1].ticket_id]);
    }

    #[test]
    fn a_ticket_twice_in_a_batch_is_decided_once() {
        let tickets = batch(1);
        let copies = [&tickets[0], &tickets[0]];
        let allocation = allocate(
            open(5, 5),
            &unknown_to_the_database(&tickets),
            HashMap::new(),
            copies,
        );
        assert_eq!(granted(&allocation), [tickets[0].ticket_id]);
        assert_eq!(allocation.fates.len(), 1);
    }

    #[test]
    fn an_unknown_member_is_rejected_and_takes_no_unit() {
        let tickets = batch(2);
        let mut known = unknown_to_the_database(&tickets);
        known[0].member_exists = false;
        let allocation = allocate(open(1, 1), &known, HashMap::new(), &tickets);
        assert_eq!(
            allocation.fates[&tickets[0].ticket_id],
            Fate::Rejected("unknown member")
        );
        assert_eq!(granted(&allocation), [tickets[1].ticket_id]);
    }

    #[test]
    fn a_cancelled_sale_sells_nothing() {
        let tickets = batch(3);
        let sale = SaleFacts {
            quantity_left: 10,
            per_member_limit: 1,
            cancelled: true,
        };
        let allocation = allocate(
            Some(sale),
            &unknown_to_the_database(&tickets),
            HashMap::new(),
            &tickets,
        );
        assert!(allocation.grants.is_empty());
        for t in &tickets {
            assert_eq!(allocation.fates[&t.ticket_id], Fate::SoldOut);
        }
    }

    #[test]
    fn an_unknown_sale_rejects_what_is_not_settled() {
        let tickets = batch(2);
        let settled = HashMap::from([(tickets[0].ticket_id, Fate::Withdrawn)]);
        let allocation = allocate(None, &[], settled, &tickets);
        assert!(allocation.grants.is_empty());
        assert_eq!(allocation.fates[&tickets[0].ticket_id], Fate::Withdrawn);
        assert_eq!(
            allocation.fates[&tickets[1].ticket_id],
            Fate::Rejected("unknown sale")
        );
    }

    #[test]
    fn settled_tickets_keep_their_fate_and_take_no_unit() {
        let tickets = batch(4);
        let settled = HashMap::from([
            (tickets[0].ticket_id, Fate::Withdrawn),
            (tickets[1].ticket_id, Fate::Expired),
            (tickets[2].ticket_id, Fate::Decided),
        ]);
        let allocation = allocate(
            open(1, 1),
            &unknown_to_the_database(&tickets),
            settled,
            &tickets,
        );
        assert_eq!(allocation.fates[&tickets[0].ticket_id], Fate::Withdrawn);
        assert_eq!(allocation.fates[&tickets[1].ticket_id], Fate::Expired);
        assert_eq!(allocation.fates[&tickets[2].ticket_id], Fate::Decided);
        assert_eq!(granted(&allocation), [tickets[3].ticket_id]);
    }

    #[test]
    fn redis_settles_withdrawn_expired_and_decided_tickets() {
        let [withdrawn, expired, sold_out, rejected, ordered, unknown] =
            std::array::from_fn(|_| TicketId::new());
        let found = settled(
            [
                (withdrawn, (Some(TicketStatus::Withdrawn), None)),
                (expired, (Some(TicketStatus::Expired), None)),
                (sold_out, (Some(TicketStatus::SoldOut), None)),
                (rejected, (Some(TicketStatus::Rejected), None)),
                // The database finds its order.
                (ordered, (Some(TicketStatus::Ordered), None)),
                (unknown, (None, None)),
            ],
            0,
            NOW_MS,
        );
        assert_eq!(
            found,
            HashMap::from([
                (withdrawn, Fate::Withdrawn),
                (expired, Fate::Expired),
                (sold_out, Fate::Decided),
                (rejected, Fate::Decided),
            ])
        );
    }

    #[test]
    fn a_queued_ticket_last_seen_before_the_cutoff_expires() {
        let [abandoned, polling, at_cutoff, never_seen] = std::array::from_fn(|_| TicketId::new());
        let queued = |seen| (Some(TicketStatus::Queued), seen);
        let found = settled(
            [
                (abandoned, queued(Some(NOW_MS - 60_001))),
                (polling, queued(Some(NOW_MS - 1_000))),
                (at_cutoff, queued(Some(NOW_MS - 60_000))),
                (never_seen, queued(None)),
            ],
            60,
            NOW_MS,
        );
        assert_eq!(found, HashMap::from([(abandoned, Fate::Expired)]));
    }

    #[test]
    fn abandon_zero_never_expires_a_ticket() {
        let ticket = TicketId::new();
        let found = settled([(ticket, (Some(TicketStatus::Queued), Some(0)))], 0, NOW_MS);
        assert!(found.is_empty());
    }

    #[test]
    fn the_abandonment_rule_leaves_tickets_not_queued_alone() {
        let ticket = TicketId::new();
        let long_ago = Some(NOW_MS - 3_600_000);
        let found = settled(
            [(ticket, (Some(TicketStatus::Ordered), long_ago))],
            60,
            NOW_MS,
        );
        assert!(found.is_empty());
    }
}
