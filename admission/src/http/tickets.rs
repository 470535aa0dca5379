//! `POST /sales/{id}/tickets` (the door) and `GET /tickets/{id}` (the waiting room's poll).

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::{
    Extension, Router,
    extract::{ConnectInfo, FromRequestParts, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use flash_core::{
    ApiError, ProblemType,
    auth::AuthMember,
    domain::{MemberId, OrderStatus, TicketStatus},
    extract::{Json, Path, Query},
    http::LongPollGrant,
    jobs::TicketMessage,
    nats::PublishError,
    problem::ProblemBody,
    redis_model::entry::{Entry, Undo},
    waiting,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppState;
use crate::{gate::TicketState, pow};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/sales/{id}/tickets", post(create_ticket))
        .route("/sales/{id}/tickets/mine", get(my_ticket))
        .route(LONG_POLL_ROUTE, get(get_ticket))
}

/// The waiting room's poll, the door's one route that may wait (`?wait=N`) past the request
/// timeout.
pub(crate) const LONG_POLL_ROUTE: &str = "/tickets/{id}";

/// The entry's 503s, each its own words so a buyer's page (and a test) can tell them apart.
const QUEUE_FULL: &str = "the ticket queue is full; retry in a moment";
const NOT_QUEUED: &str = "the ticket queue did not take the entry; retry in a moment";
const NOT_ARMED: &str = "the sale is being prepared; retry in a moment";
const NOT_RECORDED: &str = "your place could not be saved; retry in a moment to keep it";

/// How often a long-poll re-reads the ticket.
const LONG_POLL_STEP: Duration = Duration::from_millis(250);

/// A waiting-room ticket.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TicketBody {
    ticket_id: Uuid,
    sale_id: Uuid,
    /// `queued` (shown as `paused` while an admin holds the sale), then `ordered` (with
    /// `order_id`), `paid` or `cancelled`; or `prequeued` (until the draw at `draw_at`), or
    /// `waitlisted` (then `queued` when a unit comes back to them, or `sold_out` at the end),
    /// `sold_out`, `rejected`, `failed`, `expired`.
    status: &'static str,
    /// Tickets ahead of this one (queued tickets only).
    position: Option<i64>,
    /// Estimated wait from the measured drain rate (queued tickets with a known rate).
    eta_ms: Option<i64>,
    /// When to poll again; absent once the ticket is final.
    poll_after_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<Uuid>,
    /// Place on the waitlist, 1 = next to get a unit that comes back (waitlisted tickets).
    #[serde(skip_serializing_if = "Option::is_none")]
    waitlist_position: Option<i64>,
    /// When the pre-queue is drawn (pre-queued tickets): then the ticket gets a position.
    #[serde(skip_serializing_if = "Option::is_none")]
    draw_at: Option<DateTime<Utc>>,
}

impl TicketBody {
    /// A ticket the door has just made, before any worker has seen it: nothing to show but
    /// its status (and when to poll again, unless it is final).
    fn fresh(ticket: Uuid, sale: Uuid, status: TicketStatus, poll_after_ms: Option<i64>) -> Self {
        Self {
            ticket_id: ticket,
            sale_id: sale,
            status: status.as_str(),
            position: None,
            eta_ms: None,
            poll_after_ms,
            order_id: None,
            waitlist_position: None,
            draw_at: None,
        }
    }

    fn from_state(ticket: Uuid, state: &TicketState) -> Self {
        let queued = state.status == TicketStatus::Queued;
        let position = queued.then(|| (state.seq - state.served).max(0));
        let eta_ms = position
            .filter(|_| state.drain_rate > 0.0 && !state.paused)
            .map(|p| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
                let ms = (p as f64 / state.drain_rate * 1000.0) as i64;
                ms
            });
        Self {
            ticket_id: ticket,
            sale_id: state.sale,
            status: state.status.shown(state.paused),
            position,
            eta_ms,
            // Far-back buyers poll less often: 250 ms at the front, up to 10 s. A waitlisted
            // buyer waits on returned units, which come slowly.
            poll_after_ms: position
                .map(|p| (250 + p.saturating_mul(2)).min(10_000))
                .or(state.waitlist_position.map(|_| 2_000))
                .or(state.draw_at.map(|at| {
                    // Until the draw, and a moment after it while the release runs.
                    (at - Utc::now()).num_milliseconds().clamp(250, 5_000)
                })),
            order_id: state.order_id,
            waitlist_position: state.waitlist_position,
            draw_at: state.draw_at,
        }
    }

    /// `"<status>-<position>-<waitlist position>-<order id>"`, built by hand: every poll
    /// makes one, and `format!` cost twice as much.
    fn etag(&self) -> String {
        let mut tag = String::with_capacity(64);
        tag.push('"');
        tag.push_str(self.status);
        for number in [self.position, self.waitlist_position] {
            tag.push('-');
            tag.push_str(itoa::Buffer::new().format(number.unwrap_or(-1)));
        }
        tag.push('-');
        if let Some(order) = self.order_id {
            tag.push_str(order.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        }
        tag.push('"');
        tag
    }
}

// POST /sales/{id}/tickets → 202 + Location (queued); 200 with the same ticket on repeat
// (docs/design.md, the buyer's flow)
#[utoipa::path(
    post, path = "/sales/{id}/tickets", tag = "tickets",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id")),
    responses(
        (status = 202, description = "A new ticket, durably queued, or a new place on the waitlist", body = TicketBody),
        (status = 200, description = "The buyer's existing ticket, or a new sold-out one", body = TicketBody),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such sale", body = ProblemBody, content_type = "application/problem+json"),
        (status = 410, description = "The sale ended or was cancelled", body = ProblemBody, content_type = "application/problem+json"),
        (status = 425, description = "The sale has not started; see starts_at and Retry-After", body = ProblemBody, content_type = "application/problem+json"),
        (status = 428, description = "The sale asks for a proof of work (X-Proof-Of-Work); see pow_bits and pow_challenge", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many entries; see Retry-After", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Queue full or unavailable; nothing was taken; see Retry-After", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
// The door's handlers trace at debug: a second span per request cost about 5 % of the entries
// and polls per second, and every line a request logs already ends with its path, which names
// the sale or ticket.
#[tracing::instrument(level = "debug", skip_all, fields(sale_id = %sale, member_id = %member.member_id))]
pub(crate) async fn create_ticket(
    State(state): State<AppState>,
    member: AuthMember,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(sale): Path<Uuid>,
) -> Result<Response, ApiError> {
    state
        .limits
        .check(member.member_id, state.client_address.of(&headers, peer))?;
    if state.queue.depth() >= state.queue_max_depth {
        count("queue_full");
        return Err(ApiError::unavailable_because(
            QUEUE_FULL,
            anyhow::anyhow!("the queue holds {} tickets", state.queue.depth()),
        ));
    }
    let now = Utc::now();
    let challenge = || pow::challenge(sale, member.member_id.get());
    // Most sales ask for no proof: an entry without the header costs nothing here.
    let work = headers
        .get(pow::HEADER)
        .and_then(|v| v.to_str().ok())
        .map_or(0, |nonce| pow::work(&challenge(), Some(nonce)));
    let entrant = Entrant {
        state: &state,
        sale,
        member: member.member_id,
        headers: &headers,
    };
    match state.gate.enter(sale, member.member_id, now, work).await? {
        Entry::Queued { ticket, seq } => entrant.queued(ticket, seq, now).await,
        Entry::Waitlisted { ticket } => entrant.placed(ticket, TicketStatus::Waitlisted).await,
        Entry::Prequeued { ticket } => entrant.placed(ticket, TicketStatus::Prequeued).await,
        Entry::SoldOut { ticket } => Ok(entrant.sold_out(ticket)),
        Entry::Existing { ticket } => entrant.existing(ticket).await,
        Entry::Early { starts_at } => {
            Err(rejected("early", ApiError::SaleNotStarted { starts_at }))
        }
        Entry::ProofOfWork { bits } => Err(rejected(
            "proof_of_work",
            ApiError::ProofOfWorkRequired {
                bits,
                challenge: challenge(),
            },
        )),
        Entry::Ended => Err(ended()),
        Entry::Unknown => Err(entrant.not_armed_or_unknown().await),
    }
}

/// A buyer entering a sale: what the answer to each of the gate's outcomes needs.
struct Entrant<'a> {
    state: &'a AppState,
    sale: Uuid,
    member: MemberId,
    headers: &'a HeaderMap,
}

impl Entrant<'_> {
    /// A unit was taken: the ticket is published, and the 202 is a promise because JetStream
    /// acked it. A failed publish gives the unit back, and the buyer may try again.
    async fn queued(
        &self,
        ticket: Uuid,
        seq: i64,
        now: DateTime<Utc>,
    ) -> Result<Response, ApiError> {
        if let Err(err) = self.queue(ticket, seq, now).await {
            match self.state.gate.undo(self.sale, self.member, ticket).await {
                Ok(Undo::Withdrawn) => {}
                // A worker holds the ticket: the publish was stored after all, and the 202 is
                // as true as an acked one.
                Ok(Undo::Kept) => {
                    tracing::warn!(%ticket, error = %err, "a publish that failed was stored; the ticket stays");
                    count("publish_stored");
                    return Ok(ticket_response(
                        StatusCode::ACCEPTED,
                        TicketBody::fresh(ticket, self.sale, TicketStatus::Queued, Some(250)),
                    ));
                }
                Err(undo) => {
                    tracing::error!(error = %undo, %ticket, "returning the unit after a failed publish failed; the ticket stays queued, and its buyer's next entry queues it");
                }
            }
            count("publish_failed");
            return Err(ApiError::unavailable_because(
                NOT_QUEUED,
                anyhow::Error::from(err).context("queueing the ticket"),
            ));
        }
        count(TicketStatus::Queued.as_str());
        let body = TicketBody::fresh(ticket, self.sale, TicketStatus::Queued, Some(250));
        Ok(ticket_response(StatusCode::ACCEPTED, body))
    }

    /// A new ticket waiting for a unit (`waitlisted`) or for the draw (`prequeued`): recorded
    /// in PostgreSQL first (it holds no unit and no queued message, so Redis alone would lose
    /// it), then answered as it stands in Redis, which knows its place.
    async fn placed(&self, ticket: Uuid, status: TicketStatus) -> Result<Response, ApiError> {
        self.record_waiting(ticket, status).await?;
        let current = self.current(ticket).await?;
        count(status.as_str());
        Ok(ticket_response(
            StatusCode::ACCEPTED,
            TicketBody::from_state(ticket, &current),
        ))
    }

    /// No unit and no room on the waitlist: a new ticket, sold out from the start.
    fn sold_out(&self, ticket: Uuid) -> Response {
        count(TicketStatus::SoldOut.as_str());
        let body = TicketBody::fresh(ticket, self.sale, TicketStatus::SoldOut, None);
        ticket_response(StatusCode::OK, body)
    }

    /// The buyer holds a ticket already: the same ticket again, queued once more if it may
    /// have been stranded.
    async fn existing(&self, ticket: Uuid) -> Result<Response, ApiError> {
        count("existing");
        let current = self.current(ticket).await?;
        // A waiting ticket whose record failed before (that entry got a 503) is recorded now.
        self.record_waiting(ticket, current.status).await?;
        // The gate may have queued this ticket for an entry whose answer never came back
        // (Redis's reply lost, the door stopped before publishing): nothing else would
        // ever publish it, and the buyer would wait on it forever. Publishing again under
        // the ticket's `Nats-Msg-Id` queues it then, and is dropped as a duplicate when
        // the first publish did land.
        if current.status == TicketStatus::Queued {
            let stranded = self
                .queue(ticket, current.seq, Utc::now())
                .await
                .map_err(|err| {
                    ApiError::unavailable_because(
                        NOT_QUEUED,
                        anyhow::Error::from(err).context("queueing the ticket again"),
                    )
                })?;
            if stranded {
                // Also a copy of a ticket queued longer ago than the duplicate window.
                tracing::warn!(%ticket, "a queued ticket JetStream did not hold is queued now");
                count("requeued");
            }
        }
        Ok(ticket_response(
            StatusCode::OK,
            TicketBody::from_state(ticket, &current),
        ))
    }

    /// Redis knows no such sale: it lost the gate (the sale exists in PostgreSQL), the gate
    /// expired after the sale ended (its keys live a day past the end), or there is no such
    /// sale at all.
    async fn not_armed_or_unknown(&self) -> ApiError {
        let sale = self.sale;
        let over: Result<Option<bool>, _> = sqlx::query_scalar(
            "select ends_at <= now() or cancelled_at is not null from flash_sales
             where flash_sale_id = $1",
        )
        .bind(sale)
        .fetch_optional(&self.state.db)
        .await;
        match over {
            Err(err) => err.into(),
            Ok(Some(true)) => ended(),
            // Redis lost the gate; the workers' reconciler re-arms it within seconds.
            Ok(Some(false)) => rejected(
                "not_armed",
                ApiError::unavailable_because(
                    NOT_ARMED,
                    anyhow::anyhow!("sale {sale} is not armed in Redis"),
                ),
            ),
            Ok(None) => rejected(
                "unknown_sale",
                ApiError::not_found(format!("no flash sale {sale}")),
            ),
        }
    }

    /// Records `ticket` in PostgreSQL's copy of waiting tickets when `status` waits.
    async fn record_waiting(&self, ticket: Uuid, status: TicketStatus) -> Result<(), ApiError> {
        let Some(kind) = waiting::Kind::of(status) else {
            return Ok(());
        };
        let waiting = waiting::Waiting {
            ticket,
            member: self.member.get(),
            kind,
        };
        waiting::record(&self.state.db, self.sale, waiting)
            .await
            .map_err(|err| {
                ApiError::unavailable_because(
                    NOT_RECORDED,
                    anyhow::Error::from(err).context("recording a waiting ticket"),
                )
            })
    }

    /// The ticket the gate just answered with, as Redis holds it.
    async fn current(&self, ticket: Uuid) -> Result<TicketState, ApiError> {
        self.state
            .gate
            .ticket(ticket)
            .await?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("ticket {ticket} vanished")))
    }

    /// Publishes the buyer's `ticket`, admitted at `admitted_at`, and waits for JetStream's
    /// ack: `false` when JetStream already held it.
    async fn queue(
        &self,
        ticket: Uuid,
        seq: i64,
        admitted_at: DateTime<Utc>,
    ) -> Result<bool, PublishError> {
        let message = TicketMessage {
            ticket_id: ticket.into(),
            sale_id: self.sale.into(),
            member_id: self.member,
            seq,
            admitted_at_ms: admitted_at.timestamp_millis(),
        };
        let request_id = self
            .headers
            .get(flash_core::http::REQUEST_ID)
            .and_then(|v| v.to_str().ok());
        self.state.queue.publish(&message, request_id).await
    }
}

