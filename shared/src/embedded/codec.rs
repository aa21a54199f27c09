//! Items are stored as DynamoDB JSON (`{"S": "..."}`), so a row reads the same
//! way the AWS CLI prints an item.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::ports::table::{AttributeValue, Item, TableError};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub fn encode_item(item: &Item) -> String {
    let map: Map<String, Value> = item
        .iter()
        .map(|(k, v)| (k.clone(), encode_value(v)))
        .collect();
    Value::Object(map).to_string()
}

pub fn decode_item(text: &str) -> Result<Item, TableError> {
    let value: Value = serde_json::from_str(text).map_err(corrupt)?;
    let Value::Object(map) = value else {
        return Err(corrupt("an item is not an object"));
    };
    let mut inner = HashMap::with_capacity(map.len());
    for (k, v) in map {
        inner.insert(k, decode_value(v)?);
    }
    Ok(Item::from(inner))
}

fn corrupt(e: impl std::fmt::Display) -> TableError {
    TableError::Unavailable(format!("stored item is corrupt: {e}"))
}

fn encode_value(v: &AttributeValue) -> Value {
    match v {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(b) => json!({ "NULL": b }),
        AttributeValue::B(b) => json!({ "B": B64.encode(b) }),
        AttributeValue::M(m) => {
            let map: Map<String, Value> = m
                .iter()
                .map(|(k, v)| (k.clone(), encode_value(v)))
                .collect();
            json!({ "M": map })
        }
        AttributeValue::L(l) => json!({ "L": l.iter().map(encode_value).collect::<Vec<_>>() }),
        AttributeValue::Ss(v) => json!({ "SS": v }),
        AttributeValue::Ns(v) => json!({ "NS": v }),
        AttributeValue::Bs(v) => {
            json!({ "BS": v.iter().map(|b| B64.encode(b)).collect::<Vec<_>>() })
        }
    }
}

fn decode_value(v: Value) -> Result<AttributeValue, TableError> {
    let Value::Object(map) = v else {
        return Err(corrupt("an attribute value is not an object"));
    };
    let Some((tag, inner)) = map.into_iter().next() else {
        return Err(corrupt("an attribute value has no type"));
    };
    let string = |v: Value| match v {
        Value::String(s) => Ok(s),
        other => Err(corrupt(format!("expected a string, found {other}"))),
    };
    let strings = |v: Value| match v {
        Value::Array(a) => a.into_iter().map(string).collect::<Result<Vec<_>, _>>(),
        other => Err(corrupt(format!("expected a list, found {other}"))),
    };
    let bytes = |s: String| B64.decode(s).map_err(corrupt);
    Ok(match tag.as_str() {
        "S" => AttributeValue::S(string(inner)?),
        "N" => AttributeValue::N(string(inner)?),
        "BOOL" => AttributeValue::Bool(inner.as_bool().ok_or_else(|| corrupt("BOOL"))?),
        "NULL" => AttributeValue::Null(inner.as_bool().unwrap_or(true)),
        "B" => AttributeValue::B(bytes(string(inner)?)?),
        "M" => {
            let Value::Object(m) = inner else {
                return Err(corrupt("M is not an object"));
            };
            let mut out = HashMap::with_capacity(m.len());
            for (k, v) in m {
                out.insert(k, decode_value(v)?);
            }
            AttributeValue::M(out)
        }
        "L" => {
            let Value::Array(l) = inner else {
                return Err(corrupt("L is not a list"));
            };
            AttributeValue::L(l.into_iter().map(decode_value).collect::<Result<_, _>>()?)
        }
        "SS" => AttributeValue::Ss(strings(inner)?),
        "NS" => AttributeValue::Ns(strings(inner)?),
        "BS" => AttributeValue::Bs(
            strings(inner)?
                .into_iter()
                .map(bytes)
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(corrupt(format!("unknown attribute type {other}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips() {
        let mut m = HashMap::new();
        m.insert("inner".to_string(), AttributeValue::N("1.5".into()));
        let mut item = Item::default();
        item.insert("s".into(), AttributeValue::S("héllo".into()));
        item.insert("n".into(), AttributeValue::N("-42".into()));
        item.insert("b".into(), AttributeValue::B(vec![0, 255, 7]));
        item.insert("t".into(), AttributeValue::Bool(true));
        item.insert("z".into(), AttributeValue::Null(true));
        item.insert("m".into(), AttributeValue::M(m));
        item.insert(
            "l".into(),
            AttributeValue::L(vec![
                AttributeValue::S("x".into()),
                AttributeValue::Bool(false),
            ]),
        );
        item.insert(
            "ss".into(),
            AttributeValue::Ss(vec!["a".into(), "b".into()]),
        );
        item.insert("ns".into(), AttributeValue::Ns(vec!["1".into()]));
        item.insert("bs".into(), AttributeValue::Bs(vec![vec![1], vec![2, 3]]));
        let text = encode_item(&item);
        assert_eq!(decode_item(&text).unwrap(), item);
    }

    #[test]
    fn corrupt_rows_are_errors_not_panics() {
        for bad in [
            "",
            "[]",
            r#"{"a": 1}"#,
            r#"{"a": {"X": 1}}"#,
            r#"{"a": {"B": "%%"}}"#,
        ] {
            assert!(decode_item(bad).is_err(), "{bad}");
        }
    }
}
