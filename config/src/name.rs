//! [`ServiceName`]: a service's name as a session reference carries it, shared rather than
//! copied.
//!
//! The control state keys a million sessions by [`SessionRef`](crate::SessionRef); with the
//! name as a `String` each key owned a heap copy of `"kv"`. Names are interned: every
//! reference to a service shares one allocation, and a reference is one thin pointer (to the
//! shared `Box<str>`), not a pointer and a length: a session key is 16 bytes, so a node of the
//! control state's session map holds a third more sessions than with a 24-byte key. The interner is bounded ([`INTERNED`] names, far above the services a
//! daemon serves), so names from hostile requests cannot grow it without limit; past the
//! bound a name is simply allocated on its own.

use std::{
    borrow::Borrow,
    collections::HashSet,
    fmt,
    ops::Deref,
    sync::{Arc, Mutex, OnceLock},
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Names the interner keeps at most.
pub const INTERNED: usize = 4096;

/// A service name: reads as a `str`, serializes as a string, clones without allocating. One
/// pointer wide (see the module header); compares, orders and hashes as its text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ServiceName(Arc<Box<str>>);

// Two references to one interned name order as equal without reading the text (`==` on an
// `Arc` of an `Eq` type already compares the pointers first; a derived `cmp` does not): the
// control state's million-session map compares the names of nearly every pair of keys it
// orders, and a `memcmp` call per comparison was a third of a lookup's time.
impl Ord for ServiceName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for ServiceName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// An interned name, found in the interner by its text.
#[derive(PartialEq, Eq, Hash)]
struct Interned(Arc<Box<str>>);

impl Borrow<str> for Interned {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Shared names, at most `cap` of them.
struct Interner {
    names: Mutex<HashSet<Interned>>,
    cap: usize,
}

impl Interner {
    fn intern(&self, name: &str) -> Arc<Box<str>> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = names.get(name) {
            return shared.0.clone();
        }
        let name: Arc<Box<str>> = Arc::new(Box::from(name));
        if names.len() < self.cap {
            names.insert(Interned(name.clone()));
        }
        name
    }
}

fn interner() -> &'static Interner {
    static NAMES: OnceLock<Interner> = OnceLock::new();
    NAMES.get_or_init(|| Interner {
        names: Mutex::default(),
        cap: INTERNED,
    })
}

impl ServiceName {
    /// The name, shared with every other reference to it while the interner has room.
    pub fn new(name: &str) -> Self {
        ServiceName(interner().intern(name))
    }

    /// The name as a `str`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ServiceName {
    fn default() -> Self {
        ServiceName::new("")
    }
}

impl Deref for ServiceName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ServiceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ServiceName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ServiceName {
    fn from(name: &str) -> Self {
        ServiceName::new(name)
    }
}

impl From<String> for ServiceName {
    fn from(name: String) -> Self {
        ServiceName::new(&name)
    }
}

impl From<&String> for ServiceName {
    fn from(name: &String) -> Self {
        ServiceName::new(name)
    }
}

impl From<ServiceName> for String {
    fn from(name: ServiceName) -> Self {
        name.0.to_string()
    }
}

impl PartialEq<str> for ServiceName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ServiceName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for ServiceName {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<ServiceName> for str {
    fn eq(&self, other: &ServiceName) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<ServiceName> for &str {
    fn eq(&self, other: &ServiceName) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<ServiceName> for String {
    fn eq(&self, other: &ServiceName) -> bool {
        *self == other.as_str()
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for ServiceName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

impl<'de> Deserialize<'de> for ServiceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = ServiceName;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a service name")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ServiceName, E> {
                Ok(ServiceName::new(v))
            }
        }
        d.deserialize_str(Name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_name_shares_one_allocation_and_reads_as_a_str() {
        let a = ServiceName::from("kv-interned");
        let b = ServiceName::from(String::from("kv-interned"));
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, "kv-interned");
        assert_eq!("kv-interned", a);
        assert_eq!(a.len(), 11);
        assert_eq!(a.to_string(), "kv-interned");
        assert_eq!(format!("{a:?}"), "\"kv-interned\"");
        assert_eq!(std::mem::size_of::<ServiceName>(), 8);
    }

    #[test]
    fn names_not_shared_compare_and_order_by_their_text() {
        // One allocated apart (as past the interner's bound) and one shared.
        let apart = ServiceName(Arc::new(Box::from("kv-order")));
        let shared = ServiceName::from("kv-order");
        assert!(!Arc::ptr_eq(&apart.0, &shared.0));
        assert_eq!(apart, shared);
        assert_eq!(apart.cmp(&shared), std::cmp::Ordering::Equal);
        let later = ServiceName::from("kv-order-later");
        assert!(apart < later && shared < later);
        assert_eq!(later.cmp(&later.clone()), std::cmp::Ordering::Equal);
    }

    #[test]
    fn it_serializes_as_a_string() {
        let a = ServiceName::from("web");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"web\"");
        assert_eq!(serde_json::from_str::<ServiceName>(&json).unwrap(), a);
        assert!(serde_json::from_str::<ServiceName>("7").is_err());
    }

    #[test]
    fn the_interner_stays_bounded() {
        let small = Interner {
            names: Mutex::default(),
            cap: 4,
        };
        for i in 0..10 {
            let _ = small.intern(&format!("bounded-{i}"));
        }
        assert_eq!(small.names.lock().unwrap().len(), 4);
        assert!(Arc::ptr_eq(
            &small.intern("bounded-0"),
            &small.intern("bounded-0")
        ));
        assert_eq!(
            &**small.intern("bounded-past-the-end"),
            "bounded-past-the-end"
        );
    }
}
