//! The door's side of a ticket: an entry decided by `lua/enter.lua`, its undo, and the fields a
//! poll reads. The door runs the entry over its own pipelined connection or over the `redis`
//! crate; both take the keys, arguments and reply from here.

use crate::redis::Redis;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{KEEP_AFTER_END, Keys, millis, script};
use crate::domain::{MemberId, TicketStatus};

/// What the gate decided of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The buyer already holds this ticket.
    Existing {
        /// The ticket.
        ticket: Uuid,
    },
    /// A unit was taken: a new queued ticket.
    Queued {
        /// The ticket.
        ticket: Uuid,
        /// Its place in the sale's queue.
        seq: i64,
    },
    /// The gate was empty (or others wait already) and the waitlist had room.
    Waitlisted {
        /// The ticket.
        ticket: Uuid,
    },
    /// In the pre-queue (before the start), or behind it (after the start, before its
    /// release): placed when the pre-queue is drawn.
    Prequeued {
        /// The ticket.
        ticket: Uuid,
    },
    /// The gate was empty and so was the waitlist's room: a new sold-out ticket.
    SoldOut {
        /// The ticket.
        ticket: Uuid,
    },
    /// The sale opens later.
    Early {
        /// When.
        starts_at: DateTime<Utc>,
    },
    /// The sale wants a proof of work of this many bits, and the entry carried less.
    ProofOfWork {
        /// Leading zero bits asked for.
        bits: u32,
    },
    /// The sale ended or was cancelled.
    Ended,
    /// The gate is not armed: no such sale, or Redis lost it.
    Unknown,
}

/// One entry's call of `lua/enter.lua`: its keys and arguments, to run over any connection.
pub struct EntryCall {
    keys: [String; 9],
    args: [String; 5],
}

impl EntryCall {
    /// The call for `member` entering `sale` at `now` with `work` bits of proof, as `candidate`
    /// (the ticket id the entry gets if it makes a new ticket).
    pub fn new(
        keys: &Keys,
        sale: Uuid,
        member: MemberId,
        candidate: Uuid,
        now: DateTime<Utc>,
        work: u32,
    ) -> Self {
        Self {
            keys: [
                keys.sale_gate(sale),
                keys.sale_seq(sale),
                keys.member_ticket(sale, member.get()),
                keys.sale_meta(sale),
                keys.ticket(sale, candidate),
                keys.sale_waitlist(sale),
                keys.sale_waitlist_seq(sale),
                keys.sale_prequeue(sale),
                keys.sale_backlog(sale),
            ],
            args: [
                candidate.to_string(),
                member.get().to_string(),
                now.timestamp_millis().to_string(),
                work.to_string(),
                millis(KEEP_AFTER_END).to_string(),
            ],
        }
    }

    /// The script this call runs.
    pub fn script() -> &'static script::Script {
        &script::ENTER
    }

    /// Its KEYS.
    pub fn keys(&self) -> [&str; 9] {
        self.keys.each_ref().map(String::as_str)
    }

    /// Its ARGV.
    pub fn args(&self) -> [&str; 5] {
        self.args.each_ref().map(String::as_str)
    }

    /// Runs it over the `redis` crate's connection.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn run(&self, redis: &Redis) -> redis::RedisResult<Entry> {
        let mut invocation = Self::script().redis().prepare_invoke();
        invocation.key(&self.keys).arg(&self.args);
        let reply: String = invocation.invoke_async(&mut redis.clone()).await?;
        Ok(parse_entry(&reply))
    }
}

/// The entry script's reply, one line of words (see `lua/enter.lua`).
pub fn parse_entry(reply: &str) -> Entry {
    let mut fields = reply.split(' ');
    let kind = fields.next().unwrap_or_default();
    let mut next = || fields.next().unwrap_or_default();
    let ticket = |text: &str| text.parse().unwrap_or_default();
    match kind {
        "existing" => Entry::Existing {
            ticket: ticket(next()),
        },
        "early" => Entry::Early {
            starts_at: next()
                .parse()
                .ok()
                .and_then(DateTime::from_timestamp_millis)
                .unwrap_or_else(Utc::now),
        },
        "ended" => Entry::Ended,
        "pow" => Entry::ProofOfWork {
            bits: next().parse().unwrap_or(0),
        },
        status => match TicketStatus::parse(status) {
            Some(TicketStatus::Queued) => Entry::Queued {
                ticket: ticket(next()),
                seq: next().parse().unwrap_or(0),
            },
            Some(TicketStatus::SoldOut) => Entry::SoldOut {
                ticket: ticket(next()),
            },
            Some(TicketStatus::Waitlisted) => Entry::Waitlisted {
                ticket: ticket(next()),
            },
            Some(TicketStatus::Prequeued) => Entry::Prequeued {
                ticket: ticket(next()),
            },
            _ => Entry::Unknown,
        },
    }
}

/// What became of a ticket the door tried to take back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undo {
    /// The unit went back to the gate; the ticket is `withdrawn` and its buyer may enter again.
    Withdrawn,
    /// A worker had claimed or decided the ticket: JetStream held it after all, and the buyer
    /// keeps it (the door answers 202, as if the publish had been acked).
    Kept,
}

