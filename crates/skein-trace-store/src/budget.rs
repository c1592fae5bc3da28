//! How many items (spans, attributes, events, links, annotations) one request may carry.
//! A 20 MiB body of empty spans is millions of them, and every decoded item costs far more
//! memory than its few bytes on the wire: the decoders stop when the budget runs out, so a
//! request's memory stays bounded by the budget, not by what the peer sent.
//!
//! serde decodes on one thread without yielding, so the budget of the decode in progress
//! lives in a thread-local, set by [`with_budget`] around the decode.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};

thread_local! {
    static LEFT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The message the decoders fail with when the budget runs out (a 413, not a 400).
pub const EXHAUSTED: &str = "too many items (spans, tags, events) in one request";

/// Runs `f` with `items` to spend; the budget is restored afterwards.
pub fn with_budget<R>(items: usize, f: impl FnOnce() -> R) -> R {
    let before = LEFT.with(|l| l.replace(items));
    let out = f();
    LEFT.with(|l| l.set(before));
    out
}

/// Takes one item; false when none is left.
pub fn take() -> bool {
    LEFT.with(|l| match l.get() {
        0 => false,
        n => {
            l.set(n - 1);
            true
        }
    })
}

/// A JSON array whose every element is paid from the budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Bounded<T>(pub Vec<T>);

impl<T> Default for Bounded<T> {
    fn default() -> Self {
        Bounded(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Bounded<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Bounded<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                loop {
                    if !take() {
                        return Err(serde::de::Error::custom(EXHAUSTED));
                    }
                    match seq.next_element()? {
                        Some(v) => out.push(v),
                        None => return Ok(Bounded(out)),
                    }
                }
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(Bounded(Vec::new()))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A JSON object (string keys) whose every entry is paid from the budget, in its order.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundedMap<V>(pub Vec<(String, V)>);

impl<V> Default for BoundedMap<V> {
    fn default() -> Self {
        BoundedMap(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for BoundedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
            type Value = BoundedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                loop {
                    if !take() {
                        return Err(serde::de::Error::custom(EXHAUSTED));
                    }
                    match map.next_entry::<String, V>()? {
                        Some(kv) => out.push(kv),
                        None => return Ok(BoundedMap(out)),
                    }
                }
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(BoundedMap(Vec::new()))
            }
        }
        d.deserialize_any(Vis(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_stop_when_the_budget_runs_out() {
        let ok: Bounded<u8> = with_budget(10, || serde_json::from_str("[1,2,3]")).unwrap();
        assert_eq!(ok.0, vec![1, 2, 3]);
        let err = with_budget(2, || serde_json::from_str::<Bounded<u8>>("[1,2,3]")).unwrap_err();
        assert!(err.to_string().contains(EXHAUSTED), "{err}");
        // Nested arrays share one budget.
        let err = with_budget(5, || {
            serde_json::from_str::<Bounded<Bounded<u8>>>("[[1,2],[3,4]]")
        })
        .unwrap_err();
        assert!(err.to_string().contains(EXHAUSTED), "{err}");
        // Outside a decode the budget is unlimited again.
        assert!(take());
    }
}
