//! Decode fuzzing: every decoder of bytes this node did not write itself (Raft RPC bodies, a
//! peer's replies, values read back from disk) answers random bodies and length bombs with an
//! error, never an abort, and never allocates what a length claims.
//!
//! - Property tests (proptest) of each decoder in this process: the Raft RPC requests and
//!   replies through `decode_rpc`, stored values through `storage::decode`, the WAL's records
//!   and snapshot files. A length bomb is a huge bincode 2 varint length (`0xFC` + u32, `0xFD` +
//!   u64) inserted at, or written over, every offset of a valid message. The global allocator
//!   below remembers the largest single allocation of the current thread: on Linux a 4 GiB
//!   `calloc` succeeds lazily, so only this shows a decoder that trusted a claim.
//! - Real processes: thousands of such bodies posted to every Raft route of a follower and of
//!   the leader; and a fake peer answering a real leader's RPCs with garbage, bombs and bodies
//!   far over the transport's limit.
#![cfg(not(madsim))]

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::storage::RaftLogStorage;
use openraft::vote::RaftLeaderIdExt;
use openraft::{EntryPayload, RaftLogReader};
use proptest::collection::vec;
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use serde::de::DeserializeOwned;
use serde::Serialize;
use stockraft::app::forward::{ProposeBatch, ProposeItem, PROPOSE_BATCH_ITEMS_MAX};
use stockraft::client::routes;
use stockraft::client::wire::{CreateRequest, ReserveRequest};
use stockraft::inventory::{
    BatchLine, Command, ErrorPolicy, Event, EventKind, IdempotencyEntry, IdempotencyKey, NewRecord,
    Operation, PackedLines, Record, RecordKey, Request, ReservationId, Response, BATCH_LINES_MAX,
    PACKED_BYTES_MAX,
};
use stockraft::raft::events::FeedPosition;
use stockraft::raft::log_store::LogStore;
use stockraft::raft::network::{decode_rpc, encode_rpc, SnapshotChunk, RPC_DECODE_LIMIT_BYTES};
use stockraft::raft::{Entry, LogId, SnapshotMeta, StoredMembership, TypeConfig, Vote};
use stockraft::storage::fs::{Fs, SimFs};
use stockraft::storage::snapshots::{file_name, SnapshotDir, SnapshotFile};
use stockraft::storage::wal::{Wal, WalOptions, RECORD_BYTES_MAX};
use stockraft::storage::{decode, decode_in, encode, DISK_DECODE_LIMIT_BYTES};
use support::{Cluster, SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// The largest allocation of this thread.

/// The system allocator, noting the size of every allocation in [`LARGEST_ALLOCATION_BYTES`].
struct Watched;

thread_local! {
    static LARGEST_ALLOCATION_BYTES: Cell<usize> = const { Cell::new(0) };
}

fn note(bytes: usize) {
    // `try_with`: a thread being torn down may still allocate.
    let _ = LARGEST_ALLOCATION_BYTES.try_with(|largest| largest.set(largest.get().max(bytes)));
}

// SAFETY: every call is passed on unchanged to the system allocator.
unsafe impl GlobalAlloc for Watched {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Watched = Watched;

/// Runs `f` on this thread; its result and the largest single allocation it made.
fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST_ALLOCATION_BYTES.with(|largest| largest.set(0));
    let result = f();
    (result, LARGEST_ALLOCATION_BYTES.with(Cell::get))
}

/// How long one decode may take: they take microseconds; this only catches a decoder that
/// walks a claimed length.
const DECODE_SECONDS_MAX: u64 = 5;

// ---------------------------------------------------------------------------------------------
// Valid messages, and bombs in them.

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(
        <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(term, 1),
        index,
    )
}

/// A vote of term 0: a node that reads a request carrying it refuses it as stale.
fn stale_vote() -> Vote {
    openraft::Vote::new(0, 1)
}

fn request(store_id: &str, sku: &str, quantity: i64) -> Request {
    Request {
        command: Command::CreateBatch {
            records: vec![NewRecord {
                key: RecordKey::new(store_id, sku).unwrap(),
                initial_quantity: quantity,
            }],
        },
        proposed_at_ms: 1,
        idempotency: Some(IdempotencyKey {
            scope: "token:shop".into(),
            key: "order-42".into(),
            ttl_ms: 1000,
        }),
    }
}

/// The same request carrying a packed batch of two lines (`Command::PackedBatch`): the bytes
/// that the RPC decoder copies whole and each state machine unpacks.
fn packed_request(store_id: &str, sku: &str, quantity: i64) -> Request {
    let key = RecordKey::new(store_id, sku).unwrap();
    let lines = [
        BatchLine::Reserve {
            key: key.clone(),
            quantity,
            expected_version: Some(3),
            ttl_ms: Some(60_000),
        },
        BatchLine::Set {
            key,
            qty: quantity,
            expected_version: None,
        },
    ];
    Request {
        command: Command::packed_batch(&lines, ErrorPolicy::RejectFailedLines),
        ..request(store_id, sku, quantity)
    }
}

