//! How many long-polls each member holds at once. A buyer's waiting room keeps one; a few tabs
//! keep a few. One token must not hold thousands of waiting requests, each a connection and a
//! task, so past the bound a poll answers at once instead of waiting.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use flash_core::domain::MemberId;

/// Waiting long-polls per member, in this process.
#[derive(Debug)]
pub(crate) struct MemberLongPolls {
    per_member: usize,
    waiting: Mutex<HashMap<MemberId, usize>>,
}

/// A member's waiting long-poll, counted until dropped.
#[derive(Debug)]
pub(crate) struct Held {
    polls: Arc<MemberLongPolls>,
    member: MemberId,
}

impl MemberLongPolls {
    /// At most `per_member` waiting long-polls per member (0: none waits).
    pub(crate) fn new(per_member: usize) -> Arc<Self> {
        Arc::new(Self {
            per_member,
            waiting: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more waiting long-poll of `member`, or `None` when they hold the most.
    pub(crate) fn hold(self: &Arc<Self>, member: MemberId) -> Option<Held> {
        let mut waiting = self.lock();
        let count = waiting.entry(member).or_insert(0);
        if *count >= self.per_member {
            return None;
        }
        *count += 1;
        Some(Held {
            polls: Arc::clone(self),
            member,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MemberId, usize>> {
        // Each change is a single map operation, so a poisoned map is still consistent.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut waiting = self.polls.lock();
        if let Some(count) = waiting.get_mut(&self.member) {
            *count -= 1;
            if *count == 0 {
                // Forget the member, so the map holds only members waiting now.
                waiting.remove(&self.member);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_holds_at_most_the_bound_and_gets_places_back() {
        let polls = MemberLongPolls::new(2);
        let (one, other) = (MemberId::new(), MemberId::new());
        let first = polls.hold(one);
        let second = polls.hold(one);
        assert!(first.is_some() && second.is_some());
        assert!(polls.hold(one).is_none(), "a third waits past the bound");
        assert!(polls.hold(other).is_some(), "the bound is per member");
        drop(first);
        assert!(
            polls.hold(one).is_some(),
            "a finished poll gives its place back"
        );
        drop(second);
        assert!(
            polls.lock().is_empty(),
            "members waiting on nothing are forgotten"
        );
    }
}
