//! `loadtest check`: proves a flash sale kept its invariants, from what PostgreSQL and Redis hold.
//!
//! PostgreSQL is the truth for units and orders; Redis holds the tickets (a `sold_out` ticket
//! exists nowhere else). Every rule is checked independently and every breach is reported, so
//! one run tells the whole story rather than the first problem.

use std::collections::{BTreeMap, HashSet};

use anyhow::Context;
use flash_core::{
    config::{PgArgs, RedisArgs},
    domain::TicketStatus,
    redis_model::Keys,
};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// Options of the invariant checker.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// The flash sale to check.
    #[arg(long)]
    pub sale: Uuid,
    /// Skip the ticket checks (for a sale whose Redis keys are gone).
    #[arg(long)]
    pub no_tickets: bool,
    /// The database the services use.
    #[command(flatten)]
    pub pg: PgArgs,
    /// The Redis the services use (tickets live there).
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// What the checker found about one sale.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// The sale checked.
    pub sale: Uuid,
    /// Units the sale offered.
    pub quantity: i64,
    /// Units PostgreSQL says are still unsold.
    pub quantity_left: i64,
    /// Units held by live orders (not cancelled, not returned).
    pub live_units: i64,
    /// Orders of the sale by status.
    pub orders: BTreeMap<String, i64>,
    /// Payments of the sale's orders by status.
    pub payments: BTreeMap<String, i64>,
    /// Tickets in Redis by status (empty when the ticket checks were skipped).
    pub tickets: BTreeMap<String, i64>,
    /// Every broken rule, in words; empty when the sale is sound.
    pub violations: Vec<String>,
}

impl CheckReport {
    /// True when no invariant is broken.
    pub fn is_sound(&self) -> bool {
        self.violations.is_empty()
    }

    /// Prints the report for a person.
    pub fn print(&self) {
        println!("invariant check of sale {}", self.sale);
        println!(
            "  units: {} offered, {} left, {} in live orders",
            self.quantity, self.quantity_left, self.live_units
        );
        println!("  orders:   {}", counts(&self.orders));
        println!("  payments: {}", counts(&self.payments));
        if !self.tickets.is_empty() {
            println!("  tickets:  {}", counts(&self.tickets));
        }
        if self.is_sound() {
            println!("  OK: no invariant is broken");
        } else {
            for violation in &self.violations {
                println!("  VIOLATION: {violation}");
            }
        }
    }
}

fn counts(map: &BTreeMap<String, i64>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The command: checks, prints, writes JSON, and fails when an invariant is broken.
///
/// # Errors
/// When PostgreSQL or Redis cannot be read, or when a violation was found.
pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let db = flash_core::db::connect(&args.pg).await?;
    let redis = if args.no_tickets {
        None
    } else {
        Some(flash_core::redis::connect(&args.redis).await?)
    };
    let keys = Keys::new(&args.redis.redis_key_prefix);
    let report = check_sale(&db, redis.as_ref(), &keys, args.sale).await?;
    report.print();
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    anyhow::ensure!(
        report.is_sound(),
        "{} invariant violation(s) in sale {}",
        report.violations.len(),
        args.sale
    );
    Ok(())
}

