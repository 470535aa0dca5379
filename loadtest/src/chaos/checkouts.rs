//! Regular checkouts (`POST /orders`, synchronous) run while catalog-api is killed: each
//! shopper buys one unit with an `Idempotency-Key` and retries with the same key after a
//! transport error or a 5xx, as a careful client does, until it gets its answer (201 or 409).
//! The check after: no unit sold beyond the stock, no shopper with two orders, every 201's
//! order in PostgreSQL.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use flash_core::{auth::keys::JwtSigner, domain::Role};
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::fault::Checkouts;
use crate::{
    seed::{self, Buyer},
    spike::Shop,
};

/// Shoppers checking out at once.
const IN_FLIGHT: usize = 8;

/// A product and the shoppers who will buy it.
pub(crate) struct Shoppers {
    client: reqwest::Client,
    catalog: String,
    product: Uuid,
    stock: i64,
    shoppers: Arc<Vec<Buyer>>,
}

/// What the checkouts got: their figures and the orders the 201s named.
pub(crate) struct Outcome {
    pub(crate) figures: Checkouts,
    placed: Vec<Uuid>,
}

impl Shoppers {
    /// Seeds `count` shoppers and an admin, who creates a product with `stock` units.
    pub(crate) async fn prepare(
        db: &PgPool,
        signer: &JwtSigner,
        catalog: &str,
        count: usize,
        stock: i64,
    ) -> anyhow::Result<Self> {
        let tag = format!("chaos-shop-{}", Uuid::new_v4().simple());
        let admin = seed::members(db, signer, &format!("{tag}-admin"), 1, Role::Admin)
            .await?
            .remove(0);
        let shoppers = Arc::new(seed::members(db, signer, &tag, count, Role::Buyer).await?);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let shop = Shop {
            client: client.clone(),
            catalog: catalog.to_owned(),
            admin: admin.token,
        };
        let product = shop.product(&tag, stock).await?;
        Ok(Self {
            client,
            catalog: catalog.to_owned(),
            product,
            stock,
            shoppers,
        })
    }

    /// Every shopper checks out, spread over `spread`; each gives up after `bound`.
    pub(crate) async fn run(&self, spread: Duration, bound: Duration) -> Outcome {
        let start = Instant::now();
        let gap = spread.as_secs_f64() / self.shoppers.len().max(1) as f64;
        let answers: Vec<Option<(u16, Option<Uuid>)>> =
            futures::stream::iter(0..self.shoppers.len())
                .map(|i| async move {
                    tokio::time::sleep_until(
                        (start + Duration::from_secs_f64(gap * i as f64)).into(),
                    )
                    .await;
                    self.check_out(i, bound).await
                })
                .buffer_unordered(IN_FLIGHT)
                .collect()
                .await;
        let mut outcome = Outcome {
            figures: Checkouts::default(),
            placed: Vec::new(),
        };
        for answer in answers {
            match answer {
                Some((201, order)) => {
                    outcome.figures.placed += 1;
                    outcome.placed.extend(order);
                }
                Some(_) => outcome.figures.refused += 1,
                None => outcome.figures.unanswered += 1,
            }
        }
        outcome
    }

    /// One shopper's checkout: the status (201 or 409) and the order, or `None` when no such
    /// answer came within `bound`.
    async fn check_out(&self, i: usize, bound: Duration) -> Option<(u16, Option<Uuid>)> {
        let give_up = Instant::now() + bound;
        let key = format!("chaos-{}", self.shoppers[i].id.get());
        while Instant::now() < give_up {
            let sent = self
                .client
                .post(format!("{}/orders", self.catalog))
                .bearer_auth(&self.shoppers[i].token)
                .header("Idempotency-Key", &key)
                .json(&json!({"items": [{"product_id": self.product, "quantity": 1}]}))
                .send()
                .await;
            if let Ok(answer) = sent {
                let status = answer.status().as_u16();
                if status == 201 || status == 409 {
                    let body: Value = answer.json().await.unwrap_or(Value::Null);
                    let order = body["id"].as_str().and_then(|id| id.parse().ok());
                    return Some((status, order));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// Units sold beyond the stock, shoppers with more than one order, and what else broke.
    pub(crate) async fn check(
        &self,
        db: &PgPool,
        outcome: &Outcome,
    ) -> anyhow::Result<(u64, u64, Vec<String>)> {
        let (left, live): (i32, i64) = sqlx::query_as(
            "select p.stock, coalesce((select sum(i.quantity) from order_items i
                                       join orders o using (order_id)
                                       where i.product_id = p.product_id
                                         and order_is_live(o.status)), 0)::bigint
             from products p where p.product_id = $1",
        )
        .bind(self.product)
        .fetch_one(db)
        .await?;
        let twice: i64 = sqlx::query_scalar(
            "select count(*) from (select o.member_id from orders o join order_items i using (order_id)
                                   where i.product_id = $1 group by o.member_id
                                   having count(*) > 1) as doubled",
        )
        .bind(self.product)
        .fetch_one(db)
        .await?;
        let found: i64 = sqlx::query_scalar("select count(*) from orders where order_id = any($1)")
            .bind(&outcome.placed)
            .fetch_one(db)
            .await?;
        let mut violations = Vec::new();
        if i64::from(left) + live != self.stock {
            violations.push(format!(
                "checkout stock does not add up: {left} left + {live} in live orders ≠ {}",
                self.stock
            ));
        }
        let missing = outcome.placed.len() as i64 - found;
        if missing > 0 {
            violations.push(format!("{missing} checkouts answered 201 have no order"));
        }
        let oversold = u64::try_from(live - self.stock).unwrap_or(0);
        Ok((oversold, u64::try_from(twice).unwrap_or(0), violations))
    }
}
