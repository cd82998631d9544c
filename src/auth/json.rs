//! Strict JSON for JOSE headers, claim sets and JWK sets. `serde_json::Value`
//! keeps the last of two same-named members, letting a token say `"none"` to
//! one parser and `"RS256"` to another (RFC 7515 §4, RFC 7519 §4 require
//! refusing duplicates). This `DeserializeSeed` refuses them, too deep nesting
//! and too many members (jwt.md items 9, 11; the depth bound also keeps the
//! recursion shallow); serde_json refuses bad UTF-8, lone surrogates and
//! trailing bytes (item 8).

use std::cell::Cell;
use std::fmt;

use serde_core::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::error::Malformed;

/// Maximum nesting, the outermost object being depth 1 (jwt.md item 9:
/// "deeper than 16 → reject"); real documents nest three or four levels.
pub const MAX_JSON_DEPTH: usize = 16;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub depth: usize,
    /// Most members in any one object of the document.
    pub members: usize,
}

pub(crate) fn parse_object(bytes: &[u8], limits: Limits) -> Result<Map<String, Value>, Malformed> {
    let failure = Cell::new(None);
    let seed = ValueSeed { depth: 1, limits, failure: &failure };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Malformed::NotAnObject),
        Err(_) => Err(failure.get().unwrap_or(Malformed::Json)),
    }
}

/// One value at level `depth`; `failure` keeps a limit violation's kind
/// (serde errors are strings).
struct ValueSeed<'f> {
    depth: usize,
    limits: Limits,
    failure: &'f Cell<Option<Malformed>>,
}

impl ValueSeed<'_> {
    fn fail<E: de::Error>(&self, why: Malformed) -> E {
        self.failure.set(Some(why));
        E::custom(why.detail())
    }

    fn child(&self) -> ValueSeed<'_> {
        ValueSeed { depth: self.depth + 1, limits: self.limits, failure: self.failure }
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // serde_json never yields a non-finite float; refuse one anyway.
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.depth > self.limits.depth {
            return Err(self.fail(Malformed::TooDeep));
        }
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.child())? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        if self.depth > self.limits.depth {
            return Err(self.fail(Malformed::TooDeep));
        }
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.len() >= self.limits.members {
                return Err(self.fail(Malformed::TooManyMembers));
            }
            if members.contains_key(&name) {
                return Err(self.fail(Malformed::DuplicateMember));
            }
            let value = map.next_value_seed(self.child())?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { depth: MAX_JSON_DEPTH, members: 8 };

    fn parse(s: &str) -> Result<Map<String, Value>, Malformed> {
        parse_object(s.as_bytes(), LIMITS)
    }

    #[test]
    fn parses_plain_object() {
        let m = parse(r#"{"a":1,"b":[true,null,"x",-2,1.5],"c":{"d":"e"}}"#).unwrap();
        assert_eq!(m["a"], Value::from(1));
        assert_eq!(m["b"][4], Value::from(1.5));
        assert_eq!(m["c"]["d"], Value::from("e"));
    }

    #[test]
    fn whitespace_is_fine() {
        assert!(parse(" {\n\t\"a\" : 1 \r\n} ").is_ok());
    }

    #[test]
    fn rejects_duplicate_members_at_any_level() {
        assert_eq!(parse(r#"{"a":1,"a":2}"#), Err(Malformed::DuplicateMember));
        assert_eq!(parse(r#"{"a":1,"a":1}"#), Err(Malformed::DuplicateMember));
        assert_eq!(parse(r#"{"x":{"a":1,"a":2}}"#), Err(Malformed::DuplicateMember));
        // An escape that spells the same name is still the same name.
        assert_eq!(parse(r#"{"alg":1,"\u0061lg":2}"#), Err(Malformed::DuplicateMember));
        // Different names (case differs) are fine.
        assert!(parse(r#"{"a":1,"A":2}"#).is_ok());
    }

    #[test]
    fn bounds_nesting_depth() {
        // depth 16 = the object plus 15 nested arrays: accepted.
        let ok = format!("{{\"a\":{}1{}}}", "[".repeat(15), "]".repeat(15));
        assert!(parse(&ok).is_ok());
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(16), "]".repeat(16));
        assert_eq!(parse(&deep), Err(Malformed::TooDeep));
        // Far deeper than serde_json's own limit (128): still our error.
        let very = format!("{{\"a\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(parse(&very), Err(Malformed::TooDeep));
        let objs = format!("{}1{}", "{\"a\":".repeat(17), "}".repeat(17));
        assert_eq!(parse(&objs), Err(Malformed::TooDeep));
    }

    #[test]
    fn bounds_member_count() {
        let eight: Vec<String> = (0..8).map(|i| format!("\"k{i}\":0")).collect();
        assert!(parse(&format!("{{{}}}", eight.join(","))).is_ok());
        let nine: Vec<String> = (0..9).map(|i| format!("\"k{i}\":0")).collect();
        assert_eq!(parse(&format!("{{{}}}", nine.join(","))), Err(Malformed::TooManyMembers));
    }

    #[test]
    fn must_be_an_object() {
        for s in ["[]", "\"x\"", "1", "null", "true"] {
            assert_eq!(parse(s), Err(Malformed::NotAnObject), "{s}");
        }
    }

    #[test]
    fn rejects_bad_text() {
        for s in [
            "",
            "{",
            "{}x",
            "{}{}",
            "{'a':1}",
            "{\"a\":1,}",
            "{\"a\":NaN}",
            "{\"a\":1e999}",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":\"\\udc00\"}",
            "{\"\\ud800\":1}",
            "\u{feff}{}",
        ] {
            assert_eq!(parse(s), Err(Malformed::Json), "{s:?}");
        }
        assert_eq!(parse_object(b"{\"a\":\"\xff\"}", LIMITS), Err(Malformed::Json));
        assert_eq!(parse_object(b"{\"a\":\"\xed\xa0\x80\"}", LIMITS), Err(Malformed::Json));
        // A proper surrogate pair is fine.
        assert!(parse("{\"a\":\"\\ud83d\\ude00\"}").is_ok());
    }
}
