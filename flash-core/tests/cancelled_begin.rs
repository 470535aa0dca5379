//! A request cancelled while its transaction's `BEGIN` is in flight (the request timeout, a
//! client gone) must not hand the next borrower of that pooled connection an open transaction:
//! the borrower's writes would run inside it, invisible to everyone else, and be lost when the
//! connection closes. sqlx-postgres 0.9.0 did exactly that (a future dropped during `BEGIN`
//! queued no `ROLLBACK`); 0.9.1 rolls it back.

// A failed unwrap is how a test reports an unexpected answer.
#![allow(clippy::unwrap_used)]

use std::{
    future::{Future, poll_fn},
    pin::pin,
    task::Poll,
};

use sqlx::{
    Connection, PgConnection,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// How many cancellations are tried: each attempt polls `begin` a few times (one to five, with
/// the runtime's other work in between) and drops it if it is still waiting for `BEGIN`'s answer.
const ATTEMPTS: u64 = 200;

/// Polls `future` up to `polls` times, yielding to the runtime in between; true when it
/// finished, false when it was dropped unfinished (cancelled, as a timeout would).
async fn poll_then_drop<F: Future>(future: F, polls: u64) -> bool {
    let mut future = pin!(future);
    for _ in 0..polls {
        if poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_ready())).await {
            return true;
        }
        tokio::task::yield_now().await;
    }
    false
}

#[sqlx::test(migrations = false)]
async fn a_begin_cancelled_in_flight_leaves_no_transaction_for_the_next_borrower(
    _: PgPoolOptions,
    connect: PgConnectOptions,
) {
    // One connection, so the cancelled borrower's connection is the next borrower's too; no
    // ping on acquire, so `begin` sends `BEGIN` on its first poll.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_with(connect.clone())
        .await
        .unwrap();
    let mut observer = PgConnection::connect_with(&connect).await.unwrap();
    sqlx::query("create table writes (n bigint primary key)")
        .execute(&pool)
        .await
        .unwrap();

    let mut cancelled = 0;
    for n in 0..ATTEMPTS {
        if !poll_then_drop(pool.begin(), n % 5 + 1).await {
            cancelled += 1;
        }
        sqlx::query("insert into writes (n) values ($1)")
            .bind(i64::try_from(n).unwrap())
            .execute(&pool)
            .await
            .unwrap();
        let seen: bool = sqlx::query_scalar("select exists (select 1 from writes where n = $1)")
            .bind(i64::try_from(n).unwrap())
            .fetch_one(&mut observer)
            .await
            .unwrap();
        assert!(
            seen,
            "attempt {n}: a write after a cancelled begin is invisible to other connections"
        );
    }
    assert!(
        cancelled > 0,
        "no begin was cancelled: the test proved nothing"
    );
}
