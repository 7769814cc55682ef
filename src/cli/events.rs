//! `stockraft inv events`: the event feed from the command line.
//!
//! Without `--follow` it pages through `GET /api/events` (linearizable, 1,000 events a page)
//! from `--after` until the head and stops. With `--follow` it streams (`client::follow`) and
//! never stops by itself: when the node goes away it resumes after the last event printed, on
//! the same node or the next of the node list (`--node` first, then every node of `--config`),
//! so a leader kill or a node restart costs a pause, never an event printed twice or skipped.
//! Reconnections are reported on stderr.
//!
//! Output: a table (a header, then a row per event), or with `--json` one event per line as the
//! API renders it (JSON lines, for `jq` and pipes). What ends it with an error: 410 (the cursor
//! is older than the oldest event kept: the message names the oldest seq; start again after
//! it, knowing events were missed), a refusal, or no usable answer.

use clap::Args;

use crate::client::follow::{Follow, FollowError, Followed, StreamTarget};
use crate::client::wire::EventBody;
use crate::client::{Client, ClientError, Consistency};
use crate::inventory::{EventFilter, EventKind};

/// Events asked for per page when paging.
const PAGE_EVENTS: usize = 1_000;

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Print the events after this seq (0: from the oldest kept).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Keep streaming new events; resume by itself on another node when one goes away.
    #[arg(long)]
    pub follow: bool,
    /// Only this store's events.
    #[arg(long)]
    pub store: Option<String>,
    /// Only this SKU's events.
    #[arg(long)]
    pub sku: Option<String>,
    /// Only these types, comma-separated: created, adjusted, reserved, held, committed,
    /// released, expired.
    #[arg(long = "type", value_delimiter = ',', value_parser = event_kind)]
    pub kinds: Vec<EventKind>,
}

fn event_kind(name: &str) -> Result<EventKind, String> {
    EventKind::parse(name).ok_or_else(|| {
        let names: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.as_str()).collect();
        format!("an event type is one of {}", names.join(", "))
    })
}

