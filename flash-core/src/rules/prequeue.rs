//! The pre-queue draw: buyers who entered before the start are ordered by a seeded random
//! permutation, so arriving a second earlier in the pre-queue buys nothing and the order can
//! be audited and replayed by anyone holding the seed and the tickets.
//!
//! The algorithm, fixed here so that a replay never depends on a library's sampling code:
//! sort the ticket ids ascending; seed ChaCha8 (`rand_chacha::ChaCha8Rng::seed_from_u64`);
//! then Fisher–Yates from the last index down: for `i` from `n - 1` to `1`, draw `u64`s until
//! one is below the largest multiple of `i + 1` that fits (rejection, so no index is favoured),
//! take it modulo `i + 1` as `j`, and swap `i` and `j`.

use rand_chacha::{
    ChaCha8Rng,
    rand_core::{RngCore, SeedableRng},
};
use uuid::Uuid;

/// Orders `tickets` by the draw seeded with `seed` (see the module docs); the input order does
/// not matter.
pub fn draw(tickets: &[Uuid], seed: u64) -> Vec<Uuid> {
    let mut order = tickets.to_vec();
    order.sort_unstable();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in (1..order.len()).rev() {
        let bound = u64::try_from(i + 1).unwrap_or(u64::MAX);
        let zone = u64::MAX - (u64::MAX % bound);
        let j = loop {
            let x = rng.next_u64();
            if x < zone {
                break x % bound;
            }
        };
        order.swap(i, usize::try_from(j).unwrap_or(i));
    }
    order
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn tickets(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::now_v7()).collect()
    }

    #[test]
    fn the_draw_is_a_permutation() {
        let input = tickets(1_000);
        let drawn = draw(&input, 42);
        assert_eq!(drawn.len(), input.len());
        let seen: HashSet<_> = drawn.iter().collect();
        assert_eq!(
            seen,
            input.iter().collect::<HashSet<_>>(),
            "every ticket exactly once"
        );
    }

    #[test]
    fn the_same_seed_and_tickets_give_the_same_order_whatever_the_input_order() {
        let input = tickets(200);
        let mut reversed = input.clone();
        reversed.reverse();
        assert_eq!(draw(&input, 7), draw(&reversed, 7));
        assert_ne!(
            draw(&input, 7),
            draw(&input, 8),
            "another seed, another order"
        );
    }

    #[test]
    fn the_draw_does_not_favour_early_arrivals() {
        // Over many seeds, the first-created ticket lands in the first half about half the time.
        let input = tickets(100);
        let first = input[0];
        let front = (0..2_000u64)
            .filter(|seed| draw(&input, *seed).iter().position(|t| *t == first) < Some(50))
            .count();
        assert!(
            (850..=1_150).contains(&front),
            "{front} of 2000 in the front half"
        );
    }

    #[test]
    fn tiny_draws_are_fine() {
        assert!(draw(&[], 1).is_empty());
        let one = tickets(1);
        assert_eq!(draw(&one, 1), one);
    }
}
