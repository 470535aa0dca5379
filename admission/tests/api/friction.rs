//! Bot friction, both off by default: a per-sale proof of work, and an entry limit per client
//! address across accounts.

use chrono::{Duration, Utc};
use redis::AsyncCommands;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::helpers::{TestApp, json, problem};

/// A nonce whose SHA-256 after `challenge` starts with `bits` zero bits, found as a page would.
fn solve(challenge: &str, bits: u32) -> String {
    (0u64..)
        .map(|n| n.to_string())
        .find(|nonce| {
            let digest = Sha256::digest(format!("{challenge}{nonce}").as_bytes());
            let mut zeros = 0;
            for byte in digest {
                zeros += byte.leading_zeros();
                if byte != 0 {
                    break;
                }
            }
            zeros >= bits
        })
        .unwrap()
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_sale_with_proof_of_work_admits_only_solved_entries(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let sale = app.arm(10, Utc::now() - Duration::seconds(1)).await;
    let _: () = app
        .redis
        .clone()
        .hset(app.keys.sale_meta(sale), "pow", 12)
        .await
        .unwrap();
    let buyer = app.buyer();
    let url = format!("{}/sales/{sale}/tickets", app.base);

    let bare = app.enter(sale, &buyer).await;
    let asked = problem(bare, StatusCode::PRECONDITION_REQUIRED).await;
    let challenge = asked["pow_challenge"].as_str().unwrap().to_owned();
    let wrong = app
        .client
        .post(&url)
        .bearer_auth(&buyer.token)
        .header("x-proof-of-work", "not-a-solution")
        .send()
        .await
        .unwrap();
    let other = app.buyer();
    let borrowed = app
        .client
        .post(&url)
        .bearer_auth(&other.token)
        .header("x-proof-of-work", solve(&challenge, 12))
        .send()
        .await
        .unwrap();
    let solved = app
        .client
        .post(&url)
        .bearer_auth(&buyer.token)
        .header("x-proof-of-work", solve(&challenge, 12))
        .send()
        .await
        .unwrap();

    assert_eq!(asked["pow_bits"], 12);
    assert_eq!(challenge, format!("{sale}:{}:", buyer.id));
    problem(wrong, StatusCode::PRECONDITION_REQUIRED).await;
    // Bound to the member: another account cannot reuse it (all but surely: 1 in 4096).
    problem(borrowed, StatusCode::PRECONDITION_REQUIRED).await;
    let ticket = json(solved, StatusCode::ACCEPTED).await;
    assert_eq!(ticket["status"], "queued");
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn one_address_entering_many_accounts_is_limited(db: PgPool) {
    let app = TestApp::spawn_with(db, |config| {
        config.entry_rate_per_address_per_min = 3;
        config.client_address.client_address_header = Some("x-forwarded-for".into());
        config.client_address.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let sale = app.arm(100, Utc::now() - Duration::seconds(1)).await;
    let url = format!("{}/sales/{sale}/tickets", app.base);
    let enter = |address: &'static str| {
        let buyer = app.buyer();
        let request = app
            .client
            .post(&url)
            .bearer_auth(&buyer.token)
            .header("x-forwarded-for", address);
        async move { request.send().await.unwrap().status() }
    };

    let mut from_one = Vec::new();
    for _ in 0..4 {
        from_one.push(enter("203.0.113.7, 10.0.0.1").await);
    }
    let from_another = enter("198.51.100.2").await;

    assert_eq!(
        from_one,
        [
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(from_another, StatusCode::ACCEPTED);
    app.teardown().await;
}