impl EventsArgs {
    pub fn filter(&self) -> EventFilter {
        EventFilter {
            store_id: self.store.clone(),
            sku: self.sku.clone(),
            kinds: (!self.kinds.is_empty()).then(|| self.kinds.clone()),
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum Ended {
    /// Paged to the head.
    AtHead,
    /// The API refused (410 included); the message is printed.
    Refused,
    /// No usable answer; the message is printed.
    NoAnswer,
}

/// Where to print: a table or JSON lines.
pub struct Printer {
    json: bool,
    header_printed: bool,
}

impl Printer {
    pub fn new(json: bool) -> Self {
        Self {
            json,
            header_printed: false,
        }
    }

    /// One event's line (and the table's header before the first).
    pub fn line(&mut self, event: &EventBody) -> String {
        if self.json {
            let json = serde_json::to_string(event).expect("an event renders as JSON");
            return json + "\n";
        }
        let mut text = String::new();
        if !std::mem::replace(&mut self.header_printed, true) {
            text = table_row(&[
                "SEQ",
                "TYPE",
                "STORE",
                "SKU",
                "QTY",
                "RESERVED",
                "DELTA",
                "VERSION",
                "RESERVATION",
                "AT",
            ]);
        }
        let delta = event.delta.map_or("-".into(), |delta| format!("{delta:+}"));
        text.push_str(&table_row(&[
            &event.seq.to_string(),
            &event.kind,
            &event.store_id,
            &event.sku,
            &event.qty.to_string(),
            &event.reserved.to_string(),
            &delta,
            &event.version.to_string(),
            event.reservation_id.as_deref().unwrap_or("-"),
            &event.at,
        ]));
        text
    }
}

fn table_row(cells: &[&str; 10]) -> String {
    format!(
        "{:>8} {:<10} {:<16} {:<20} {:>8} {:>8} {:>7} {:>7} {:<24} {}\n",
        cells[0],
        cells[1],
        cells[2],
        cells[3],
        cells[4],
        cells[5],
        cells[6],
        cells[7],
        cells[8],
        cells[9]
    )
}

/// Pages from `args.after` to the head, printing each event.
pub async fn page_to_head(client: &Client, args: &EventsArgs, json: bool) -> Ended {
    let filter = args.filter();
    let mut printer = Printer::new(json);
    let mut after = args.after;
    loop {
        let answer = client
            .events(after, Some(PAGE_EVENTS), &filter, Consistency::Linearizable)
            .await;
        let page = match answer.and_then(|answer| answer.ok()) {
            Ok(page) => page.data,
            Err(error) => return report(client.node(), error),
        };
        for event in &page.events {
            print!("{}", printer.line(event));
        }
        match page.next {
            Some(next) => after = next,
            None => return Ended::AtHead,
        }
    }
}

fn report(node: &str, error: ClientError) -> Ended {
    match error {
        ClientError::Refused { status, error } => {
            let detail = &error.error;
            eprintln!("error {status} {}: {}", detail.code, detail.message);
            Ended::Refused
        }
        other => {
            eprintln!("error: no usable answer from {node}: {other}");
            Ended::NoAnswer
        }
    }
}

/// Streams from `args.after` through `nodes` until the feed refuses to go on.
pub async fn follow(
    target: StreamTarget,
    nodes: Vec<String>,
    args: &EventsArgs,
    json: bool,
) -> Ended {
    let mut printer = Printer::new(json);
    let mut follow = Follow::new(target, nodes, args.after, args.filter());
    loop {
        match follow.next().await {
            Ok(Followed::Event(event)) => print!("{}", printer.line(&event)),
            Ok(Followed::Head { .. }) => {}
            Ok(Followed::Resumed { node, reason }) => {
                eprintln!(
                    "streaming from {node} after seq {} ({reason})",
                    follow.cursor()
                );
            }
            Err(error @ (FollowError::Gone { .. } | FollowError::Refused(_))) => {
                eprintln!("error: {error}");
                return Ended::Refused;
            }
            Err(error @ FollowError::Gap { .. }) => {
                eprintln!("error: {error}");
                return Ended::NoAnswer;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, delta: Option<i64>, reservation: Option<&str>) -> EventBody {
        EventBody {
            seq,
            log_index: seq + 10,
            kind: "held".into(),
            store_id: "s1".into(),
            sku: "A".into(),
            qty: 7,
            reserved: 3,
            delta,
            version: 4,
            reservation_id: reservation.map(str::to_owned),
            idempotency_key: None,
            at: "2026-12-07T03:00:00.000Z".into(),
        }
    }

    #[test]
    fn a_table_has_one_header_then_a_row_per_event() {
        let mut printer = Printer::new(false);
        let first = printer.line(&event(1, Some(-3), Some("r-1")));
        let second = printer.line(&event(2, None, None));
        let lines: Vec<&str> = first.lines().chain(second.lines()).collect();
        assert_eq!(lines.len(), 3, "{first}{second}");
        assert!(lines[0].split_whitespace().eq([
            "SEQ",
            "TYPE",
            "STORE",
            "SKU",
            "QTY",
            "RESERVED",
            "DELTA",
            "VERSION",
            "RESERVATION",
            "AT"
        ]));
        assert!(lines[1].split_whitespace().eq([
            "1",
            "held",
            "s1",
            "A",
            "7",
            "3",
            "-3",
            "4",
            "r-1",
            "2026-12-07T03:00:00.000Z"
        ]));
        assert!(lines[2].split_whitespace().eq([
            "2",
            "held",
            "s1",
            "A",
            "7",
            "3",
            "-",
            "4",
            "-",
            "2026-12-07T03:00:00.000Z"
        ]));
    }

    #[test]
    fn json_lines_are_the_apis_event_one_per_line() {
        let mut printer = Printer::new(true);
        let line = printer.line(&event(5, Some(2), None));
        assert!(line.ends_with('\n') && line.lines().count() == 1, "{line}");
        let parsed: EventBody = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed, event(5, Some(2), None));
    }

    #[test]
    fn types_are_checked_and_make_the_filter() {
        assert_eq!(event_kind("held"), Ok(EventKind::Held));
        assert!(event_kind("bought")
            .unwrap_err()
            .contains("created, adjusted"));
        let args = EventsArgs {
            after: 0,
            follow: false,
            store: Some("s1".into()),
            sku: None,
            kinds: vec![],
        };
        assert_eq!(args.filter().kinds, None);
        assert_eq!(args.filter().store_id.as_deref(), Some("s1"));
    }
}