/// Counts an entry under its `outcome`.
fn count(outcome: &'static str) {
    metrics::counter!("flash_admission_tickets_total", "outcome" => outcome).increment(1);
}

/// Counts a refused entry under `reason`, and passes its error on.
fn rejected(reason: &'static str, err: ApiError) -> ApiError {
    count(reason);
    err
}

/// The sale is over (ended or cancelled), whether its gate says so or PostgreSQL does once the
/// gate has expired.
fn ended() -> ApiError {
    rejected(
        "ended",
        ApiError::new(ProblemType::SaleEnded, "the sale is over"),
    )
}

fn ticket_response(status: StatusCode, body: TicketBody) -> Response {
    let location = format!("/tickets/{}", body.ticket_id);
    let etag = body.etag();
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

// GET /sales/{id}/tickets/mine → 200 with the caller's ticket in this sale, or 404
/// The waiting room asks this when a buyer arrives: a reloaded page finds its place again,
/// and a token checked minutes before the start is already verified when the buyer enters.
#[utoipa::path(
    get, path = "/sales/{id}/tickets/mine", tag = "tickets",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id")),
    responses(
        (status = 200, description = "The caller's ticket in this sale", body = TicketBody),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "The caller holds no ticket in this sale (yet)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(sale_id = %sale))]
pub(crate) async fn my_ticket(
    State(state): State<AppState>,
    member: AuthMember,
    Path(sale): Path<Uuid>,
) -> Result<Response, ApiError> {
    let ticket = match state.gate.member_ticket(sale, member.member_id).await? {
        Some(ticket) => Some(ticket),
        // Before the start no order can exist: arrivals in the waiting room never reach
        // PostgreSQL. Later, an order is where a ticket Redis lost is still found.
        None if state
            .gate
            .starts_at(sale)
            .await?
            .is_some_and(|at| Utc::now() < at) =>
        {
            None
        }
        None => {
            sqlx::query_scalar(
                "select ticket_id from orders
                 where member_id = $1 and flash_sale_id = $2 and ticket_id is not null
                 order by created_at desc limit 1",
            )
            .bind(member.member_id.get())
            .bind(sale)
            .fetch_optional(&state.db)
            .await?
        }
    };
    let ticket =
        ticket.ok_or_else(|| ApiError::not_found(format!("you hold no ticket in sale {sale}")))?;
    let body = load_ticket(&state, ticket, &member).await?;
    Ok(ticket_response(StatusCode::OK, body))
}

/// Query of `GET /tickets/{id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Poll {
    /// Seconds to wait for a change (with `If-None-Match`) before answering 304; bounded by
    /// the server (25 s by default).
    #[param(minimum = 0, maximum = 60)]
    wait: Option<u64>,
}

// GET /tickets/{id} → 200 {ticket_id,sale_id,status,position,eta_ms,poll_after_ms,order_id?};
// 304 with If-None-Match; ?wait=N long-polls; owner only
#[utoipa::path(
    get, path = "/tickets/{id}", tag = "tickets",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Ticket id"), Poll),
    responses(
        (status = 200, description = "The ticket", body = TicketBody),
        (status = 304, description = "Unchanged since the ETag in If-None-Match"),
        (status = 400, description = "Malformed id or wait", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such ticket of the caller's", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many polls of tickets that do not exist; see Retry-After", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(level = "debug", skip_all, fields(ticket_id = %ticket))]
pub(crate) async fn get_ticket(
    State(state): State<AppState>,
    member: AuthMember,
    IfNoneMatch(known): IfNoneMatch,
    Path(ticket): Path<Uuid>,
    Query(poll): Query<Poll>,
    grant: Option<Extension<LongPollGrant>>,
) -> Result<Response, ApiError> {
    // A poll may wait only when the edge granted it a waiting place and its member holds
    // fewer than their bound; otherwise it answers at once, like `wait=0`.
    let asked = Duration::from_secs(poll.wait.unwrap_or(0));
    let held = grant
        .filter(|_| !asked.is_zero())
        .and_then(|Extension(grant)| {
            let held = state.long_polls.hold(member.member_id)?;
            Some((grant.max_wait.min(asked), held))
        });
    let wait = held.as_ref().map_or(Duration::ZERO, |(wait, _)| *wait);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let body = load_ticket(&state, ticket, &member).await?;
        let etag = body.etag();
        if known.as_deref() != Some(etag.as_str()) {
            return Ok(ticket_response(StatusCode::OK, body));
        }
        let now = tokio::time::Instant::now();
        if body.poll_after_ms.is_none() || now >= deadline {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            if let Ok(value) = HeaderValue::from_str(&etag) {
                response.headers_mut().insert(header::ETAG, value);
            }
            return Ok(response);
        }
        tokio::time::sleep(LONG_POLL_STEP.min(deadline - now)).await;
    }
}

/// A poll's `If-None-Match`, taken without copying the request's other headers (axum's
/// `HeaderMap` extractor clones them all).
pub(crate) struct IfNoneMatch(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(
            parts
                .headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ))
    }
}