/// Unpacks `bytes` as a packed batch's lines, as a state machine does (the count taken from
/// the list's own length, the first byte); whether they unpacked.
fn packed_lines(bytes: &[u8]) -> bool {
    let count = u32::from(bytes.first().copied().unwrap_or(0));
    let config = bincode::config::standard();
    let wire = bincode::serde::encode_to_vec((count, bytes.to_vec()), config).unwrap();
    let packed: PackedLines = bincode::serde::decode_from_slice(&wire, config).unwrap().0;
    packed.unpack(BATCH_LINES_MAX).is_ok()
}

fn entry(term: u64, index: u64, request: Request) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(request),
    }
}

/// An append from a stale term whose entry carries strings: lengths for bombs to replace.
fn append_request(request: Request) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: stale_vote(),
        prev_log_id: None,
        entries: vec![entry(0, 1, request)],
        leader_commit: None,
    }
}

fn vote_request() -> VoteRequest<TypeConfig> {
    VoteRequest::new(stale_vote(), Some(log_id(0, 3)))
}

fn snapshot_meta() -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: Some(log_id(0, 5)),
        last_membership: StoredMembership::default(),
    }
}

/// A first chunk (not the last: nothing is installed) of a stale snapshot transfer.
fn snapshot_chunk() -> SnapshotChunk {
    SnapshotChunk {
        vote: stale_vote(),
        meta: snapshot_meta(),
        transfer: "fuzz-n1-5-0".into(),
        offset: 0,
        data: b"not a snapshot file".to_vec(),
        done: false,
    }
}

fn transfer_request() -> TransferLeaderRequest<TypeConfig> {
    TransferLeaderRequest::new(stale_vote(), 2, Some(log_id(0, 3)))
}

fn record() -> Record {
    Record {
        key: RecordKey::new("store-1", "SKU-1").unwrap(),
        quantity: 7,
        reserved: 0,
        version: 3,
        created_at_ms: 1,
        updated_at_ms: 2,
    }
}

/// bincode 2 varint lengths that claim more than `limit` bytes: just over it, u32::MAX, 2^40
/// and 2^62.
fn huge_lengths(limit: usize) -> Vec<Vec<u8>> {
    let u32_length = |length: u32| [&[0xFC][..], &length.to_le_bytes()].concat();
    let u64_length = |length: u64| [&[0xFD][..], &length.to_le_bytes()].concat();
    vec![
        u32_length(limit as u32 + 1),
        u32_length(u32::MAX),
        u64_length(1 << 40),
        u64_length(1 << 62),
    ]
}

/// `valid` with each of `lengths` inserted at, and written over, every offset.
fn bombs(valid: &[u8], lengths: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    for offset in 0..=valid.len() {
        for length in lengths {
            bodies.push([&valid[..offset], length, &valid[offset..]].concat());
            let mut overwritten = valid.to_vec();
            for (i, byte) in length.iter().enumerate() {
                match overwritten.get_mut(offset + i) {
                    Some(slot) => *slot = *byte,
                    None => overwritten.push(*byte),
                }
            }
            bodies.push(overwritten);
        }
    }
    bodies
}

// ---------------------------------------------------------------------------------------------
// The decoders.

/// One decoder, a valid message for it, and the most it may allocate.
struct Decoder {
    name: &'static str,
    valid: Vec<u8>,
    /// Whether the bytes decoded.
    decode: fn(&[u8]) -> bool,
    limit_bytes: usize,
}

fn rpc<T: DeserializeOwned>(bytes: &[u8]) -> bool {
    decode_rpc::<T>(bytes).is_ok()
}

fn stored<T: DeserializeOwned>(bytes: &[u8]) -> bool {
    decode::<T>(b"key", bytes).is_ok()
}

fn rpc_decoder<T: Serialize>(name: &'static str, valid: &T, decode: fn(&[u8]) -> bool) -> Decoder {
    Decoder {
        name,
        valid: encode_rpc(valid),
        decode,
        limit_bytes: RPC_DECODE_LIMIT_BYTES,
    }
}

fn disk_decoder<T: Serialize>(name: &'static str, valid: &T, decode: fn(&[u8]) -> bool) -> Decoder {
    Decoder {
        name,
        valid: encode(valid),
        decode,
        limit_bytes: DISK_DECODE_LIMIT_BYTES,
    }
}