/// Takes back a queued ticket whose publish failed (`lua/undo.lua`), unless a worker has
/// claimed it already ([`super::tickets::claim`]): a publish that timed out may have been stored.
///
/// # Errors
/// When Redis fails.
pub async fn undo(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
    member: MemberId,
    ticket: Uuid,
) -> redis::RedisResult<Undo> {
    let withdrawn: i64 = script::UNDO
        .redis()
        .key(keys.sale_gate(sale))
        .key(keys.member_ticket(sale, member.get()))
        .key(keys.ticket(sale, ticket))
        .arg(ticket.to_string())
        .invoke_async(&mut redis.clone())
        .await?;
    Ok(if withdrawn == 1 {
        Undo::Withdrawn
    } else {
        Undo::Kept
    })
}

/// The fields of a ticket's hash a poll reads, in the order of [`TicketFields::parse`].
pub const TICKET_FIELDS: [&str; 5] = ["member", "status", "seq", "order_id", "wseq"];

/// The field a poll stamps with its time: the buyer's sign of life, for sales that expire
/// abandoned tickets.
pub const SEEN_FIELD: &str = "seen";

/// A ticket's hash as a poll reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketFields {
    /// Its buyer.
    pub member: Uuid,
    /// Where it is.
    pub status: TicketStatus,
    /// Its place in the queue (0 until it has one).
    pub seq: i64,
    /// The order made of it.
    pub order_id: Option<Uuid>,
    /// Its waitlist number (waitlisted tickets).
    pub wseq: Option<i64>,
}

impl TicketFields {
    /// The values of [`TICKET_FIELDS`] as Redis gave them: `None` when there is no such ticket
    /// (or it holds no buyer); an error when a field is not what the scripts write.
    ///
    /// # Errors
    /// A status the enum does not know, or a number that is not one.
    pub fn parse(values: [Option<String>; 5]) -> redis::RedisResult<Option<Self>> {
        let [member, status, seq, order_id, wseq] = values;
        let (Some(member), Some(status)) = (member, status) else {
            return Ok(None);
        };
        let Ok(member) = member.parse() else {
            return Ok(None);
        };
        let status = TicketStatus::parse(&status).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "a ticket has an unknown status",
                status.clone(),
            ))
        })?;
        Ok(Some(Self {
            member,
            status,
            seq: number(seq.as_deref())?.unwrap_or(0),
            order_id: order_id.and_then(|o| o.parse().ok()),
            wseq: number(wseq.as_deref())?,
        }))
    }
}

/// A number field of a ticket; text that is not a number is an error, as `redis` makes it.
fn number(field: Option<&str>) -> redis::RedisResult<Option<i64>> {
    field
        .map(|text| {
            text.parse().map_err(|_| {
                redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "a ticket field is not a number",
                    text.to_owned(),
                ))
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reply_of_the_entry_script_parses() {
        let t = Uuid::now_v7();
        assert_eq!(
            parse_entry(&format!("queued {t} 7")),
            Entry::Queued { ticket: t, seq: 7 }
        );
        assert_eq!(
            parse_entry(&format!("existing {t}")),
            Entry::Existing { ticket: t }
        );
        assert_eq!(
            parse_entry(&format!("sold_out {t} 0")),
            Entry::SoldOut { ticket: t }
        );
        assert_eq!(
            parse_entry(&format!("waitlisted {t} 0")),
            Entry::Waitlisted { ticket: t }
        );
        assert_eq!(
            parse_entry(&format!("prequeued {t} 0")),
            Entry::Prequeued { ticket: t }
        );
        assert_eq!(
            parse_entry("early 1700000000000"),
            Entry::Early {
                starts_at: DateTime::from_timestamp_millis(1_700_000_000_000).unwrap()
            }
        );
        assert_eq!(parse_entry("pow 12"), Entry::ProofOfWork { bits: 12 });
        assert_eq!(parse_entry("ended"), Entry::Ended);
        assert_eq!(parse_entry("unknown"), Entry::Unknown);
        assert_eq!(parse_entry("ordered x 0"), Entry::Unknown);
    }

    #[test]
    fn a_ticket_hash_parses_or_says_what_is_wrong() {
        let member = Uuid::now_v7();
        let some = |s: &str| Some(s.to_owned());
        let fields = TicketFields::parse([
            some(&member.to_string()),
            some("waitlisted"),
            some("0"),
            None,
            some("3"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(fields.status, TicketStatus::Waitlisted);
        assert_eq!((fields.seq, fields.wseq), (0, Some(3)));
        assert_eq!(
            TicketFields::parse([None, None, None, None, None]).unwrap(),
            None
        );
        assert!(
            TicketFields::parse([some(&member.to_string()), some("lost"), None, None, None])
                .is_err()
        );
        assert!(
            TicketFields::parse([
                some(&member.to_string()),
                some("queued"),
                some("x"),
                None,
                None
            ])
            .is_err()
        );
    }
}