/// The ticket from Redis, or, when Redis lost it, from the order PostgreSQL made of it.
async fn load_ticket(
    state: &AppState,
    ticket: Uuid,
    member: &AuthMember,
) -> Result<TicketBody, ApiError> {
    state.poll_misses.check(member.member_id)?;
    let not_found = || {
        state.poll_misses.missed(
            member.member_id,
            ApiError::not_found(format!("no ticket {ticket}")),
        )
    };
    if let Some(current) = state.gate.ticket(ticket).await? {
        // Another member's ticket, or one withdrawn before its buyer heard of it, does not
        // exist as far as this caller can tell.
        if current.member != member.member_id.get() || current.status == TicketStatus::Withdrawn {
            return Err(not_found());
        }
        return Ok(TicketBody::from_state(ticket, &current));
    }
    let order: Option<(Uuid, Uuid, String, Option<Uuid>)> = sqlx::query_as(
        "select order_id, member_id, status, flash_sale_id from orders where ticket_id = $1",
    )
    .bind(ticket)
    .fetch_optional(&state.db)
    .await?;
    match order {
        Some((order_id, owner, status, Some(sale))) if owner == member.member_id.get() => {
            Ok(TicketBody {
                ticket_id: ticket,
                sale_id: sale,
                status: shown_from_order(&status),
                position: None,
                eta_ms: None,
                poll_after_ms: None,
                order_id: Some(order_id),
                waitlist_position: None,
                draw_at: None,
            })
        }
        Some(_) => Err(not_found()),
        // A waiting ticket Redis lost (the reconciler restores it): still waiting.
        None => match waiting::find(&state.db, ticket, member.member_id.get()).await? {
            Some((sale, kind)) => Ok(TicketBody::fresh(ticket, sale, kind.status(), Some(2_000))),
            None => Err(not_found()),
        },
    }
}

/// What a ticket whose Redis copy is gone shows, from its order's status: `ordered` while the
/// order waits for payment, else the order's own state (`paid`, `cancelled`, `shipped`, ...).
fn shown_from_order(status: &str) -> &'static str {
    match OrderStatus::parse(status) {
        Some(OrderStatus::PendingPayment) | None => TicketStatus::Ordered.as_str(),
        Some(other) => other.as_str(),
    }
}