/// Every Raft RPC request and reply, as `raft::network` decodes them (replies in their
/// `Result<Reply, String>` envelope).
fn rpc_decoders() -> Vec<Decoder> {
    type Reply<T> = Result<T, String>;
    vec![
        rpc_decoder(
            "append request",
            &append_request(request("store-1", "SKU-1", 5)),
            rpc::<AppendEntriesRequest<TypeConfig>>,
        ),
        rpc_decoder(
            "append reply",
            &Reply::Ok(AppendEntriesResponse::<TypeConfig>::HigherVote(stale_vote())),
            rpc::<Reply<AppendEntriesResponse<TypeConfig>>>,
        ),
        rpc_decoder(
            "vote request",
            &vote_request(),
            rpc::<VoteRequest<TypeConfig>>,
        ),
        rpc_decoder(
            "vote reply",
            &Reply::Ok(VoteResponse::<TypeConfig>::new(
                stale_vote(),
                Some(log_id(0, 3)),
                false,
            )),
            rpc::<Reply<VoteResponse<TypeConfig>>>,
        ),
        rpc_decoder("snapshot chunk", &snapshot_chunk(), rpc::<SnapshotChunk>),
        rpc_decoder(
            "snapshot reply",
            &Reply::Ok(Some(SnapshotResponse::<TypeConfig>::new(stale_vote()))),
            rpc::<Reply<Option<SnapshotResponse<TypeConfig>>>>,
        ),
        rpc_decoder(
            "transfer-leader request",
            &transfer_request(),
            rpc::<TransferLeaderRequest<TypeConfig>>,
        ),
        rpc_decoder(
            "transfer-leader reply",
            &Reply::<TransferLeaderResponse<TypeConfig>>::Ok(Ok(())),
            rpc::<Reply<TransferLeaderResponse<TypeConfig>>>,
        ),
        rpc_decoder(
            "error reply",
            &Reply::<()>::Err("node 2 is shutting down".into()),
            rpc::<Reply<VoteResponse<TypeConfig>>>,
        ),
    ]
}

/// Every kind of value stored on disk (sled, the WAL, snapshot metadata).
fn disk_decoders() -> Vec<Decoder> {
    let response = Response {
        operation: Operation::Create,
        result: Ok(record()).into(),
        replayed: false,
        log_index: 9,
    };
    vec![
        disk_decoder("record", &record(), stored::<Record>),
        disk_decoder(
            "idempotency entry",
            &IdempotencyEntry {
                fingerprint: vec![1, 2, 3],
                response,
                expires_at_ms: 1000,
            },
            stored::<IdempotencyEntry>,
        ),
        disk_decoder(
            "log entry",
            &entry(1, 4, request("store-1", "SKU-1", 5)),
            stored::<Entry>,
        ),
        disk_decoder("vote", &stale_vote(), stored::<Vote>),
        disk_decoder(
            "applied log id",
            &Some(log_id(1, 4)),
            stored::<Option<LogId>>,
        ),
        disk_decoder(
            "membership",
            &StoredMembership::default(),
            stored::<StoredMembership>,
        ),
        disk_decoder(
            "snapshot metadata",
            &snapshot_meta(),
            stored::<SnapshotMeta>,
        ),
        disk_decoder("counter", &42u64, stored::<u64>),
        disk_decoder("event chunk", &vec![event(); 3], stored::<Vec<Event>>),
        disk_decoder(
            "feed position",
            &FeedPosition {
                last_seq: 9,
                oldest_seq: 1,
                started_at: 0,
            },
            stored::<FeedPosition>,
        ),
    ]
}

fn event() -> Event {
    Event {
        seq: 7,
        log_index: 11,
        kind: EventKind::Held,
        key: RecordKey::new("store-1", "SKU-1").unwrap(),
        quantity: 5,
        reserved: 2,
        delta: Some(-2),
        version: 4,
        reservation_id: ReservationId::new(11, 0),
        idempotency_key: Some("order-43".into()),
        at_ms: 1_000,
    }
}

fn all_decoders() -> Vec<Decoder> {
    let mut decoders = rpc_decoders();
    decoders.extend(disk_decoders());
    decoders.push(rpc_decoder(
        "append request carrying a packed batch",
        &append_request(packed_request("store-1", "SKU-1", 5)),
        rpc::<AppendEntriesRequest<TypeConfig>>,
    ));
    let packed = packed_request("store-1", "SKU-1", 5);
    let Command::PackedBatch { lines, .. } = &packed.command else {
        unreachable!("a packed request")
    };
    decoders.push(Decoder {
        name: "a packed batch's lines, unpacked",
        valid: lines.bytes().to_vec(),
        decode: packed_lines,
        limit_bytes: PACKED_BYTES_MAX,
    });
    decoders
}

/// Decodes `body`, failing the test if that allocated more than the decoder's limit or took
/// long; whether it decoded.
fn decode_within_limits(decoder: &Decoder, body: &[u8]) -> bool {
    let started = Instant::now();
    let (decoded, largest) = largest_allocation(|| (decoder.decode)(body));
    assert!(
        largest <= decoder.limit_bytes,
        "{}: a {}-byte body made the decoder allocate {largest} bytes: {body:02x?}",
        decoder.name,
        body.len()
    );
    assert!(
        started.elapsed() < Duration::from_secs(DECODE_SECONDS_MAX),
        "{}: decoding {body:02x?} took {:?}",
        decoder.name,
        started.elapsed()
    );
    decoded
}

