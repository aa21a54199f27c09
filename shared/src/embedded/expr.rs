//! Condition and update expressions evaluated in process, with DynamoDB's
//! semantics, for the embedded table.

use std::cmp::Ordering;

use crate::ports::table::{AttributeValue, CmpOp, Condition, Item, PK, TableError, Update};

/// Evaluates `condition` against the stored item (`None`: no item).
pub fn holds(condition: &Condition, current: Option<&Item>) -> bool {
    match condition {
        Condition::Exists => current.is_some(),
        Condition::NotExists => current.is_none(),
        Condition::AttrExists(a) => current.is_some_and(|i| i.contains_key(a)),
        Condition::AttrNotExists(a) => !current.is_some_and(|i| i.contains_key(a)),
        Condition::Cmp(attr, op, value) => match current.and_then(|i| i.get(attr)) {
            // DynamoDB: `a <> :v` holds when `a` is absent; every other comparison fails.
            None => *op == CmpOp::Ne,
            Some(stored) => match op {
                CmpOp::Eq => equal(stored, value),
                CmpOp::Ne => !equal(stored, value),
                CmpOp::Lt => compare(stored, value) == Some(Ordering::Less),
                CmpOp::Le => matches!(
                    compare(stored, value),
                    Some(Ordering::Less | Ordering::Equal)
                ),
                CmpOp::Gt => compare(stored, value) == Some(Ordering::Greater),
                CmpOp::Ge => {
                    matches!(
                        compare(stored, value),
                        Some(Ordering::Greater | Ordering::Equal)
                    )
                }
            },
        },
        Condition::And(all) => all.iter().all(|c| holds(c, current)),
        Condition::Or(any) => any.iter().any(|c| holds(c, current)),
        Condition::Not(c) => !holds(c, current),
    }
}

fn equal(a: &AttributeValue, b: &AttributeValue) -> bool {
    match (a, b) {
        (AttributeValue::N(x), AttributeValue::N(y)) => {
            compare_numbers(x, y) == Some(Ordering::Equal)
        }
        // Sets are unordered.
        (AttributeValue::Ss(x), AttributeValue::Ss(y))
        | (AttributeValue::Ns(x), AttributeValue::Ns(y)) => sorted(x) == sorted(y),
        (AttributeValue::Bs(x), AttributeValue::Bs(y)) => sorted(x) == sorted(y),
        _ => a == b,
    }
}

fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v.dedup();
    v
}

/// DynamoDB ordering: numbers numerically, strings and binaries bytewise.
/// Other types, and values of different types, do not order.
fn compare(a: &AttributeValue, b: &AttributeValue) -> Option<Ordering> {
    match (a, b) {
        (AttributeValue::N(x), AttributeValue::N(y)) => compare_numbers(x, y),
        (AttributeValue::S(x), AttributeValue::S(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (AttributeValue::B(x), AttributeValue::B(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn compare_numbers(x: &str, y: &str) -> Option<Ordering> {
    if let (Ok(a), Ok(b)) = (x.parse::<i128>(), y.parse::<i128>()) {
        return Some(a.cmp(&b));
    }
    let (a, b) = (x.parse::<f64>().ok()?, y.parse::<f64>().ok()?);
    a.partial_cmp(&b)
}

/// Applies an update to the stored item (or to a new item with `key_item`'s
/// key when there is none) and returns the result.
pub fn apply(update: &Update, current: Option<Item>, key_item: Item) -> Result<Item, TableError> {
    let mut item = current.unwrap_or(key_item);
    for (attr, value) in &update.set {
        item.insert(attr.clone(), value.clone());
    }
    for (attr, delta) in &update.add {
        let base = match item.get(attr) {
            None => 0i128,
            Some(AttributeValue::N(n)) => n.parse::<i128>().map_err(|_| {
                TableError::Invalid(format!("cannot ADD to the non-integer number in `{attr}`"))
            })?,
            Some(_) => {
                return Err(TableError::Invalid(format!(
                    "cannot ADD a number to `{attr}`, which is not a number"
                )));
            }
        };
        let sum = base + i128::from(*delta);
        item.insert(attr.clone(), AttributeValue::N(sum.to_string()));
    }
    for attr in &update.remove {
        item.remove(attr);
    }
    debug_assert!(item.contains_key(PK));
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::table::{Key, num, s};

    fn item() -> Item {
        let mut i = Key::new("a", "b").to_item();
        i.insert("n".into(), num(10));
        i.insert("name".into(), s("bob"));
        i
    }

    #[test]
    fn comparisons_follow_dynamodb_types() {
        let i = item();
        assert!(holds(&Condition::cmp("n", CmpOp::Gt, num(9)), Some(&i)));
        assert!(holds(&Condition::cmp("n", CmpOp::Lt, num(100)), Some(&i)));
        assert!(!holds(&Condition::cmp("n", CmpOp::Lt, num(10)), Some(&i)));
        assert!(holds(
            &Condition::cmp("n", CmpOp::Le, num("10.0")),
            Some(&i)
        ));
        // A string never equals a number, and does not order against it.
        assert!(!holds(&Condition::eq("n", s("10")), Some(&i)));
        assert!(!holds(&Condition::cmp("n", CmpOp::Lt, s("99")), Some(&i)));
        assert!(holds(&Condition::cmp("n", CmpOp::Ne, s("10")), Some(&i)));
        assert!(!holds(&Condition::eq("missing", s("x")), Some(&i)));
        assert!(holds(
            &Condition::cmp("missing", CmpOp::Ne, s("x")),
            Some(&i)
        ));
        assert!(holds(&Condition::cmp("missing", CmpOp::Ne, s("x")), None));
        assert!(!holds(
            &Condition::cmp("missing", CmpOp::Lt, s("x")),
            Some(&i)
        ));
        assert!(holds(&Condition::AttrNotExists("missing".into()), Some(&i)));
        assert!(holds(&Condition::NotExists, None));
        assert!(!holds(&Condition::Exists, None));
        assert!(holds(&Condition::absent_or_expired(100), None));
    }

    #[test]
    fn add_creates_and_accumulates() {
        let key = Key::new("a", "b").to_item();
        let once = apply(&Update::new().add("c", 2), None, key.clone()).unwrap();
        assert_eq!(once.get("c"), Some(&num(2)));
        let twice = apply(&Update::new().add("c", -5), Some(once), key.clone()).unwrap();
        assert_eq!(twice.get("c"), Some(&num(-3)));
        let bad = apply(&Update::new().add("name", 1), Some(item()), key);
        assert!(matches!(bad, Err(TableError::Invalid(_))));
    }
}
