//! A batch's lines as the log carries them: encoded once, by the node that took the request.
//!
//! Why: a log entry is handled whole many times before it is applied. The leader encodes it
//! into its WAL and into an AppendEntries request per follower, measures it to fit a request,
//! keeps it decoded among the newest entries and clones it out for each reader; every follower
//! decodes the request and encodes the entry again into its WAL; a follower that fell behind is
//! fed from the leader's WAL, every entry decoded again. With the lines as thousands of values
//! (two strings each), each of these walked every line: `perf` on a leader taking batches of
//! 8,000 lines put ~36% of its CPU in decoding entries read back from the WAL and ~10% more in
//! encoding, measuring and dropping them (docs/performance.md, "Where a batch's time went").
//! [`Packed`] is a list's encoding (bincode, the items in order, as a `Vec`) behind an `Arc`:
//! encoding, decoding and cloning an entry copies or shares one byte string, and each state
//! machine decodes the lines once, when it applies them
//! ([`Command::PackedBatch`](super::Command::PackedBatch), whose lines are a
//! [`PackedLines`](super::PackedLines), becomes a [`Command::Batch`](super::Command::Batch)
//! there).
//!
//! Packed items are never trusted: bytes that do not decode into exactly `count` items, with
//! nothing left over, are refused ([`Packed::unpack`]; apply answers `Invalid`, on every
//! replica alike).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{self, DeserializeOwned, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most bytes packed items may take: 10,000 batch lines of the longest ids (two of 128 bytes)
/// and the largest numbers take ~2.8 MB; a decode never claims more.
pub const PACKED_BYTES_MAX: usize = 4 << 20;

/// The encoding of a list of `T` (see the module docs). Cheap to clone.
pub struct Packed<T> {
    /// How many items the bytes say there are (checked when unpacked).
    count: u32,
    bytes: Arc<[u8]>,
    items: PhantomData<fn() -> T>,
}

/// Why packed items cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the batch's lines do not decode: {0}")]
pub struct UnpackError(String);

impl<T> Packed<T> {
    /// How many items there are (as packed: [`Self::unpack`] checks it).
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded items: the encoding of a `Vec<T>` holding them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl<T: Serialize> Packed<T> {
    /// The items, encoded.
    pub fn pack(items: &[T]) -> Self {
        let bytes = bincode::serde::encode_to_vec(items, bincode::config::standard())
            .expect("encoding into memory cannot fail");
        Self {
            count: u32::try_from(items.len()).unwrap_or(u32::MAX),
            bytes: bytes.into(),
            items: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Packed<T> {
    /// The items; refused unless the bytes are exactly `count` items (at most `items_max`, in
    /// at most [`PACKED_BYTES_MAX`] bytes) with nothing after them.
    pub fn unpack(&self, items_max: usize) -> Result<Vec<T>, UnpackError> {
        if self.bytes.len() > PACKED_BYTES_MAX || self.len() > items_max {
            return Err(UnpackError(format!(
                "{} lines in {} bytes, past the limits ({items_max} lines, \
                 {PACKED_BYTES_MAX} bytes)",
                self.count,
                self.bytes.len()
            )));
        }
        let config = bincode::config::standard().with_limit::<PACKED_BYTES_MAX>();
        let (items, read): (Vec<T>, usize) = bincode::serde::decode_from_slice(&self.bytes, config)
            .map_err(|error| UnpackError(error.to_string()))?;
        if read != self.bytes.len() {
            return Err(UnpackError(format!(
                "{} bytes after the lines",
                self.bytes.len() - read
            )));
        }
        if items.len() != self.len() {
            return Err(UnpackError(format!(
                "{} lines where {} were packed",
                items.len(),
                self.count
            )));
        }
        Ok(items)
    }
}

impl<T> Clone for Packed<T> {
    fn clone(&self) -> Self {
        Self {
            count: self.count,
            bytes: self.bytes.clone(),
            items: PhantomData,
        }
    }
}

impl<T> PartialEq for Packed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.bytes == other.bytes
    }
}

impl<T> Eq for Packed<T> {}

impl<T> fmt::Debug for Packed<T> {
    /// The size, not the items: an entry's debug output stays short.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Packed({} items, {} bytes)",
            self.count,
            self.bytes.len()
        )
    }
}