#[test]
fn length_bombs_at_every_offset_never_make_a_decoder_allocate_what_they_claim() {
    let (mut decoded, mut sent) = (0, 0);
    for decoder in all_decoders() {
        assert!(
            (decoder.decode)(&decoder.valid),
            "{}: the sample",
            decoder.name
        );
        let bodies = bombs(&decoder.valid, &huge_lengths(decoder.limit_bytes));
        sent += bodies.len();
        decoded += bodies
            .iter()
            .filter(|body| decode_within_limits(&decoder, body))
            .count();
    }
    // Some bombs land where no length is read (a vote has none, and bincode ignores trailing
    // bytes), but most must be refused.
    assert!(decoded * 4 < sent, "{decoded} of {sent} bombs decoded");
}

/// proptest settings: no regression files (a failure prints its minimal input).
fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn random_bytes_decode_or_fail_within_the_limits(body in vec(any::<u8>(), 0..512)) {
        for decoder in all_decoders() {
            decode_within_limits(&decoder, &body);
        }
    }

    #[test]
    fn valid_messages_with_bytes_overwritten_decode_or_fail_within_the_limits(
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        for decoder in all_decoders() {
            let mut body = decoder.valid.clone();
            for (at, byte) in &edits {
                body[at.index(decoder.valid.len())] = *byte;
            }
            decode_within_limits(&decoder, &body);
        }
    }
}

