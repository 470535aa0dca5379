//! The faults `loadtest chaos` injects, one row of the matrix per fault, and the rules that
//! turn what a row measured into its verdict: pure, so they are unit-tested apart from the
//! processes and servers a row drives.

use serde::Serialize;

/// One fault, injected once mid-spike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL the worker process; it is started again two seconds later.
    KillWorker,
    /// SIGKILL the front door; it is started again at once, as a supervisor would.
    KillDoor,
    /// SIGKILL catalog-api while buyers check out regular orders; started again a second later.
    KillCatalog,
    /// `FLUSHALL` on Redis: every gate, ticket and waitlist entry is gone.
    FlushRedis,
    /// NATS unreachable for the outage (its connections cut, new ones refused).
    CutNats,
    /// PostgreSQL unreachable for the outage (its connections cut, new ones refused).
    CutPostgres,
}

impl Fault {
    /// The row's name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Self::KillWorker => "SIGKILL worker",
            Self::KillDoor => "SIGKILL door",
            Self::KillCatalog => "SIGKILL catalog-api",
            Self::FlushRedis => "Redis FLUSHALL",
            Self::CutNats => "NATS unreachable",
            Self::CutPostgres => "PostgreSQL unreachable",
        }
    }
}

/// What one row measured.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The fault injected.
    pub fault: Fault,
    /// Entries answered 202 (each a promise of a final ticket).
    pub accepted: u64,
    /// Of those, tickets the buyers saw final.
    pub final_tickets: u64,
    /// 202s whose ticket never became final: lost buyers.
    pub lost: u64,
    /// Units in live orders beyond what the sale offered (regular stock too, for checkouts).
    pub oversold: u64,
    /// Charges beyond one per ticket and per member's limit (and per checkout).
    pub double_charges: u64,
    /// Emails sent more than once (same member, kind and subject).
    pub mails_twice: u64,
    /// Units left unsold while buyers had been told `sold_out`.
    pub undersold: u64,
    /// Seconds from the fault until the door's `/readyz` answered 2xx again (`None`: it never
    /// did).
    pub door_back_secs: Option<f64>,
    /// Seconds from the fault until every buyer's ticket was final.
    pub all_final_secs: Option<f64>,
    /// Regular checkouts during the fault (catalog-api's row): placed, refused, unanswered.
    pub checkouts: Option<Checkouts>,
    /// The invariant checker's findings (empty: sound).
    pub violations: Vec<String>,
}

/// Regular checkouts run through a catalog-api fault.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Checkouts {
    /// Answered 201 (an order).
    pub placed: u64,
    /// Answered 409 (out of stock).
    pub refused: u64,
    /// Never answered 201 or 409 within the bound: lost.
    pub unanswered: u64,
}

impl Row {
    /// True when nothing was lost, oversold, charged or mailed twice, or left unsold while
    /// buyers were refused, the checker found nothing, and the door came back.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.oversold == 0
            && self.double_charges == 0
            && self.mails_twice == 0
            && self.undersold == 0
            && self.checkouts.as_ref().is_none_or(|c| c.unanswered == 0)
            && self.violations.is_empty()
            && self.door_back_secs.is_some()
    }
}

/// Seconds from the fault until the door was answering again: the first successful probe
/// after the last failed one, or 0 when no probe after the fault failed. `probes` are
/// (seconds after the fault, answered 2xx), in the order they were sent; probes before the
/// fault (negative times) are ignored. `None` when the door never answered after a failure.
pub fn back_after(probes: &[(f64, bool)]) -> Option<f64> {
    let after: Vec<&(f64, bool)> = probes.iter().filter(|(at, _)| *at >= 0.0).collect();
    let Some(last_failure) = after.iter().rposition(|(_, ok)| !ok) else {
        return Some(0.0);
    };
    after[last_failure + 1..].first().map(|(at, _)| *at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            fault: Fault::KillWorker,
            accepted: 10,
            final_tickets: 10,
            lost: 0,
            oversold: 0,
            double_charges: 0,
            mails_twice: 0,
            undersold: 0,
            door_back_secs: Some(0.0),
            all_final_secs: Some(1.0),
            checkouts: None,
            violations: Vec::new(),
        }
    }

    #[test]
    fn a_door_that_never_failed_was_back_at_once() {
        assert_eq!(
            back_after(&[(-1.0, false), (0.1, true), (0.2, true)]),
            Some(0.0)
        );
        assert_eq!(back_after(&[]), Some(0.0));
    }

    #[test]
    fn the_door_is_back_at_the_first_success_after_its_last_failure() {
        let probes = [
            (0.1, false),
            (0.2, true),
            (0.3, false),
            (0.4, false),
            (1.5, true),
            (1.6, true),
        ];
        assert_eq!(back_after(&probes), Some(1.5));
    }

    #[test]
    fn a_door_still_failing_at_the_end_never_came_back() {
        assert_eq!(back_after(&[(0.1, true), (0.2, false)]), None);
    }

    #[test]
    fn any_loss_fails_the_row() {
        assert!(row().passed());
        for broken in [
            Row { lost: 1, ..row() },
            Row {
                oversold: 1,
                ..row()
            },
            Row {
                double_charges: 1,
                ..row()
            },
            Row {
                mails_twice: 1,
                ..row()
            },
            Row {
                undersold: 1,
                ..row()
            },
            Row {
                door_back_secs: None,
                ..row()
            },
            Row {
                violations: vec!["oversold".to_owned()],
                ..row()
            },
            Row {
                checkouts: Some(Checkouts {
                    unanswered: 1,
                    ..Checkouts::default()
                }),
                ..row()
            },
        ] {
            assert!(!broken.passed(), "{broken:?}");
        }
    }
}
