//! What a node knows of itself and of its peers: the values that the `identity` file holds
//! ([`super::file`]) and that the checks compare. Plain data: no I/O, only a random draw for a
//! new data directory.

use std::collections::BTreeMap;
use std::fmt;

use crate::NodeId;

/// A cluster's identity, drawn once by its founder.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterId(pub u128);

/// One life of a node's data directory.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Incarnation(pub u64);

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl ClusterId {
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 32)
            .then(|| u128::from_str_radix(text, 16).ok().map(Self))
            .flatten()
    }

    /// A new random cluster id (madsim's seeded generator in the simulation).
    pub fn random() -> Self {
        Self((u128::from(random_u64()) << 64) | u128::from(random_u64()))
    }
}

impl Incarnation {
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 16)
            .then(|| u64::from_str_radix(text, 16).ok().map(Self))
            .flatten()
    }

    /// A new random incarnation (madsim's seeded generator in the simulation).
    pub fn random() -> Self {
        Self(random_u64())
    }
}

#[cfg(not(madsim))]
fn random_u64() -> u64 {
    rand::random()
}

#[cfg(madsim)]
fn random_u64() -> u64 {
    madsim::rand::RngCore::next_u64(&mut madsim::rand::thread_rng())
}

/// What one node knows of itself and of its peers (the content of the `identity` file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityState {
    pub cluster: Option<ClusterId>,
    pub incarnation: Incarnation,
    /// The incarnation first seen for each member.
    pub peers: BTreeMap<NodeId, Incarnation>,
}

impl IdentityState {
    /// A new data directory's identity: a fresh incarnation, no cluster yet, no peers.
    pub fn fresh() -> Self {
        Self {
            cluster: None,
            incarnation: Incarnation::random(),
            peers: BTreeMap::new(),
        }
    }
}