proptest! {
    #![proptest_config(cases(24))]

    #[test]
    fn bombs_in_any_append_request_are_refused_without_allocating_the_claim(
        store_id in "[a-z0-9-]{1,20}",
        sku in "[A-Z0-9._-]{1,50}",
        quantity in any::<i64>(),
        term in 0u64..(1 << 40),
        count in 1usize..4,
    ) {
        let mut append = append_request(request(&store_id, &sku, quantity));
        append.entries = (1..=count as u64)
            .map(|index| entry(term, index, request(&store_id, &sku, quantity)))
            .collect();
        let decoder = Decoder {
            name: "append request",
            valid: encode_rpc(&append),
            decode: rpc::<AppendEntriesRequest<TypeConfig>>,
            limit_bytes: RPC_DECODE_LIMIT_BYTES,
        };
        prop_assert!((decoder.decode)(&decoder.valid));
        for body in bombs(&decoder.valid, &huge_lengths(RPC_DECODE_LIMIT_BYTES)) {
            decode_within_limits(&decoder, &body);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The WAL's records and snapshot files: framed by u32 lengths, not varints.

/// u32 lengths that claim too much: just over the WAL's record limit, and u32::MAX (which a
/// snapshot reads as its trailer mark), u32::MAX - 1.
fn huge_u32_lengths() -> Vec<Vec<u8>> {
    [RECORD_BYTES_MAX as u32 + 1, u32::MAX, u32::MAX - 1]
        .into_iter()
        .map(|length| length.to_le_bytes().to_vec())
        .chain(huge_lengths(DISK_DECODE_LIMIT_BYTES))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const WAL_DIR: &str = "/node/wal";

fn segment_path() -> PathBuf {
    Path::new(WAL_DIR).join(format!("{:020}.wal", 1))
}

fn read_whole(fs: &SimFs, path: &Path) -> Vec<u8> {
    let file = fs.open(path, false).unwrap();
    let mut bytes = vec![0u8; file.size().unwrap() as usize];
    file.read_exact_at(0, &mut bytes).unwrap();
    bytes
}

fn write_whole(fs: &SimFs, path: &Path, bytes: &[u8]) {
    fs.create_dir_all(path.parent().unwrap()).unwrap();
    let file = fs.open(path, true).unwrap();
    file.write_all_at(0, bytes).unwrap();
    file.sync().unwrap();
}

/// The one segment of a WAL holding every kind of record: a vote, entries, a committed id, a
/// truncation and a purge.
fn wal_segment(runtime: &tokio::runtime::Runtime) -> Vec<u8> {
    let fs = SimFs::new();
    runtime.block_on(async {
        let wal = Wal::open(
            Arc::new(fs.clone()),
            Path::new(WAL_DIR),
            WalOptions::default(),
        )
        .unwrap();
        wal.save_vote(&encode(&stale_vote())).await.unwrap();
        let entries: Vec<(u64, Vec<u8>)> = (1..=4)
            .map(|index| (index, encode(&entry(1, index, request("s1", "A", 5)))))
            .collect();
        wal.append(&entries).unwrap();
        wal.save_committed(&encode(&Some(log_id(1, 2)))).unwrap();
        wal.truncate_after(Some(3)).unwrap();
        wal.purge(1, &encode(&log_id(1, 1))).await.unwrap();
        wal.sync().await.unwrap();
        // The records and a little of the zeros preallocated after them (all of them would
        // make a bomb at each of a megabyte of offsets).
        let mut segment = read_whole(&fs, &segment_path());
        segment.truncate(wal.bytes_on_disk() as usize + 64);
        segment
    })
}

/// Opens a WAL whose only segment holds `bytes` and reads everything back through the log
/// store, failing the test if that allocated more than a record or a value may be; whether it
/// all read.
fn replay_within_limits(runtime: &tokio::runtime::Runtime, bytes: &[u8]) -> bool {
    let fs = SimFs::new();
    write_whole(&fs, &segment_path(), bytes);
    let (read, largest) = largest_allocation(|| {
        runtime.block_on(async {
            let Ok(wal) = Wal::open(Arc::new(fs), Path::new(WAL_DIR), WalOptions::default()) else {
                return false;
            };
            let mut store = LogStore::new(wal);
            let state = store.get_log_state().await.is_ok();
            let entries = store.try_get_log_entries(0..u64::MAX).await.is_ok();
            let vote = store.read_vote().await.is_ok();
            let committed = store.read_committed().await.is_ok();
            state && entries && vote && committed
        })
    });
    let limit = RECORD_BYTES_MAX.max(DISK_DECODE_LIMIT_BYTES);
    assert!(
        largest <= limit,
        "replaying {} bytes allocated {largest}: {bytes:02x?}",
        bytes.len()
    );
    read
}

/// A WAL record with a valid checksum around `payload` (see `storage::wal` for the format).
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut record = (payload.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    record.extend_from_slice(payload);
    record
}

#[test]
fn wal_segments_with_bombs_at_every_offset_open_or_are_refused_within_the_limits() {
    let runtime = runtime();
    let valid = wal_segment(&runtime);
    assert!(replay_within_limits(&runtime, &valid), "the sample segment");
    for body in bombs(&valid, &huge_u32_lengths()) {
        replay_within_limits(&runtime, &body);
    }
}

/// Record payloads that pass their checksum but say anything: a kind byte (valid ones more
/// often), and a body that may hold indexes at the edges of u64.
fn record_payload() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![1u8..=5, any::<u8>()];
    let index = prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), Just(0u64), any::<u64>()];
    (kind, index, vec(any::<u8>(), 0..24)).prop_map(|(kind, index, rest)| {
        let mut payload = vec![kind];
        // A truncate record's first body byte says whether an index follows.
        if kind == 4 {
            payload.push(1);
        }
        payload.extend_from_slice(&index.to_le_bytes());
        payload.extend_from_slice(&rest);
        payload
    })
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn wal_records_that_pass_their_checksum_but_say_anything_never_panic_the_replay(
        payloads in vec(record_payload(), 1..8),
    ) {
        let runtime = runtime();
        let segment: Vec<u8> = payloads.iter().flat_map(|payload| framed(payload)).collect();
        replay_within_limits(&runtime, &segment);
    }

    #[test]
    fn random_wal_segments_never_panic_the_replay(body in vec(any::<u8>(), 0..256)) {
        replay_within_limits(&runtime(), &body);
    }
}

const SNAPSHOT_DIR: &str = "/node/snapshots";

/// A snapshot file with metadata and a few records.
fn snapshot_file() -> Vec<u8> {
    let fs = SimFs::new();
    let dir = SnapshotDir::open(Arc::new(fs.clone()), Path::new(SNAPSHOT_DIR)).unwrap();
    let mut writer = dir
        .writer(&file_name(5, 1), &encode(&snapshot_meta()))
        .unwrap();
    for i in 0..3u8 {
        writer
            .push(format!("Srs1\0SKU-{i}").as_bytes(), &encode(&record()))
            .unwrap();
    }
    let file = writer.finish().unwrap();
    read_whole(&fs, file.path())
}

/// Reads a snapshot file holding `bytes` as an install would (records, trailer, metadata),
/// failing the test if that allocated more than a value may be; whether it all read.
fn read_snapshot_within_limits(bytes: &[u8]) -> bool {
    let fs = SimFs::new();
    let path = Path::new(SNAPSHOT_DIR).join(file_name(5, 1));
    write_whole(&fs, &path, bytes);
    let (read, largest) = largest_allocation(|| {
        let Ok(file) = SnapshotFile::open(Arc::new(fs), path.clone()) else {
            return false;
        };
        let verified = file.verify().is_ok();
        let meta = file.meta().map(|meta| {
            decode_in::<SnapshotMeta>(&path.display().to_string(), b"metadata", &meta).is_ok()
        });
        verified && meta.unwrap_or(false)
    });
    assert!(
        largest <= DISK_DECODE_LIMIT_BYTES,
        "reading a {}-byte snapshot allocated {largest}: {bytes:02x?}",
        bytes.len()
    );
    read
}

#[test]
fn snapshot_files_with_bombs_at_every_offset_read_or_are_refused_within_the_limits() {
    let valid = snapshot_file();
    assert!(read_snapshot_within_limits(&valid), "the sample snapshot");
    for body in bombs(&valid, &huge_u32_lengths()) {
        // Only bytes after the trailer go unnoticed (nothing reads them); the checksum refuses
        // every other change.
        let read = read_snapshot_within_limits(&body);
        assert!(!read || body.starts_with(&valid), "read: {body:02x?}");
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn random_snapshot_files_never_panic_a_reader(
        body in vec(any::<u8>(), 0..256),
        magic in 0..5usize,
    ) {
        // With a magic (any format's), the reader goes on to the lengths.
        let magics: [&[u8]; 5] = [b"", b"STKSNAP1", b"STKSNAP2", b"STKSNAP3", b"STKSNAP4"];
        let body = [magics[magic], &body].concat();
        read_snapshot_within_limits(&body);
    }
}

// ---------------------------------------------------------------------------------------------
// Real processes.

const STORE: &str = "s1";

/// Random bodies posted to each route of each target node, besides the bombs.
const RANDOM_BODIES_PER_ROUTE: usize = 150;
/// Requests in flight at once while fuzzing a node.
const FUZZ_CONCURRENCY: usize = 8;

/// A seed from `DECODE_FUZZ_SEED`, or a new one; printed so that a failure can be replayed.
fn seed() -> u64 {
    let seed = std::env::var("DECODE_FUZZ_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("DECODE_FUZZ_SEED={seed}");
    seed
}

fn random_body(rng: &mut impl rand::Rng) -> Vec<u8> {
    let len = rng.random_range(0..256);
    (0..len).map(|_| rng.random()).collect()
}

/// Each Raft route and a valid request body for it (a stale one: a node that reads it refuses).
fn route_samples() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            routes::raft::APPEND,
            encode_rpc(&append_request(request(STORE, "SKU-1", 5))),
        ),
        (routes::raft::VOTE, encode_rpc(&vote_request())),
        (routes::raft::PRE_VOTE, encode_rpc(&vote_request())),
        (routes::raft::SNAPSHOT, encode_rpc(&snapshot_chunk())),
        (
            routes::raft::TRANSFER_LEADER,
            encode_rpc(&transfer_request()),
        ),
        (routes::raft::PROPOSE, encode_rpc(&propose_batch())),
    ]
}

