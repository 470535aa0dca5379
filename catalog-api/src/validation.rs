//! Field checks shared by the endpoints that take figures (products, flash sales, sale
//! control). Each check adds a [`FieldError`] rather than failing at once, so that one answer
//! names every bad field.

use flash_core::problem::FieldError;

/// Adds an error for `field` unless `min <= value <= max`.
pub(crate) fn check_range(
    field: &str,
    value: i64,
    min: i64,
    max: i64,
    errors: &mut Vec<FieldError>,
) {
    if !(min..=max).contains(&value) {
        errors.push(FieldError::new(
            field,
            format!("must be between {min} and {max}"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_keeps_its_bounds_and_names_the_field_outside_them() {
        let mut errors = Vec::new();
        for value in [0, 5, 10] {
            check_range("n", value, 0, 10, &mut errors);
        }
        assert!(errors.is_empty(), "{errors:?}");
        check_range("n", -1, 0, 10, &mut errors);
        check_range("n", 11, 0, 10, &mut errors);
        assert_eq!(
            errors,
            vec![FieldError::new("n", "must be between 0 and 10"); 2]
        );
    }
}
