//! When the reconciler may set a live sale's gate to PostgreSQL's units left: the rule, pure.
//!
//! A running sale's gate is rightly below `quantity_left` by every ticket admitted and not yet
//! ordered, and those are in flight in places no single read sees at once (a publish awaiting
//! its ack, a batch between its commit and its acks, a unit being promoted). So the gate is only
//! compared with PostgreSQL once the sale has been quiet for a while: the same gate, admissions
//! counter and units left, with nothing queued or promoting, across readings at least
//! [`QUIET_FOR`] apart. Then every admitted ticket has been decided or taken back, and the gate
//! must equal `quantity_left`; a difference is a unit lost on its way back (a cancel, a declined
//! payment or a restock whose Redis step failed) or taken twice, and is corrected.

use std::time::{Duration, Instant};

/// How long a sale must stay quiet: longer than a publish may wait for its ack (2 s by default)
/// and than a drained batch takes to be acked, so nothing admitted before is still in flight.
pub(crate) const QUIET_FOR: Duration = Duration::from_secs(6);

/// What one pass read of a sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reading {
    /// The gate's units.
    pub(crate) gate: i64,
    /// The sale's admissions counter (queue numbers handed out).
    pub(crate) seq: i64,
    /// Its tickets waiting in the queue (delivered or not).
    pub(crate) queued: i64,
    /// Its tickets given a unit and not yet confirmed queued.
    pub(crate) promoting: i64,
    /// PostgreSQL's units not yet ordered.
    pub(crate) quantity_left: i64,
}

impl Reading {
    fn idle(&self) -> bool {
        self.queued == 0 && self.promoting == 0
    }
}

/// The start of a sale's quiet spell, as the reconciler remembers it between passes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quiet {
    since: Instant,
    reading: Reading,
}

/// The next remembered spell and, when the sale has been quiet long enough and its gate is off,
/// the gate's value to set (`quantity_left`).
pub(crate) fn assess(
    known: Option<Quiet>,
    reading: Reading,
    at: Instant,
    quiet_for: Duration,
) -> (Option<Quiet>, Option<i64>) {
    if !reading.idle() {
        return (None, None);
    }
    match known {
        Some(spell) if spell.reading == reading => {
            let settled = at.saturating_duration_since(spell.since) >= quiet_for;
            let target = (settled && reading.gate != reading.quantity_left)
                .then_some(reading.quantity_left.max(0));
            (Some(spell), target)
        }
        _ => (Some(Quiet { since: at, reading }), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: Reading = Reading {
        gate: 4,
        seq: 10,
        queued: 0,
        promoting: 0,
        quantity_left: 5,
    };

    #[test]
    fn a_first_reading_only_starts_the_spell() {
        let now = Instant::now();
        let (spell, target) = assess(None, READ, now, Duration::ZERO);
        assert!(spell.is_some());
        assert_eq!(target, None);
    }

    #[test]
    fn the_gate_is_corrected_only_after_the_quiet_time() {
        let start = Instant::now();
        let (spell, _) = assess(None, READ, start, QUIET_FOR);
        let (spell, early) = assess(spell, READ, start + QUIET_FOR / 2, QUIET_FOR);
        let (_, late) = assess(spell, READ, start + QUIET_FOR, QUIET_FOR);
        assert_eq!((early, late), (None, Some(5)));
    }

    #[test]
    fn any_change_or_work_in_flight_starts_over() {
        let start = Instant::now();
        let later = start + QUIET_FOR * 2;
        for changed in [
            Reading { gate: 3, ..READ },
            Reading { seq: 11, ..READ },
            Reading {
                quantity_left: 6,
                ..READ
            },
        ] {
            let (spell, _) = assess(None, READ, start, QUIET_FOR);
            let (spell, target) = assess(spell, changed, later, QUIET_FOR);
            assert_eq!(target, None, "{changed:?}");
            let (_, target) = assess(spell, changed, later + QUIET_FOR, QUIET_FOR);
            assert_eq!(
                target,
                Some(changed.quantity_left),
                "{changed:?} once quiet"
            );
        }
        for busy in [
            Reading { queued: 1, ..READ },
            Reading {
                promoting: 1,
                ..READ
            },
        ] {
            let (spell, _) = assess(None, busy, start, QUIET_FOR);
            let (spell, target) = assess(spell, busy, later, QUIET_FOR);
            assert_eq!((spell.is_none(), target), (true, None), "{busy:?}");
        }
    }

    #[test]
    fn a_gate_that_agrees_is_left_alone() {
        let start = Instant::now();
        let even = Reading { gate: 5, ..READ };
        let (spell, _) = assess(None, even, start, Duration::ZERO);
        assert_eq!(assess(spell, even, start, Duration::ZERO).1, None);
    }
}