/// A follower's batch of one forwarded reserve (on a follower: refused as "not the leader"
/// inside the reply; on the leader: one unit of the fuzzed SKU).
fn propose_batch() -> ProposeBatch {
    ProposeBatch {
        from: 2,
        items: vec![ProposeItem {
            command: Command::Reserve {
                key: RecordKey::new(STORE, "fuzzed").unwrap(),
                quantity: 1,
                expected_version: None,
            },
            idempotency: None,
            request_id: "fuzz-1".into(),
            path: "/api/inventory/stores/s/inventory/fuzzed/reserve".into(),
        }],
    }
}

/// Posts every body to `route` of node `id`, as another member would (the secret and that
/// member's identity headers, so each body reaches the decoder); the statuses, in no particular
/// order (0: no answer at all).
async fn post_all(cluster: &Cluster, id: u64, route: &str, bodies: Vec<Vec<u8>>) -> Vec<u16> {
    let url = cluster.url(id, route);
    let identity = cluster.identity_headers(id % 3 + 1);
    futures::stream::iter(bodies)
        .map(|body| {
            let mut request = cluster
                .http
                .post(&url)
                .header("x-stockraft-secret", SECRET)
                .header("content-type", "application/octet-stream");
            for (name, value) in &identity {
                request = request.header(*name, value);
            }
            let request = request.body(body);
            async move {
                match request.send().await {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0,
                }
            }
        })
        .buffer_unordered(FUZZ_CONCURRENCY)
        .collect()
        .await
}

async fn create(cluster: &Cluster, node: u64, sku: &str, qty: i64) {
    let create = CreateRequest {
        sku: sku.into(),
        store_id: STORE.into(),
        initial_quantity: qty,
    };
    let (status, body) = cluster.post(node, routes::INVENTORY, create).await;
    assert_eq!(status, 201, "create {sku} on node {node}: {body}");
}

async fn reserve(cluster: &Cluster, node: u64, sku: &str) -> u16 {
    let reserve = ReserveRequest {
        qty: 1,
        expected_version: None,
        ttl_seconds: None,
    };
    cluster
        .post(node, &routes::reserve(STORE, sku), reserve)
        .await
        .0
}