/// On the wire and on disk: the count, then the bytes (a length, then each byte as itself in
/// bincode), so that decoding an entry copies the bytes and nothing more.
impl<T> Serialize for Packed<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(2)?;
        tuple.serialize_element(&self.count)?;
        tuple.serialize_element(&Bytes(&self.bytes))?;
        tuple.end()
    }
}

struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl<'de, T> Deserialize<'de> for Packed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_tuple(2, PackedVisitor(PhantomData))
    }
}

struct PackedVisitor<T>(PhantomData<fn() -> T>);

impl<'de, T> Visitor<'de> for PackedVisitor<T> {
    type Value = Packed<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a count of items and their bytes")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Packed<T>, A::Error> {
        let count: u32 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let bytes: ByteBuf = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        Ok(Packed {
            count,
            bytes: bytes.0.into(),
            items: PhantomData,
        })
    }
}

/// Bytes read back whether the format hands them over borrowed, owned or as a sequence.
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_byte_buf(ByteBufVisitor)
    }
}

struct ByteBufVisitor;

impl<'de> Visitor<'de> for ByteBufVisitor {
    type Value = ByteBuf;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<ByteBuf, E> {
        Ok(ByteBuf(bytes.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<ByteBuf, E> {
        Ok(ByteBuf(bytes))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(byte) = seq.next_element()? {
            bytes.push(byte);
        }
        Ok(ByteBuf(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line's shape: a key of two strings, numbers, options.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Line {
        Take {
            store: String,
            sku: String,
            quantity: i64,
            expected: Option<u64>,
        },
        Give(String, u64),
    }

    fn lines(n: usize) -> Vec<Line> {
        (0..n)
            .map(|i| match i % 2 {
                0 => Line::Take {
                    store: "store-1".into(),
                    sku: format!("sku-{i}"),
                    quantity: i as i64,
                    expected: (i % 3 == 0).then_some(i as u64),
                },
                _ => Line::Give(format!("sku-{i}"), u64::MAX - i as u64),
            })
            .collect()
    }

    fn round_trip(packed: &Packed<Line>) -> Packed<Line> {
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(packed, config).unwrap();
        let (back, read): (Packed<Line>, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(read, bytes.len());
        back
    }

    #[test]
    fn packed_items_come_back_as_they_went_in_through_the_log_encoding() {
        for n in [1, 2, 1000] {
            let lines = lines(n);
            let packed = Packed::pack(&lines);
            assert_eq!(packed.len(), n);
            let back = round_trip(&packed);
            assert_eq!(back, packed);
            assert_eq!(back.unpack(n).unwrap(), lines);
        }
    }

    #[test]
    fn the_bytes_are_the_encoding_of_the_items_as_a_list() {
        let lines = lines(5);
        let plain = bincode::serde::encode_to_vec(&lines, bincode::config::standard()).unwrap();
        assert_eq!(Packed::pack(&lines).bytes(), &plain[..]);
    }

    #[test]
    fn bytes_that_are_not_exactly_the_packed_items_are_refused() {
        let packed = Packed::pack(&lines(10));
        let with = |count: u32, bytes: Vec<u8>| Packed::<Line> {
            count,
            bytes: bytes.into(),
            items: PhantomData,
        };
        let bytes = packed.bytes().to_vec();
        // Another count than the bytes hold, or more than allowed.
        assert!(with(9, bytes.clone()).unpack(100).is_err());
        assert!(with(11, bytes.clone()).unpack(100).is_err());
        assert!(with(10, bytes.clone()).unpack(9).is_err());
        // Bytes left over, or cut short.
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(with(10, longer).unpack(100).is_err());
        assert!(with(10, bytes[..bytes.len() - 1].to_vec())
            .unpack(100)
            .is_err());
        // Garbage, and a length claiming far more than there is.
        assert!(with(3, vec![3, 200, 200, 200]).unpack(100).is_err());
        let mut claim = vec![253];
        claim.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(with(3, claim).unpack(100).is_err());
        assert_eq!(with(10, bytes).unpack(10).unwrap(), lines(10));
    }

    #[test]
    fn debug_output_gives_the_size_not_the_items() {
        let text = format!("{:?}", Packed::pack(&lines(3)));
        assert!(text.starts_with("Packed(3 items, "), "{text}");
    }
}