/// Checks one sale. `redis` = `None` skips the ticket rules.
///
/// # Errors
/// When the sale does not exist or a store cannot be read; broken rules are not errors but
/// lines in [`CheckReport::violations`].
pub async fn check_sale(
    db: &PgPool,
    redis: Option<&flash_core::redis::Redis>,
    keys: &Keys,
    sale: Uuid,
) -> anyhow::Result<CheckReport> {
    let (quantity, quantity_left, limit): (i32, i32, i32) = sqlx::query_as(
        "select quantity, quantity_left, per_member_limit from flash_sales where flash_sale_id = $1",
    )
    .bind(sale)
    .fetch_optional(db)
    .await?
    .with_context(|| format!("no flash sale {sale} in PostgreSQL"))?;
    let (quantity, quantity_left, limit) = (
        i64::from(quantity),
        i64::from(quantity_left),
        i64::from(limit),
    );
    let mut violations = Vec::new();

    let orders = grouped(
        db,
        "select status, count(*) from orders where flash_sale_id = $1 group by status",
        sale,
    )
    .await?;
    let payments = grouped(
        db,
        "select p.status, count(*) from payments p join orders o using (order_id)
         where o.flash_sale_id = $1 group by p.status",
        sale,
    )
    .await?;
    let live_units: i64 = sqlx::query_scalar(
        "select coalesce(sum(i.quantity), 0)::bigint from orders o join order_items i using (order_id)
         where o.flash_sale_id = $1 and order_is_live(o.status)",
    )
    .bind(sale)
    .fetch_one(db)
    .await?;

    if live_units > quantity {
        violations.push(format!(
            "oversold: {live_units} units in live orders, the sale offered {quantity}"
        ));
    }
    if quantity_left + live_units != quantity {
        violations.push(format!(
            "units do not add up: {quantity_left} left + {live_units} in live orders ≠ {quantity} offered"
        ));
    }
    let over_limit: Vec<(Uuid, i64)> = sqlx::query_as(
        "select member_id, count(*) from orders
         where flash_sale_id = $1 and order_is_live(status)
         group by member_id having count(*) > $2 order by member_id limit 10",
    )
    .bind(sale)
    .bind(limit)
    .fetch_all(db)
    .await?;
    for (member, held) in over_limit {
        violations.push(format!(
            "member {member} holds {held} live orders, above the limit of {limit}"
        ));
    }
    let duplicates: Vec<(Option<Uuid>, i64)> = sqlx::query_as(
        "select ticket_id, count(*) from orders where flash_sale_id = $1
         group by ticket_id having count(*) > 1 or ticket_id is null limit 10",
    )
    .bind(sale)
    .fetch_all(db)
    .await?;
    for (ticket, n) in duplicates {
        match ticket {
            Some(ticket) => violations.push(format!("ticket {ticket} has {n} orders")),
            None => violations.push(format!("{n} orders of the sale carry no ticket")),
        }
    }
    let charge_mismatches: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
        "select o.order_id, o.status, p.status from orders o
         left join payments p using (order_id)
         where o.flash_sale_id = $1
           and ((o.status in ('paid', 'preparing', 'shipped', 'delivered', 'return_requested'))
                <> (p.status is not distinct from 'succeeded'))
         order by o.order_id limit 10",
    )
    .bind(sale)
    .fetch_all(db)
    .await?;
    for (order, status, payment) in charge_mismatches {
        violations.push(format!(
            "order {order} is {status} but its payment is {}",
            payment.as_deref().unwrap_or("missing")
        ));
    }

    let tickets = match redis {
        Some(redis) => check_tickets(db, redis, keys, sale, &mut violations).await?,
        None => BTreeMap::new(),
    };
    Ok(CheckReport {
        sale,
        quantity,
        quantity_left,
        live_units,
        orders,
        payments,
        tickets,
        violations,
    })
}

async fn grouped(
    db: &PgPool,
    sql: &'static str,
    sale: Uuid,
) -> anyhow::Result<BTreeMap<String, i64>> {
    Ok(sqlx::query_as::<_, (String, i64)>(sql)
        .bind(sale)
        .fetch_all(db)
        .await?
        .into_iter()
        .collect())
}

/// Every ticket final, and tickets and orders telling the same story: a ticket that says
/// `ordered` has its order, and every order's ticket says `ordered`.
async fn check_tickets(
    db: &PgPool,
    redis: &flash_core::redis::Redis,
    keys: &Keys,
    sale: Uuid,
    violations: &mut Vec<String>,
) -> anyhow::Result<BTreeMap<String, i64>> {
    let ticket_keys = scan(redis, &keys.sale_tickets_pattern(sale)).await?;
    let mut conn = redis.clone();
    let mut by_status = BTreeMap::new();
    let mut ordered = HashSet::new();
    let mut not_ordered = HashSet::new();
    for chunk in ticket_keys.chunks(500) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.hget(key, "status");
        }
        let statuses: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        for (key, status) in chunk.iter().zip(statuses) {
            let status = status.unwrap_or_else(|| "gone".to_owned());
            let ticket = key
                .rsplit(':')
                .next()
                .and_then(|t| t.parse::<Uuid>().ok())
                .with_context(|| format!("odd ticket key {key}"))?;
            // A ticket with an order says how the order's payment ended, once it has.
            if TicketStatus::parse(&status).is_some_and(TicketStatus::got_order) {
                ordered.insert(ticket);
            } else {
                not_ordered.insert(ticket);
            }
            *by_status.entry(status).or_insert(0) += 1;
        }
    }
    if let Some(queued) = by_status.get(TicketStatus::Queued.as_str()) {
        violations.push(format!("{queued} tickets are still queued (not final)"));
    }
    let with_orders: HashSet<Uuid> = sqlx::query_scalar::<_, Uuid>(
        "select ticket_id from orders where flash_sale_id = $1 and ticket_id is not null",
    )
    .bind(sale)
    .fetch_all(db)
    .await?
    .into_iter()
    .collect();
    let lost: Vec<_> = ordered.difference(&with_orders).take(10).collect();
    for ticket in lost {
        violations.push(format!("ticket {ticket} says it has an order but has none"));
    }
    let untold: Vec<_> = with_orders.intersection(&not_ordered).take(10).collect();
    for ticket in untold {
        violations.push(format!(
            "ticket {ticket} has an order but its ticket does not say so"
        ));
    }
    Ok(by_status)
}

async fn scan(redis: &flash_core::redis::Redis, pattern: &str) -> anyhow::Result<Vec<String>> {
    Ok(flash_core::redis::scan_keys(redis, pattern).await?)
}
