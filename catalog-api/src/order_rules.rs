//! The rules of placing a regular order, free of IO so they are tested without a database:
//! which lines an order may have, what happens to the order when a line's stock cannot be
//! taken, what a refused line tells the buyer, and what the order costs.
//!
//! `http::orders` does the IO around them: it takes each line's stock (`stock::take`) and
//! hands the outcome here.

use flash_core::{
    ApiError, ProblemType,
    problem::{FieldError, UnavailableItem},
};
use uuid::Uuid;

use crate::stock::{Shortfall, Taken};

/// Most lines one order may have.
const MAX_ITEMS: usize = 50;
/// Most units of one product in one order.
const MAX_UNITS: i64 = 1000;

/// A line of an order: a product and its units.
pub(crate) type Line = (Uuid, i32);

/// Checks the lines a buyer asked for (products and units); sorts them by product so that
/// concurrent orders lock product rows in the same order (no deadlocks).
///
/// # Errors
/// 422 naming every bad line: no lines or too many, units out of range, a product twice.
pub(crate) fn checked_lines(asked: &[(Uuid, i64)]) -> Result<Vec<Line>, ApiError> {
    if asked.is_empty() || asked.len() > MAX_ITEMS {
        return Err(ApiError::invalid(
            "items",
            format!("must have 1 to {MAX_ITEMS} lines"),
        ));
    }
    let mut errors = Vec::new();
    let mut lines = Vec::with_capacity(asked.len());
    for (i, &(product, quantity)) in asked.iter().enumerate() {
        match i32::try_from(quantity) {
            Ok(q) if (1..=MAX_UNITS).contains(&quantity) => lines.push((product, q)),
            _ => errors.push(FieldError::new(
                format!("items[{i}].quantity"),
                format!("must be between 1 and {MAX_UNITS}"),
            )),
        }
    }
    lines.sort_unstable();
    if lines.windows(2).any(|w| w[0].0 == w[1].0) {
        errors.push(FieldError::new(
            "items",
            "each product may appear only once",
        ));
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// How an order treats a line whose stock cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusals {
    /// A request names its first problem, as a form would, and takes no further stock.
    StopAtFirst,
    /// A checkout names every line of the cart that cannot be had, so the shopper fixes them
    /// at once.
    NameAll,
}

/// A line whose stock could not be taken, and why.
#[derive(Debug)]
pub(crate) struct Refusal {
    item: UnavailableItem,
    /// The product's name, when there is such a product.
    name: Option<String>,
}

impl Refusal {
    /// The refusal of `requested` units of `product`, for the reason `stock::take` gave.
    pub(crate) fn new(product: Uuid, requested: i32, shortfall: Shortfall) -> Self {
        let (reason, available, name) = match shortfall {
            Shortfall::Unknown => ("unknown", 0, None),
            Shortfall::Inactive { name } => ("inactive", 0, Some(name)),
            Shortfall::Short { name, stock } => ("out_of_stock", stock, Some(name)),
        };
        Self {
            item: UnavailableItem {
                product_id: product,
                reason,
                requested,
                available,
            },
            name,
        }
    }

    /// The error for line `index` of a request.
    fn into_error(self, index: usize) -> ApiError {
        let UnavailableItem {
            product_id,
            reason,
            requested,
            available,
        } = self.item;
        let name = self.name.unwrap_or_default();
        match reason {
            "unknown" => ApiError::invalid(
                &format!("items[{index}].product_id"),
                format!("no product {product_id}"),
            ),
            "inactive" => ApiError::new(
                ProblemType::Conflict,
                format!("product {product_id} ({name}) is no longer sold"),
            ),
            _ => ApiError::new(
                ProblemType::OutOfStock,
                format!(
                    "product {product_id} ({name}) is out of stock: {available} left, {requested} asked"
                ),
            ),
        }
    }
}

/// A line whose stock was taken, at the price it was taken at.
#[derive(Debug)]
pub(crate) struct PricedLine {
    pub(crate) product: Uuid,
    pub(crate) quantity: i32,
    pub(crate) taken: Taken,
}

/// The lines of an order as their stock is taken, one by one: the priced ones and, under
/// [`Refusals::NameAll`], the refused ones.
#[derive(Debug)]
pub(crate) struct Basket {
    refusals: Refusals,
    priced: Vec<PricedLine>,
    refused: Vec<UnavailableItem>,
}

impl Basket {
    pub(crate) fn new(refusals: Refusals, lines: usize) -> Self {
        Self {
            refusals,
            priced: Vec::with_capacity(lines),
            refused: Vec::new(),
        }
    }

    /// Adds the outcome of taking line `index`'s stock.
    ///
    /// # Errors
    /// Under [`Refusals::StopAtFirst`], the refusal of this line: take no further stock.
    pub(crate) fn add(
        &mut self,
        index: usize,
        (product, quantity): Line,
        outcome: Result<Taken, Refusal>,
    ) -> Result<(), ApiError> {
        match outcome {
            Ok(taken) => self.priced.push(PricedLine {
                product,
                quantity,
                taken,
            }),
            Err(refusal) => match self.refusals {
                Refusals::StopAtFirst => return Err(refusal.into_error(index)),
                Refusals::NameAll => self.refused.push(refusal.item),
            },
        }
        Ok(())
    }

    /// The priced lines, once every line was added.
    ///
    /// # Errors
    /// 409 naming every refused line, when there is one.
    pub(crate) fn into_priced(self) -> Result<Vec<PricedLine>, ApiError> {
        if self.refused.is_empty() {
            Ok(self.priced)
        } else {
            Err(ApiError::ItemsUnavailable(self.refused))
        }
    }
}

/// The total and currency of priced lines; one order has one currency.
///
/// # Errors
/// 422 when the lines mix currencies or the total overflows.
pub(crate) fn order_total(priced: &[PricedLine]) -> Result<(i64, String), ApiError> {
    let mut currency: Option<&str> = None;
    let mut total: i64 = 0;
    for line in priced {
        if currency.is_some_and(|c| c != line.taken.currency) {
            return Err(ApiError::invalid(
                "items",
                "all products of one order must share a currency",
            ));
        }
        total = line
            .taken
            .price_cents
            .checked_mul(i64::from(line.quantity))
            .and_then(|sum| total.checked_add(sum))
            .ok_or_else(|| ApiError::invalid("items", "the order total is too large"))?;
        currency = Some(&line.taken.currency);
    }
    Ok((total, currency.unwrap_or_default().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(price_cents: i64, currency: &str) -> Taken {
        Taken {
            price_cents,
            currency: currency.to_owned(),
            version: 1,
        }
    }

    fn priced(quantity: i32, price_cents: i64, currency: &str) -> PricedLine {
        PricedLine {
            product: Uuid::new_v4(),
            quantity,
            taken: taken(price_cents, currency),
        }
    }

    fn fields(err: &ApiError) -> Vec<&str> {
        match err {
            ApiError::Validation(errors) => errors.iter().map(|e| e.field.as_str()).collect(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn lines_come_back_sorted_by_product() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(
            checked_lines(&[(b, 3), (a, MAX_UNITS)]).unwrap(),
            vec![(a, 1000), (b, 3)]
        );
    }

    #[test]
    fn an_order_has_1_to_50_lines() {
        let err = checked_lines(&[]).unwrap_err();
        assert_eq!(fields(&err), ["items"]);
        let many: Vec<(Uuid, i64)> = (0..=MAX_ITEMS as u128)
            .map(|n| (Uuid::from_u128(n), 1))
            .collect();
        assert!(checked_lines(&many[..MAX_ITEMS]).is_ok());
        assert_eq!(fields(&checked_lines(&many).unwrap_err()), ["items"]);
    }

    #[test]
    fn every_bad_line_is_named() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let err = checked_lines(&[(a, 0), (b, 1), (b, 2), (a, i64::MAX)]).unwrap_err();
        assert_eq!(
            fields(&err),
            ["items[0].quantity", "items[3].quantity", "items"]
        );
    }

    #[test]
    fn a_refusal_says_why_and_how_many_are_left() {
        let product = Uuid::new_v4();
        let short = Refusal::new(
            product,
            5,
            Shortfall::Short {
                name: "Sneaker".into(),
                stock: 2,
            },
        );
        assert_eq!(
            (
                short.item.reason,
                short.item.requested,
                short.item.available
            ),
            ("out_of_stock", 5, 2)
        );
        let err = short.into_error(0);
        assert_eq!(err.kind(), ProblemType::OutOfStock);
        assert_eq!(
            err.to_string(),
            format!("product {product} (Sneaker) is out of stock: 2 left, 5 asked")
        );

        let inactive = Refusal::new(
            product,
            5,
            Shortfall::Inactive {
                name: "Sneaker".into(),
            },
        );
        assert_eq!(
            (inactive.item.reason, inactive.item.available),
            ("inactive", 0)
        );
        assert_eq!(inactive.into_error(0).kind(), ProblemType::Conflict);

        let unknown = Refusal::new(product, 5, Shortfall::Unknown);
        assert_eq!(
            (unknown.item.reason, unknown.name.as_deref()),
            ("unknown", None)
        );
        assert_eq!(fields(&unknown.into_error(3)), ["items[3].product_id"]);
    }

    #[test]
    fn a_request_stops_at_its_first_refused_line() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut basket = Basket::new(Refusals::StopAtFirst, 2);
        basket.add(0, (a, 1), Ok(taken(100, "EUR"))).unwrap();
        let err = basket
            .add(1, (b, 1), Err(Refusal::new(b, 1, Shortfall::Unknown)))
            .unwrap_err();
        assert_eq!(fields(&err), ["items[1].product_id"]);
    }

    #[test]
    fn a_checkout_names_every_refused_line() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let mut basket = Basket::new(Refusals::NameAll, 3);
        basket
            .add(0, (a, 1), Err(Refusal::new(a, 1, Shortfall::Unknown)))
            .unwrap();
        basket.add(1, (b, 1), Ok(taken(100, "EUR"))).unwrap();
        let short = Shortfall::Short {
            name: "C".into(),
            stock: 0,
        };
        basket
            .add(2, (c, 4), Err(Refusal::new(c, 4, short)))
            .unwrap();
        match basket.into_priced().unwrap_err() {
            ApiError::ItemsUnavailable(items) => {
                let named: Vec<_> = items.iter().map(|i| (i.product_id, i.reason)).collect();
                assert_eq!(named, [(a, "unknown"), (c, "out_of_stock")]);
            }
            other => panic!("not unavailable items: {other:?}"),
        }
    }

    #[test]
    fn a_basket_without_refusals_is_priced_in_order() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for refusals in [Refusals::StopAtFirst, Refusals::NameAll] {
            let mut basket = Basket::new(refusals, 2);
            basket.add(0, (a, 2), Ok(taken(100, "EUR"))).unwrap();
            basket.add(1, (b, 3), Ok(taken(250, "EUR"))).unwrap();
            let priced = basket.into_priced().unwrap();
            let lines: Vec<Line> = priced.iter().map(|p| (p.product, p.quantity)).collect();
            assert_eq!(lines, [(a, 2), (b, 3)]);
            assert_eq!(order_total(&priced).unwrap(), (950, "EUR".to_owned()));
        }
    }

    #[test]
    fn an_order_has_one_currency() {
        let err = order_total(&[priced(1, 100, "EUR"), priced(1, 100, "USD")]).unwrap_err();
        assert_eq!(fields(&err), ["items"]);
    }

    #[test]
    fn a_total_that_overflows_is_refused_not_wrapped() {
        let err = order_total(&[priced(2, i64::MAX / 2 + 1, "EUR")]).unwrap_err();
        assert_eq!(fields(&err), ["items"]);
        let err = order_total(&[priced(1, i64::MAX, "EUR"), priced(1, 1, "EUR")]).unwrap_err();
        assert_eq!(fields(&err), ["items"]);
    }
}
