//! [`ServiceName`]: a service's name as a session reference carries it, shared rather than
//! copied.
//!
//! The control state keys a million sessions by [`SessionRef`](crate::SessionRef); with the
//! name as a `String` each key owned a heap copy of `"kv"`. Names are interned: every
//! reference to a service shares one allocation, and a reference is one thin pointer (to the
//! shared `Box<str>`), not a pointer and a length: a session key is 16 bytes, not 24, in every
//! entry of the control state's session map and every copy a path copy makes. The
//! interner is bounded ([`INTERNED`] names, far above the services a daemon serves), so names
//! from hostile requests cannot grow it without limit; past the bound a name is simply
//! allocated on its own.
//!
//! An interned name lives as long as the process (the interner never lets one go), so a
//! reference to it is a plain pointer, copied without a count: as an `Arc` every clone and
//! drop of a key was an atomic on the one counter of its service, and applying a tick copies
//! the paths of the state's session map it changes (hundreds of thousands of keys, then as
//! many dropped with the state before it), on every node's state machine at once, all of
//! them contending for that counter's cache line. A name past the bound is its own box, copied
//! when cloned; the pointer's low bit tells the two apart.

use std::{
    borrow::Borrow,
    collections::HashSet,
    fmt,
    hash::{Hash, Hasher},
    ops::Deref,
    ptr::NonNull,
    sync::{Mutex, OnceLock},
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Names the interner keeps at most.
pub const INTERNED: usize = 4096;

/// A service name: reads as a `str`, serializes as a string, clones without allocating (an
/// interned one, as every name is while the interner has room). One pointer wide (see the
/// module header); compares, orders and hashes as its text.
pub struct ServiceName(NonNull<Box<str>>);

/// The low bit of a [`ServiceName`]'s pointer: set for a name boxed on its own (past the
/// interner's bound), clear for an interned one. A `Box<str>` is pointer-aligned, so the bit
/// is free.
const APART: usize = 1;

// SAFETY: a `ServiceName` only reads the `str` it points to, which nothing mutates; a name
// apart is owned by this one reference alone (cloning copies it), an interned one lives for
// the rest of the process.
unsafe impl Send for ServiceName {}
// SAFETY: as above: shared references only read an immutable `str`.
unsafe impl Sync for ServiceName {}

impl ServiceName {
    /// The name, shared with every other reference to it while the interner has room.
    pub fn new(name: &str) -> Self {
        interner().intern(name)
    }

    /// A reference to the interned `name`.
    #[allow(clippy::borrowed_box)] // the thin pointer a `ServiceName` is.
    fn interned(name: &'static Box<str>) -> Self {
        ServiceName(NonNull::from(name))
    }

    /// `name` boxed on its own, for this reference alone.
    fn apart(name: &str) -> Self {
        let boxed = NonNull::from(Box::leak(Box::new(Box::<str>::from(name))));
        ServiceName(boxed.map_addr(|a| a | APART))
    }

    fn is_apart(&self) -> bool {
        self.0.addr().get() & APART != 0
    }

    /// The `Box<str>` pointed to, without the tag.
    fn boxed(&self) -> NonNull<Box<str>> {
        // SAFETY (of `new_unchecked`): clearing the low bit of an aligned, non-null address
        // leaves it non-null.
        self.0
            .map_addr(|a| unsafe { std::num::NonZeroUsize::new_unchecked(a.get() & !APART) })
    }

    /// The name as a `str`.
    pub fn as_str(&self) -> &str {
        // SAFETY: the pointer (tag cleared) is to a live `Box<str>`: interned ones are never
        // freed, and one apart is freed only when this reference drops.
        unsafe { self.boxed().as_ref() }
    }

    /// Whether both point to the same allocation (the same interned name).
    fn same(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Clone for ServiceName {
    fn clone(&self) -> Self {
        match self.is_apart() {
            true => ServiceName::apart(self.as_str()),
            false => ServiceName(self.0),
        }
    }
}

impl Drop for ServiceName {
    fn drop(&mut self) {
        if self.is_apart() {
            // SAFETY: a name apart was leaked from a `Box` by `apart` for this reference
            // alone, and is freed only here.
            drop(unsafe { Box::from_raw(self.boxed().as_ptr()) });
        }
    }
}

impl PartialEq for ServiceName {
    fn eq(&self, other: &Self) -> bool {
        self.same(other) || self.as_str() == other.as_str()
    }
}

impl Eq for ServiceName {}

impl Hash for ServiceName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

// Two references to one interned name order as equal without reading the text: the control
// state's million-session map compares the names of nearly every pair of keys it orders, and
// a `memcmp` call per comparison was a third of a lookup's time.
impl Ord for ServiceName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self.same(other) {
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

/// An interned name, found in the interner by its text. A `&Box<str>`, not a `&str`: what a
/// [`ServiceName`] points to, one word where a `&str` takes two.
#[derive(PartialEq, Eq, Hash)]
#[allow(clippy::borrowed_box)]
struct Interned(&'static Box<str>);

impl Borrow<str> for Interned {
    fn borrow(&self) -> &str {
        self.0
    }
}

/// Shared names, at most `cap` of them, kept for the life of the process.
struct Interner {
    names: Mutex<HashSet<Interned>>,
    cap: usize,
}

impl Interner {
    fn intern(&self, name: &str) -> ServiceName {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = names.get(name) {
            return ServiceName::interned(shared.0);
        }
        if names.len() >= self.cap {
            return ServiceName::apart(name);
        }
        let shared = Box::leak(Box::new(Box::<str>::from(name)));
        names.insert(Interned(shared));
        ServiceName::interned(shared)
    }
}

fn interner() -> &'static Interner {
    static NAMES: OnceLock<Interner> = OnceLock::new();
    NAMES.get_or_init(|| Interner {
        names: Mutex::default(),
        cap: INTERNED,
    })
}

impl Default for ServiceName {
    fn default() -> Self {
        ServiceName::new("")
    }
}

impl Deref for ServiceName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ServiceName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for ServiceName {
    fn borrow(&self) -> &str {
        self.as_str()
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
        name.as_str().to_owned()
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
        assert!(a.same(&b) && !a.is_apart());
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
        let apart = ServiceName::apart("kv-order");
        let shared = ServiceName::from("kv-order");
        assert!(!apart.same(&shared) && apart.is_apart());
        // A clone of one apart is apart too, and each frees its own copy.
        let copy = apart.clone();
        assert!(copy.is_apart() && !copy.same(&apart));
        assert_eq!(copy, apart);
        drop(copy);
        assert_eq!(apart.as_str(), "kv-order");
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
        assert!(small.intern("bounded-0").same(&small.intern("bounded-0")));
        let past = small.intern("bounded-past-the-end");
        assert!(past.is_apart());
        assert_eq!(&*past, "bounded-past-the-end");
    }
}
