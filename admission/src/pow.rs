//! Proof of work on entry: optional per sale (`pow_bits`), so that a script entering thousands
//! of accounts pays for each one while a buyer's page spends about a second.
//!
//! The challenge is `<sale>:<member>:` and the answer a nonce (the `X-Proof-Of-Work` header)
//! such that SHA-256 of challenge + nonce starts with `pow_bits` zero bits. It is bound to the
//! sale and the member, so a solution cannot be shared between accounts, and it needs no state
//! on the server: checking costs one hash.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The header carrying the nonce.
pub(crate) const HEADER: &str = "x-proof-of-work";

/// Longest nonce accepted (a longer one is treated as none).
const MAX_NONCE: usize = 64;

/// What a member must hash, before the nonce, to enter `sale`.
pub(crate) fn challenge(sale: Uuid, member: Uuid) -> String {
    format!("{sale}:{member}:")
}

/// Leading zero bits of SHA-256(challenge + nonce): the work the nonce proves (0 for none).
pub(crate) fn work(challenge: &str, nonce: Option<&str>) -> u32 {
    let Some(nonce) = nonce.filter(|n| !n.is_empty() && n.len() <= MAX_NONCE) else {
        return 0;
    };
    let digest = Sha256::new()
        .chain_update(challenge.as_bytes())
        .chain_update(nonce.as_bytes())
        .finalize();
    let mut bits = 0;
    for byte in digest {
        bits += byte.leading_zeros();
        if byte != 0 {
            break;
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finds a nonce worth at least `bits`, as the page does.
    fn solve(challenge: &str, bits: u32) -> String {
        (0u64..)
            .map(|n| n.to_string())
            .find(|nonce| work(challenge, Some(nonce)) >= bits)
            .unwrap_or_default()
    }

    #[test]
    fn a_solved_nonce_proves_its_bits() {
        let challenge = challenge(Uuid::now_v7(), Uuid::now_v7());
        let nonce = solve(&challenge, 10);
        let digest = Sha256::digest(format!("{challenge}{nonce}").as_bytes());
        // 10 zero bits: the whole first byte and the top two of the second.
        assert_eq!(digest[0], 0);
        assert!(digest[1] < 0x40, "{:02x}", digest[1]);
    }

    #[test]
    fn the_work_is_counted_in_bits() {
        // SHA-256("abc") = ba7816bf…: no leading zero bit.
        assert_eq!(work("ab", Some("c")), 0);
        // SHA-256("d") = 18ac3e73…: 0x18 = 0b0001_1000, three.
        assert_eq!(work("", Some("d")), 3);
    }

    #[test]
    fn no_nonce_or_an_oversized_one_proves_nothing() {
        let challenge = challenge(Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(work(&challenge, None), 0);
        assert_eq!(work(&challenge, Some("")), 0);
        assert_eq!(work(&challenge, Some(&"7".repeat(65))), 0);
    }
}
