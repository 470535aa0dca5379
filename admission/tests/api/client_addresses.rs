//! Buyers logging in through the shop origin each count as themselves: member-api's login limit
//! per address must key on the address the door forwards, not on the door, and a buyer's own
//! `X-Forwarded-For` must not buy them a fresh quota. Real door, real member-api, many loopback
//! source addresses.

use std::net::{IpAddr, Ipv4Addr};

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::stack::Services;

/// A client whose connections leave from `127.0.1.<host>`.
fn client_from(host: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 1, host)))
        .build()
        .unwrap()
}

async fn login(client: &reqwest::Client, door: &str, n: u32, forged: Option<&str>) -> StatusCode {
    let mut request = client
        .post(format!("{door}/auth/login"))
        .json(&json!({"email": format!("nobody{n}@example.com"), "password": "wrong password"}));
    if let Some(forged) = forged {
        request = request.header("x-forwarded-for", forged);
    }
    request.send().await.unwrap().status()
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn logins_through_the_door_are_limited_per_buyer_not_per_door(db: PgPool) {
    let stack = Services::start_with(
        &db,
        |members| members.limits.login_per_minute_per_ip = 3,
        // The door's own limit would answer first; this test is about member-api's.
        |door| door.gateway.gateway_auth_rate_per_address_per_min = 0,
    )
    .await;
    let door = stack.door.clone();

    // 40 buyers on 40 addresses, 3 attempts each: all within each one's quota. Keyed on the
    // door's address, every attempt after the third would be 429.
    let mut n = 0;
    for host in 1..=40u8 {
        let client = client_from(host);
        for _ in 0..3 {
            n += 1;
            assert_eq!(
                login(&client, &door, n, None).await,
                StatusCode::UNAUTHORIZED,
                "buyer 127.0.1.{host}, attempt {n}"
            );
        }
    }

    // One address's fourth attempt is over its quota, whatever it claims to be forwarded for.
    let guesser = client_from(200);
    for _ in 0..3 {
        n += 1;
        assert_eq!(
            login(&guesser, &door, n, Some("203.0.113.1")).await,
            StatusCode::UNAUTHORIZED
        );
    }
    for claim in ["203.0.113.2", "203.0.113.3, 198.51.100.4"] {
        n += 1;
        assert_eq!(
            login(&guesser, &door, n, Some(claim)).await,
            StatusCode::TOO_MANY_REQUESTS,
            "a forged X-Forwarded-For {claim:?} escaped the limit"
        );
    }
    stack.stop().await;
}
