//! Persistent maps for the control state: a clone shares every node with the original, a
//! change copies only the path to it. The state machine publishes a new state per applied
//! entry without copying the million sessions, and a snapshot serializes a state that apply
//! has already moved past.
//!
//! [`pairs`] keeps the serialized shape of a `BTreeMap` written as a list of `[key, value]`
//! pairs (keys that are not strings, such as [`SessionRef`](super::SessionRef)), so stored
//! snapshots and the JSON API read as before.

/// The map type of the control state.
pub type Map<K, V> = imbl::OrdMap<K, V>;

/// Keeps the entries of `map` for which `keep` holds (what `BTreeMap::retain` does).
pub fn retain<K: Ord + Clone, V: Clone>(map: &mut Map<K, V>, mut keep: impl FnMut(&K, &V) -> bool) {
    let gone: Vec<K> = map
        .iter()
        .filter(|(k, v)| !keep(k, v))
        .map(|(k, _)| k.clone())
        .collect();
    for k in gone {
        map.remove(&k);
    }
}

/// Serializes a [`Map`] as a sequence of `(key, value)` pairs.
pub mod pairs {
    use std::fmt;

    use serde::{
        de::{SeqAccess, Visitor},
        ser::SerializeSeq,
        Deserialize, Deserializer, Serialize, Serializer,
    };

    use super::Map;

    /// Writes the pairs in key order.
    pub fn serialize<K, V, S>(map: &Map<K, V>, s: S) -> Result<S::Ok, S::Error>
    where
        K: Serialize + Ord + Clone,
        V: Serialize + Clone,
        S: Serializer,
    {
        let mut seq = s.serialize_seq(Some(map.len()))?;
        for pair in map.iter() {
            seq.serialize_element(&pair)?;
        }
        seq.end()
    }

    /// Reads pairs (a later duplicate key wins, as with `BTreeMap`).
    pub fn deserialize<'de, K, V, D>(d: D) -> Result<Map<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord + Clone,
        V: Deserialize<'de> + Clone,
        D: Deserializer<'de>,
    {
        struct Pairs<K, V>(std::marker::PhantomData<(K, V)>);
        impl<'de, K, V> Visitor<'de> for Pairs<K, V>
        where
            K: Deserialize<'de> + Ord + Clone,
            V: Deserialize<'de> + Clone,
        {
            type Value = Map<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of [key, value] pairs")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut map = Map::new();
                while let Some((k, v)) = seq.next_element::<(K, V)>()? {
                    map.insert(k, v);
                }
                Ok(map)
            }
        }
        d.deserialize_seq(Pairs(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};
    use serde_with::serde_as;

    use super::*;

    #[serde_as]
    #[derive(Serialize, Deserialize)]
    struct Before {
        #[serde_as(as = "Vec<(_, _)>")]
        m: BTreeMap<(u32, String), u64>,
        plain: BTreeMap<u32, u64>,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct After {
        #[serde(with = "pairs")]
        m: Map<(u32, String), u64>,
        plain: Map<u32, u64>,
    }

    #[test]
    fn the_serialized_shape_is_the_btreemaps() {
        let before = Before {
            m: BTreeMap::from([((2, "b".into()), 7), ((1, "a".into()), 9)]),
            plain: BTreeMap::from([(3, 4), (1, 2)]),
        };
        let text = serde_json::to_string(&before).unwrap();
        let after: After = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&after).unwrap(), text);
        assert_eq!(after.m[&(1, "a".to_string())], 9);
    }

    #[test]
    fn retain_keeps_what_it_should_and_a_clone_is_untouched() {
        let mut m: Map<u32, u32> = (0..100u32).map(|i| (i, i)).collect();
        let copy = m.clone();
        retain(&mut m, |k, _| k.is_multiple_of(2));
        assert_eq!(m.len(), 50);
        assert!(m.keys().all(|k| k.is_multiple_of(2)));
        assert_eq!(copy.len(), 100);
    }
}
