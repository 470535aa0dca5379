//! Ticket ids that name their sale. The first four bytes of a ticket id are a tag of its sale,
//! so `GET /tickets/{id}` finds the ticket's keys (which live under the sale's hash tag) with
//! no index entry per ticket, and an entry costs one Redis round trip fewer.
//!
//! A tag is 32 bits of a hash of the sale id, so two sales may share one: Redis keeps the set
//! of sales under each tag (`Keys::sale_tag`), and a lookup tries each. The rest of the id is
//! random: a UUID of version 8 with 90 random bits, as hard to guess as a version 4 one.

pub(crate) use flash_core::redis_model::sale_tag;
use uuid::Uuid;

/// A new ticket id for `sale`.
pub(crate) fn new_ticket(sale: Uuid) -> Uuid {
    let mut bytes = Uuid::new_v4().into_bytes();
    bytes[..4].copy_from_slice(&sale_tag(sale).to_be_bytes());
    Uuid::new_v8(bytes)
}

/// The sale tag a ticket id carries; `None` for an id the door did not make (then only
/// PostgreSQL may know it).
pub(crate) fn ticket_tag(ticket: Uuid) -> Option<u32> {
    (ticket.get_version_num() == 8).then(|| {
        let bytes = ticket.as_bytes();
        u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_carries_its_sales_tag_and_is_otherwise_random() {
        let sale = Uuid::now_v7();
        let (a, b) = (new_ticket(sale), new_ticket(sale));

        assert_eq!(ticket_tag(a), Some(sale_tag(sale)));
        assert_eq!(a.get_version_num(), 8);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        assert_ne!(a, b);
        assert_ne!(ticket_tag(new_ticket(Uuid::now_v7())), ticket_tag(a));
    }

    #[test]
    fn ids_the_door_did_not_make_carry_no_tag() {
        assert_eq!(ticket_tag(Uuid::new_v4()), None);
        assert_eq!(ticket_tag(Uuid::now_v7()), None);
    }

    #[test]
    fn the_tag_is_stable_across_processes_and_releases() {
        let sale = Uuid::from_u128(0x0192_5c6e_8a3b_7c4d_9e5f_a6b7_c8d9_e0f1);
        assert_eq!(sale_tag(sale), sale_tag(sale));
        assert_eq!(sale_tag(Uuid::nil()), 0x6969_1905);
    }
}
