//! Reading numeric settings once at start (DESIGN rule 7): a missing value
//! takes its default, a bad one stops the start with a message naming it.

/// The setting `name` as a number in `min..=max`, else `default` when unset;
/// `what` names the expected kind in the error ("a whole number").
pub fn bounded(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
    what: &str,
) -> Result<u64, String> {
    match get(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|v| (min..=max).contains(v))
            .ok_or(format!(
                "{name}={raw:?}: expected {what} from {min} to {max}"
            )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_bounds_and_messages() {
        let get = |name: &str| match name {
            "GOOD" => Some(" 7 ".to_owned()),
            "BIG" => Some("99".to_owned()),
            "WORD" => Some("many".to_owned()),
            _ => None,
        };
        assert_eq!(bounded(&get, "GOOD", 1, 0, 10, "a whole number"), Ok(7));
        assert_eq!(bounded(&get, "UNSET", 3, 0, 10, "a whole number"), Ok(3));
        let err = bounded(&get, "BIG", 1, 0, 10, "milliseconds").unwrap_err();
        assert!(
            err.contains("BIG") && err.contains("milliseconds from 0 to 10"),
            "{err}"
        );
        assert!(bounded(&get, "WORD", 1, 0, 10, "a whole number").is_err());
    }
}