/// Waits until a reserve through each of `nodes` commits.
async fn every_node_commits(cluster: &Cluster, nodes: &[u64], sku: &str) {
    for &node in nodes {
        eventually!(
            format!("a reserve through node {node} commits"),
            reserve(cluster, node, sku).await == 201
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_bombed_bodies_on_every_raft_route_are_refused_and_the_cluster_keeps_committing()
{
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    let mut cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    create(&cluster, leader, "fuzzed", 1000).await;
    let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    // status -> count, per route.
    let mut answers: BTreeMap<&str, BTreeMap<u16, usize>> = BTreeMap::new();
    let mut sent = 0;
    for target in [follower, leader] {
        for (route, valid) in route_samples() {
            let mut bodies = bombs(&valid, &huge_lengths(RPC_DECODE_LIMIT_BYTES));
            bodies.extend((0..RANDOM_BODIES_PER_ROUTE).map(|_| random_body(&mut rng)));
            sent += bodies.len();
            for status in post_all(&cluster, target, route, bodies).await {
                *answers.entry(route).or_default().entry(status).or_default() += 1;
            }
        }
    }
    eprintln!("{sent} bodies sent; answers per route: {answers:?}");
    assert!(sent >= 2000, "only {sent} bodies");
    for (route, statuses) in &answers {
        for status in statuses.keys() {
            // 400: refused by the decoder; 200: decoded, and answered (a stale request is
            // refused inside the reply).
            assert!(
                *status == 400 || *status == 200,
                "{route} answered {status}: {statuses:?}"
            );
        }
        let refused = statuses.get(&400).copied().unwrap_or(0);
        let total: usize = statuses.values().sum();
        assert!(
            refused * 2 > total,
            "{route}: only {refused} of {total} refused"
        );
    }
    for id in cluster.ids() {
        assert!(
            cluster.is_running(id),
            "node {id} died:\n{}",
            cluster.log(id)
        );
        assert!(
            cluster.health(id).await.is_some(),
            "node {id} stopped answering"
        );
    }
    cluster.wait_for_leader(&[1, 2, 3]).await;
    every_node_commits(&cluster, &[1, 2, 3], "fuzzed").await;
}

/// A forwarded batch larger than any follower sends is refused whole before any item is
/// proposed; one at the limit is proposed item by item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_batch_over_the_item_limit_is_refused_whole_and_proposes_nothing() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    create(&cluster, leader, "fuzzed", 1000).await;
    let item = propose_batch().items.remove(0);
    let batch = |items| {
        encode_rpc(&ProposeBatch {
            from: leader % 3 + 1,
            items: vec![item.clone(); items],
        })
    };
    let over = post_all(
        &cluster,
        leader,
        routes::raft::PROPOSE,
        vec![batch(PROPOSE_BATCH_ITEMS_MAX + 1)],
    )
    .await;
    assert_eq!(over, [400]);
    let at_limit = post_all(
        &cluster,
        leader,
        routes::raft::PROPOSE,
        vec![batch(PROPOSE_BATCH_ITEMS_MAX)],
    )
    .await;
    assert_eq!(at_limit, [200]);
    // Only the second batch's reserves (one unit each) were applied.
    let expected = 1000 - PROPOSE_BATCH_ITEMS_MAX as i64;
    for id in cluster.ids() {
        eventually!(
            format!("node {id} applies exactly the batch at the limit"),
            cluster.local_qty(id, STORE, "fuzzed").await == Some(expected)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A fake peer.

/// Bytes of the oversize answers: far past the transport's limit.
const OVERSIZE_BYTES: u64 = 1 << 30;
/// Oversize answers of each kind the fake peer gives (each makes the node read up to its limit:
/// a few are enough, and more would only burn CPU).
const OVERSIZE_ANSWERS: usize = 3;

/// How the fake peer answers a Raft RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Garbage {
    RandomBytes,
    /// An error reply with a huge length spliced in.
    Bomb,
    /// Claims [`OVERSIZE_BYTES`] in its content-length, sends a few, then nothing.
    ClaimsOversize,
    /// Streams [`OVERSIZE_BYTES`] with no length announced, until the node hangs up.
    StreamsOversize,
}

/// What the fake peer has answered, by kind.
#[derive(Default)]
struct FakePeer {
    answers: [AtomicUsize; 4],
}

impl FakePeer {
    fn count(&self, garbage: Garbage) -> usize {
        self.answers[garbage as usize].load(Ordering::Relaxed)
    }

    /// The next kind of answer: oversize ones first, then random bytes and bombs in turn.
    fn next(&self, rng: &mut impl rand::Rng) -> Garbage {
        let garbage = if self.count(Garbage::StreamsOversize) < OVERSIZE_ANSWERS {
            Garbage::StreamsOversize
        } else if self.count(Garbage::ClaimsOversize) < OVERSIZE_ANSWERS {
            Garbage::ClaimsOversize
        } else if rng.random() {
            Garbage::RandomBytes
        } else {
            Garbage::Bomb
        };
        self.answers[garbage as usize].fetch_add(1, Ordering::Relaxed);
        garbage
    }
}

/// Reads one HTTP request (head and body) from `stream`; its head, or None if it closed.
async fn read_request(stream: &mut tokio::net::TcpStream) -> std::io::Result<Option<String>> {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(None);
        }
        bytes.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    let mut body_read = bytes.len() - head_end;
    while body_read < body_len {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(None);
        }
        body_read += read;
    }
    Ok(Some(head))
}

async fn answer_with(
    stream: &mut tokio::net::TcpStream,
    garbage: Garbage,
    rng: &mut rand::rngs::StdRng,
) -> std::io::Result<()> {
    let head = |length: u64| {
        format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n")
    };
    match garbage {
        Garbage::RandomBytes | Garbage::Bomb => {
            let body = if garbage == Garbage::RandomBytes {
                random_body(rng)
            } else {
                let valid = encode_rpc(&Err::<(), String>("fake peer".into()));
                let lengths = huge_lengths(RPC_DECODE_LIMIT_BYTES);
                let mut all = bombs(&valid, &lengths);
                all.swap_remove(rng.random_range(0..all.len()))
            };
            stream.write_all(head(body.len() as u64).as_bytes()).await?;
            stream.write_all(&body).await?;
        }
        Garbage::ClaimsOversize => {
            stream.write_all(head(OVERSIZE_BYTES).as_bytes()).await?;
            stream.write_all(b"\x00\x01").await?;
            // Hold the connection until the node gives up on it.
            let mut buffer = [0u8; 64];
            while stream.read(&mut buffer).await? > 0 {}
        }
        Garbage::StreamsOversize => {
            let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
            stream.write_all(head.as_bytes()).await?;
            let chunk = vec![0xFD; 1 << 20];
            for _ in 0..OVERSIZE_BYTES / chunk.len() as u64 {
                stream
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                stream.write_all(&chunk).await?;
                stream.write_all(b"\r\n").await?;
            }
            stream.write_all(b"0\r\n\r\n").await?;
        }
    }
    stream.flush().await
}

/// Serves node `id`'s address: its Raft status as an empty node (so that the cluster is
/// founded), and garbage for every RPC.
async fn serve_garbage(listener: tokio::net::TcpListener, id: u64, peer: Arc<FakePeer>, seed: u64) {
    let mut connections = 0u64;
    while let Ok((mut stream, _)) = listener.accept().await {
        connections += 1;
        let peer = peer.clone();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ connections);
        tokio::spawn(async move {
            let Ok(Some(head)) = read_request(&mut stream).await else {
                return;
            };
            if head.starts_with(&format!("get {}", routes::raft::STATUS)) {
                let body = format!(r#"{{"id":{id},"initialized":false}}"#);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                return;
            }
            let garbage = peer.next(&mut rng);
            let _ = answer_with(&mut stream, garbage, &mut rng).await;
        });
    }
}

/// Peak resident memory of process `pid` (VmHWM), in bytes.
fn peak_resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_answering_garbage_and_oversize_bodies_neither_stops_nor_bloats_the_leader() {
    let seed = seed();
    // Nodes 1 and 2 are real; node 3's address is the fake peer's.
    let mut cluster = Cluster::configure(3, "", "");
    let listener = tokio::net::TcpListener::bind(cluster.addr(3))
        .await
        .unwrap();
    let peer = Arc::new(FakePeer::default());
    tokio::spawn(serve_garbage(listener, 3, peer.clone(), seed));
    cluster.spawn(1);
    cluster.spawn(2);
    let leader = cluster.wait_for_leader(&[1, 2]).await;
    create(&cluster, leader, "answered", 1000).await;
    eventually!(
        "the fake peer gave every kind of answer a few times",
        [Garbage::RandomBytes, Garbage::Bomb]
            .iter()
            .all(|&garbage| peer.count(garbage) >= 20)
            && peer.count(Garbage::ClaimsOversize) >= OVERSIZE_ANSWERS
    );
    for id in [1, 2] {
        assert!(
            cluster.is_running(id),
            "node {id} died:\n{}",
            cluster.log(id)
        );
        let peak = peak_resident_bytes(cluster.pid(id).unwrap());
        eprintln!("node {id}: peak resident memory {peak} bytes");
        // The node reads an oversize answer up to the transport's limit, never the whole of it.
        assert!(
            peak < OVERSIZE_BYTES / 2,
            "node {id} peaked at {peak} bytes resident"
        );
    }
    every_node_commits(&cluster, &[1, 2], "answered").await;
    for id in [1, 2] {
        assert!(
            cluster.health(id).await.is_some(),
            "node {id} stopped answering"
        );
        let read = cluster.local_qty(id, STORE, "answered").await;
        assert!(read.is_some(), "node {id} does not serve reads");
    }
}
