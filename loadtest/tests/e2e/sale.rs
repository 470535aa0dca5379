//! A sale on the in-process stack, seen by its admin and its buyers over HTTP.

use std::time::Duration;

use chrono::Utc;
use flash_core::domain::Role;
use loadtest::seed;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::stack::Stack;

pub(crate) struct Sale<'a> {
    pub(crate) stack: &'a Stack,
    pub(crate) client: reqwest::Client,
    pub(crate) admin: seed::Buyer,
    pub(crate) id: Uuid,
    /// When entries open (the request's `starts_at`).
    pub(crate) starts_at: chrono::DateTime<Utc>,
}

impl<'a> Sale<'a> {
    /// A sale of `quantity` units (of a product with ten more in stock, for stock changes),
    /// starting `starts_in` from now and lasting an hour; `extra` adds fields to the sale's
    /// definition.
    pub(crate) async fn create(
        stack: &'a Stack,
        db: &PgPool,
        quantity: i64,
        starts_in: chrono::Duration,
        extra: Value,
    ) -> Self {
        let admin = seed::members(
            db,
            &stack.signer,
            &format!("admin-{}", Uuid::new_v4()),
            1,
            Role::Admin,
        )
        .await
        .unwrap()
        .remove(0);
        let client = reqwest::Client::new();
        let product: Value = client
            .post(format!("{}/products", stack.catalog))
            .bearer_auth(&admin.token)
            .json(&json!({"sku": format!("E2E-{}", Uuid::new_v4()), "name": "Sneaker", "price_cents": 5000, "currency": "EUR", "stock": quantity + 10}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let starts_at = Utc::now() + starts_in;
        let mut body = json!({
            "product_id": product["id"], "price_cents": 2500, "quantity": quantity, "per_member_limit": 1,
            "starts_at": starts_at, "ends_at": starts_at + chrono::Duration::hours(1),
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let created: Value = client
            .post(format!("{}/flash-sales", stack.catalog))
            .bearer_auth(&admin.token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Self {
            stack,
            client,
            admin,
            id: created["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{created}"))
                .parse()
                .unwrap(),
            starts_at,
        }
    }

    pub(crate) async fn admin_post(&self, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}{path}", self.stack.catalog))
            .bearer_auth(&self.admin.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    pub(crate) async fn enter(&self, buyer: &seed::Buyer) -> Value {
        self.enter_at(&self.stack.door, buyer).await
    }

    /// Enters through the admission process at `door`.
    pub(crate) async fn enter_at(&self, door: &str, buyer: &seed::Buyer) -> Value {
        let response = self
            .client
            .post(format!("{door}/sales/{}/tickets", self.id))
            .bearer_auth(&buyer.token)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.json().await.unwrap()
    }

    pub(crate) async fn ticket(&self, buyer: &seed::Buyer, ticket: &str) -> Value {
        self.client
            .get(format!("{}/tickets/{ticket}", self.stack.door))
            .bearer_auth(&buyer.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls until the ticket's status is `want` (the workers run in the background); `ordered`
    /// also matches a ticket whose order was since paid or cancelled.
    pub(crate) async fn wait_for(&self, buyer: &seed::Buyer, ticket: &str, want: &str) -> Value {
        for _ in 0..200 {
            let current = self.ticket(buyer, ticket).await;
            let status = current["status"].as_str().unwrap_or_default();
            let matched =
                status == want || (want == "ordered" && matches!(status, "paid" | "cancelled"));
            if matched {
                return current;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "ticket {ticket} never became {want}: {}",
            self.ticket(buyer, ticket).await
        );
    }

    /// Waits until every order's payment (and any refund) has settled, then runs the invariant
    /// checker, which wants them settled.
    pub(crate) async fn settle_and_check(&self, db: &PgPool) -> loadtest::check::CheckReport {
        for _ in 0..200 {
            let pending: i64 = sqlx::query_scalar(
                "select count(*) from orders o left join payments p using (order_id)
                 where o.flash_sale_id = $1
                   and (o.status = 'pending_payment' or (o.status = 'cancelled' and p.status = 'succeeded'))",
            )
            .bind(self.id)
            .fetch_one(db)
            .await
            .unwrap();
            if pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let checked =
            loadtest::check::check_sale(db, Some(&self.stack.redis), &self.stack.keys, self.id)
                .await
                .unwrap();
        assert!(checked.is_sound(), "{:?}", checked.violations);
        checked
    }
}
