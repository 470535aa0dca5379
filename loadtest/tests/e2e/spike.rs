//! `loadtest spike` stampedes a sale through the stack, and the checker is shown to fail when
//! a violation is planted.

use crate::stack::Stack;
use flash_core::domain::Role;
use loadtest::{check::check_sale, seed};
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_small_spike_sells_every_unit_once_and_every_ticket_ends(db: PgPool) {
    let stack = Stack::start(&db, 0.02).await;
    let report = stack.spike(&db, &stack.plan(2000, 100)).await;

    assert_eq!(report.unfinished, 0, "every ticket is final: {report:?}");
    assert!(report.check.is_sound(), "{:?}", report.check.violations);
    assert_eq!(report.entries.requests, 2000);
    // Every buyer opened the waiting room before the start and held no ticket yet.
    let arrivals = report.arrivals.as_ref().expect("the buyers arrived");
    assert_eq!(arrivals.statuses.get(&404), Some(&2000), "{arrivals:?}");
    // Past the last unit buyers join the sale's waitlist (it holds as many as there are units);
    // the rest are told `sold_out` at once. Both the queued and the waitlisted get 202.
    let admitted = *report.entries.statuses.get(&202).unwrap();
    let turned_away = *report.entries.statuses.get(&200).unwrap();
    assert_eq!(
        admitted + turned_away,
        2000,
        "{:?}",
        report.entries.statuses
    );
    assert!(admitted >= 200, "100 queued and 100 waitlisted: {admitted}");
    // A declined payment (the simulated provider declines 2 %) puts its unit back, and the
    // first waitlisted buyer gets it; once none is left the run ends the sale and the rest of
    // the waitlist learns `sold_out`.
    let ordered = *report.outcomes.get("ordered").unwrap();
    let sold_out = *report.outcomes.get("sold_out").unwrap();
    assert_eq!(ordered + sold_out, 2000, "{:?}", report.outcomes);
    assert!(ordered >= 100, "every unit was offered: {ordered}");
    let ticket_count = |status: &str| report.check.tickets.get(status).copied().unwrap_or(0);
    assert_eq!(
        ticket_count("ordered") + ticket_count("paid") + ticket_count("cancelled"),
        i64::try_from(ordered).unwrap()
    );
    assert_eq!(ticket_count("sold_out"), i64::try_from(sold_out).unwrap());
    // Payments settled: every order is paid or (declined) cancelled, and every unit is in a
    // paid order: none was left unsold while buyers were refused.
    let paid = report.check.orders.get("paid").copied().unwrap_or(0);
    let cancelled = report.check.orders.get("cancelled").copied().unwrap_or(0);
    assert_eq!(
        paid + cancelled,
        i64::try_from(ordered).unwrap(),
        "{:?}",
        report.check.orders
    );
    assert_eq!((report.check.quantity_left, paid), (0, 100));
    assert_eq!(report.undersold_while_refused, 0);
    assert!(report.is_healthy());
    assert!(report.polls > 0 && report.all_final_ms.is_some());
    assert!(report.orders_per_second.is_some_and(|r| r > 0.0));
    let charted: u64 = report.timeline.admitted_per_second.iter().sum();
    let drained: u64 = report.timeline.drained_per_second.iter().sum();
    assert_eq!(charted, admitted, "the chart counts every 202");
    assert_eq!(
        i64::try_from(drained).unwrap(),
        paid + cancelled,
        "and every order"
    );
    stack.stop().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn the_checker_catches_planted_violations(db: PgPool) {
    let stack = Stack::start(&db, 0.02).await;
    let report = stack.spike(&db, &stack.plan(60, 10)).await;
    let sale = report.sale_id;
    assert!(report.is_healthy(), "{:?}", report.check.violations);

    // An extra order nobody paid a unit for: one more live unit than the sale accounts for.
    let intruder = seed::members(&db, &stack.signer, "intruder", 1, Role::Buyer)
        .await
        .unwrap()
        .remove(0);
    let order = Uuid::now_v7();
    sqlx::query(
        "insert into orders (order_id, member_id, kind, total_cents, currency, flash_sale_id, ticket_id)
         values ($1, $2, 'flash', 9900, 'EUR', $3, $4)",
    )
    .bind(order)
    .bind(intruder.id.get())
    .bind(sale)
    .bind(Uuid::now_v7())
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "insert into order_items (order_id, product_id, quantity, unit_price_cents)
         select $1, product_id, 1, 9900 from flash_sales where flash_sale_id = $2",
    )
    .bind(order)
    .bind(sale)
    .execute(&db)
    .await
    .unwrap();
    // And a ticket the workers never finished.
    redis::AsyncCommands::hset::<_, _, _, ()>(
        &mut stack.redis.clone(),
        stack.keys.ticket(sale, Uuid::new_v4()),
        "status",
        "queued",
    )
    .await
    .unwrap();

    let checked = check_sale(&db, Some(&stack.redis), &stack.keys, sale)
        .await
        .unwrap();
    assert!(!checked.is_sound());
    let said = checked.violations.join("\n");
    assert!(said.contains("units do not add up"), "{said}");
    assert!(said.contains("1 tickets are still queued"), "{said}");
    stack.stop().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_prequeue_spike_reports_a_fair_draw(db: PgPool) {
    let stack = Stack::start(&db, 0.02).await;
    let mut plan = stack.plan(400, 300);
    plan.prequeue = true;

    let report = stack.spike(&db, &plan).await;

    let fairness = report.fairness.clone().unwrap();
    assert_eq!(fairness.prequeued, 200, "{fairness:?}");
    assert!(fairness.seed.is_some());
    assert_eq!(
        (fairness.ahead_of_prequeue, fairness.inversions),
        (0, 0),
        "{fairness:?}"
    );
    assert!(report.is_healthy(), "{:?}", report.check.violations);
    assert_eq!(report.prequeue_entries.as_ref().unwrap().requests, 200);
    stack.stop().await;
}
