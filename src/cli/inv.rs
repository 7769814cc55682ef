//! `stockraft inv`: the inventory API from the command line, against any node.
//!
//! Every command is one call of the typed client (`client::Client`), so the CLI speaks exactly
//! what the bench, the tests and the simulation speak. Tables by default; `--json` prints the
//! API's own JSON (the error body too). `--node`, `--json`, `--token` and `--config` may come
//! before or after the command.
//!
//! `inv events` (`cli::events`) pages through the event feed, or follows it with `--follow`
//! across the nodes of `--node` and `--config`.
//!
//! Exit codes: 0 the API answered success; 1 the API refused (its error code and message are
//! printed to stderr: `VALIDATION_ERROR`, `NOT_FOUND`, `CONFLICT_ERROR`, `INSUFFICIENT_STOCK`,
//! `RESERVATION_NOT_FOUND`, `RESERVATION_NOT_HELD`, `RESERVATION_EXPIRED`,
//! `HOLD_LIMIT_REACHED`, `CART_REFUSED`, `NO_LEADER`, ...); 2 a usage error, or no usable
//! answer (the node unreachable, or not a stockraft node).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::events::{self, Ended, EventsArgs};
use crate::client::follow::StreamTarget;
use crate::client::wire::{
    AdjustRequest, CartLineRequest, CartRequest, ChangeAnswer, CreateRequest, Envelope, RecordBody,
    ReservationBody, ReserveRequest, SkuView, StorePage,
};
use crate::client::{Answer, Client, ClientError, Consistency, WriteOptions};
use crate::transport::HttpTransport;

/// How long one call may take: longer than a node's write deadline, so its own 503 arrives.
const REQUEST_TIMEOUT: Duration = crate::client::REQUEST_TIMEOUT_DEFAULT;
/// The node asked when neither `--node` nor a readable configuration names one.
const NODE_DEFAULT: &str = "127.0.0.1:22001";
/// Exit code when the API refused the request.
const EXIT_REFUSED: i32 = 1;
/// Exit code on a usage error or when no usable answer came back.
const EXIT_USAGE: i32 = 2;

#[derive(Debug, Args)]
pub struct InvArgs {
    /// Any node: `host:port` or a URL (`http://host:port`, or `https://...` with `--ca`).
    /// Default: the first node's client address in `--config`.
    #[arg(long, short, global = true, env = "STOCKRAFT_NODE")]
    pub node: Option<String>,
    /// A client token (`Authorization: Bearer`), when the cluster has tokens.
    #[arg(long, global = true, env = "STOCKRAFT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The configuration naming the default node.
    #[arg(long, global = true, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// For `https://` nodes: the cluster CA to trust (`ca.pem` of `stockraft certs`).
    #[arg(long, global = true, env = "STOCKRAFT_CA")]
    pub ca: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: InvCommand,
}

#[derive(Debug, Subcommand)]
pub enum InvCommand {
    /// Read one record.
    Get { store: String, sku: String },
    /// Create a record.
    Create {
        store: String,
        sku: String,
        qty: i64,
    },
    /// Add DELTA (any sign) to the available quantity.
    Adjust {
        store: String,
        sku: String,
        #[arg(allow_negative_numbers = true)]
        delta: i64,
        /// Refuse unless the record is at this version.
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Reserve QTY units; with --ttl, hold them instead (a reservation to commit or release).
    Reserve {
        store: String,
        sku: String,
        qty: i64,
        /// Hold for this many seconds (1 to 604800).
        #[arg(long)]
        ttl: Option<u64>,
        /// An Idempotency-Key: retrying with it applies the reserve at most once.
        #[arg(long)]
        key: Option<String>,
    },
    /// Hold every line or none, as one reservation.
    Cart {
        /// `STORE:SKU:QTY`, one per line of the cart.
        #[arg(required = true, value_parser = cart_line)]
        lines: Vec<CartLineRequest>,
        /// Hold for this many seconds (default: the cluster's `reservations.default_ttl_s`).
        #[arg(long)]
        ttl: Option<u64>,
        #[arg(long)]
        key: Option<String>,
    },
    /// Commit a held reservation: its units leave.
    Commit {
        id: String,
        #[arg(long)]
        key: Option<String>,
    },
    /// Release a held reservation: its units come back.
    Release {
        id: String,
        #[arg(long)]
        key: Option<String>,
    },
    /// Show a reservation.
    Reservation { id: String },
    /// One SKU in every store, with totals.
    Sku { sku: String },
    /// The event feed: every change in order, paged to the head; with --follow, streamed and
    /// resumed by itself on another node when one goes away.
    Events(EventsArgs),
    /// A page of a store's records, by SKU.
    Store {
        store: String,
        /// Records in the page (1 to 1000; the node's default is 100).
        #[arg(long)]
        limit: Option<usize>,
        /// The cursor a previous page printed as `next`.
        #[arg(long)]
        after: Option<String>,
    },
}

/// `STORE:SKU:QTY`.
fn cart_line(text: &str) -> Result<CartLineRequest, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let [store_id, sku, qty] = parts.as_slice() else {
        return Err(format!("a cart line is STORE:SKU:QTY, got {text:?}"));
    };
    let qty = qty
        .parse()
        .map_err(|_| format!("QTY must be an integer, got {qty:?}"))?;
    Ok(CartLineRequest {
        store_id: (*store_id).to_owned(),
        sku: (*sku).to_owned(),
        qty,
        expected_version: None,
    })
}

/// What a command answered, typed.
enum Output {
    Record(RecordBody),
    Created(Envelope<RecordBody>),
    Change(ChangeAnswer),
    Reservation(Envelope<ReservationBody>),
    Sku(Envelope<SkuView>),
    Page(Envelope<StorePage>),
}

/// Runs one inventory command; returns the process exit code.
pub async fn run(args: InvArgs) -> anyhow::Result<i32> {
    let (client, transport) = match client(&args) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("error: {error:#}");
            return Ok(EXIT_USAGE);
        }
    };
    if let InvCommand::Events(events) = &args.command {
        return Ok(run_events(&args, events, &client, &transport).await);
    }
    match call(&client, &args.command).await {
        Ok(output) => {
            print!("{}", render(&output, args.json)?);
            Ok(0)
        }
        Err(ClientError::Refused { status, error }) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&error)?);
            }
            let detail = &error.error;
            eprintln!("error {status} {}: {}", detail.code, detail.message);
            if let Some(lines) = detail.details.as_ref().and_then(|d| d.get("lines")) {
                for line in lines.as_array().into_iter().flatten() {
                    eprintln!(
                        "  line {} {}/{}: {}",
                        line["index"],
                        line["storeId"].as_str().unwrap_or("?"),
                        line["sku"].as_str().unwrap_or("?"),
                        line["code"].as_str().unwrap_or("?")
                    );
                }
            }
            Ok(EXIT_REFUSED)
        }
        Err(other) => {
            eprintln!("error: no usable answer from {}: {other}", client.node());
            Ok(EXIT_USAGE)
        }
    }
}

/// `inv events`: paged to the head, or followed until the feed refuses to go on.
async fn run_events(
    args: &InvArgs,
    events: &EventsArgs,
    client: &Client,
    transport: &HttpTransport,
) -> i32 {
    let ended = if events.follow {
        let target = StreamTarget {
            http: transport.http_client().clone(),
            scheme: transport.scheme(),
            token: args.token.clone(),
        };
        let nodes = follow_nodes(client.node(), &args.config);
        events::follow(target, nodes, events, args.json).await
    } else {
        events::page_to_head(client, events, args.json).await
    };
    match ended {
        Ended::AtHead => 0,
        Ended::Refused => EXIT_REFUSED,
        Ended::NoAnswer => EXIT_USAGE,
    }
}

/// The nodes `--follow` may stream from: `first` (the `--node`), then every node of the
/// configuration at `path`, each once.
fn follow_nodes(first: &str, path: &Path) -> Vec<String> {
    let mut nodes = vec![first.to_owned()];
    for node in config_nodes(path) {
        let node = split_url(&node).map_or(node, |(_, address)| address);
        if !nodes.contains(&node) {
            nodes.push(node);
        }
    }
    nodes
}

/// The client and the transport under it (an event stream reads through the transport's own
/// HTTP client).
fn client(args: &InvArgs) -> anyhow::Result<(Client, HttpTransport)> {
    let node = match &args.node {
        Some(node) => node.clone(),
        None => default_node(&args.config),
    };
    let (https, address) = split_url(&node)?;
    let transport = match (https, &args.ca) {
        (false, _) => HttpTransport::new(),
        (true, Some(ca)) => {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            HttpTransport::with_tls(&pem, None).context("building the TLS client")?
        }
        (true, None) => anyhow::bail!("an https:// node needs --ca (the cluster CA)"),
    };
    let mut client =
        Client::new(Arc::new(transport.clone()), address).with_timeout(REQUEST_TIMEOUT);
    if let Some(token) = &args.token {
        client = client.with_token(token.clone());
    }
    Ok((client, transport))
}

/// `host:port` from `host:port` or `http(s)://host:port[/]`, and whether it is https.
fn split_url(node: &str) -> anyhow::Result<(bool, String)> {
    let (https, rest) = if let Some(rest) = node.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = node.strip_prefix("http://") {
        (false, rest)
    } else {
        (false, node)
    };
    let address = rest.trim_end_matches('/');
    if address.is_empty() || address.contains('/') || !address.contains(':') {
        anyhow::bail!("--node is host:port or http://host:port, got {node:?}");
    }
    Ok((https, address.to_owned()))
}

/// The first node's client address (else its address) in the configuration at `path`; the
/// local default when the file is missing or names none. Read without validating the rest of
/// the file: the CLI needs no secret.
fn default_node(path: &Path) -> String {
    config_nodes(path)
        .into_iter()
        .next()
        .unwrap_or_else(|| NODE_DEFAULT.to_owned())
}

/// Every node's client address (else its address) in the configuration at `path`, in order;
/// none when the file is missing or unreadable.
fn config_nodes(path: &Path) -> Vec<String> {
    let read = || -> Option<Vec<String>> {
        let text = std::fs::read_to_string(path).ok()?;
        let config: toml::Table = text.parse().ok()?;
        let nodes = config.get("nodes")?.as_array()?;
        let address = |node: &toml::Value| -> Option<String> {
            let node = node.as_table()?;
            let address = node.get("client_addr").or_else(|| node.get("addr"))?;
            Some(address.as_str()?.to_owned())
        };
        Some(nodes.iter().filter_map(address).collect())
    };
    read().unwrap_or_default()
}

async fn call(client: &Client, command: &InvCommand) -> Result<Output, ClientError> {
    let keyed = |key: &Option<String>| WriteOptions {
        idempotency_key: key.clone(),
        if_match: None,
    };
    let linearizable = Consistency::Linearizable;
    Ok(match command {
        InvCommand::Get { store, sku } => {
            Output::Record(client.read(store, sku, linearizable).await?.ok()?)
        }
        InvCommand::Create { store, sku, qty } => {
            let body = CreateRequest {
                sku: sku.clone(),
                store_id: store.clone(),
                initial_quantity: *qty,
            };
            Output::Created(client.create(&body, &WriteOptions::default()).await?.ok()?)
        }
        InvCommand::Adjust {
            store,
            sku,
            delta,
            if_version,
        } => {
            let body = AdjustRequest {
                delta: *delta,
                expected_version: *if_version,
            };
            let options = WriteOptions::default();
            Output::Change(client.adjust(store, sku, &body, &options).await?.ok()?)
        }
        InvCommand::Reserve {
            store,
            sku,
            qty,
            ttl,
            key,
        } => {
            let body = ReserveRequest {
                qty: *qty,
                expected_version: None,
                ttl_seconds: *ttl,
            };
            let options = keyed(key);
            Output::Change(client.reserve(store, sku, &body, &options).await?.ok()?)
        }
        InvCommand::Cart { lines, ttl, key } => {
            let body = CartRequest {
                lines: lines.clone(),
                ttl_seconds: *ttl,
            };
            Output::Reservation(client.cart(&body, &keyed(key)).await?.ok()?)
        }
        InvCommand::Commit { id, key } => {
            reservation(client.commit_reservation(id, &keyed(key)).await?)?
        }
        InvCommand::Release { id, key } => {
            reservation(client.release_reservation(id, &keyed(key)).await?)?
        }
        InvCommand::Reservation { id } => reservation(client.reservation(id, linearizable).await?)?,
        InvCommand::Sku { sku } => Output::Sku(client.sku_view(sku, linearizable).await?.ok()?),
        InvCommand::Events(_) => unreachable!("`inv events` is run by run_events"),
        InvCommand::Store {
            store,
            limit,
            after,
        } => {
            let page = client.store_page(store, *limit, after.as_deref(), linearizable);
            Output::Page(page.await?.ok()?)
        }
    })
}

fn reservation(answer: Answer<Envelope<ReservationBody>>) -> Result<Output, ClientError> {
    Ok(Output::Reservation(answer.ok()?))
}

/// The output as the API's JSON, or as a table.
fn render(output: &Output, json: bool) -> serde_json::Result<String> {
    if json {
        return Ok(match output {
            Output::Record(record) => pretty(record)?,
            Output::Created(created) => pretty(created)?,
            Output::Change(change) => pretty(change)?,
            Output::Reservation(reservation) => pretty(reservation)?,
            Output::Sku(view) => pretty(view)?,
            Output::Page(page) => pretty(page)?,
        });
    }
    Ok(match output {
        Output::Record(record) => records_table(std::slice::from_ref(record)),
        Output::Created(created) => records_table(std::slice::from_ref(&created.data)),
        Output::Change(change) => {
            let mut table = records_table(std::slice::from_ref(&change.record));
            if let Some(id) = &change.reservation_id {
                table.push_str(&format!("reservation {id}\n"));
            }
            table
        }
        Output::Reservation(reservation) => reservation_table(&reservation.data),
        Output::Sku(view) => {
            let totals = &view.data.totals;
            let mut table = records_table(&view.data.stores);
            table.push_str(&format!(
                "{:<20} {:<30} {:>10} {:>10} {:>10}\n",
                "TOTAL", view.data.sku, totals.qty, totals.reserved, totals.on_hand
            ));
            table
        }
        Output::Page(page) => {
            let mut table = records_table(&page.data.items);
            if let Some(next) = &page.data.next {
                table.push_str(&format!("next: --after {next}\n"));
            }
            table
        }
    })
}

fn pretty(value: &impl Serialize) -> serde_json::Result<String> {
    serde_json::to_string_pretty(value).map(|text| text + "\n")
}

fn records_table(records: &[RecordBody]) -> String {
    let mut table = format!(
        "{:<20} {:<30} {:>10} {:>10} {:>10} {:>8}  {}\n",
        "STORE", "SKU", "QTY", "RESERVED", "ON HAND", "VERSION", "UPDATED"
    );
    for record in records {
        table.push_str(&format!(
            "{:<20} {:<30} {:>10} {:>10} {:>10} {:>8}  {}\n",
            record.store_id,
            record.sku,
            record.qty,
            record.reserved,
            record.on_hand,
            record.version,
            record.updated_at
        ));
    }
    table
}

fn reservation_table(reservation: &ReservationBody) -> String {
    let mut table = format!(
        "reservation {} {}\ncreated {} | updated {} | expires {}\n",
        reservation.id,
        reservation.status,
        reservation.created_at,
        reservation.updated_at,
        reservation.expires_at
    );
    table.push_str(&format!("{:<20} {:<30} {:>10}\n", "STORE", "SKU", "QTY"));
    for line in &reservation.lines {
        table.push_str(&format!(
            "{:<20} {:<30} {:>10}\n",
            line.store_id, line.sku, line.qty
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Top {
        Inv(InvArgs),
    }

    fn parse(args: &[&str]) -> Result<InvArgs, clap::Error> {
        let Top::Inv(args) = Cli::try_parse_from(["stockraft", "inv"].iter().chain(args))?.command;
        Ok(args)
    }

    #[test]
    fn node_and_json_go_before_or_after_the_command() {
        for args in [
            &["--node", "n:1", "--json", "get", "s", "k"][..],
            &["get", "s", "k", "--node", "n:1", "--json"][..],
            &["--json", "get", "--node", "n:1", "s", "k"][..],
        ] {
            let parsed = parse(args).unwrap();
            assert_eq!(parsed.node.as_deref(), Some("n:1"), "{args:?}");
            assert!(parsed.json, "{args:?}");
        }
    }

    #[test]
    fn commands_read_their_arguments() {
        let parsed = parse(&["adjust", "s", "k", "-3", "--if-version", "2"]).unwrap();
        assert!(matches!(
            parsed.command,
            InvCommand::Adjust {
                delta: -3,
                if_version: Some(2),
                ..
            }
        ));
        let parsed = parse(&["cart", "s1:a:2", "s2:b:1", "--ttl", "60"]).unwrap();
        let InvCommand::Cart { lines, ttl, .. } = parsed.command else {
            panic!("not a cart");
        };
        assert_eq!(
            (lines.len(), lines[1].sku.as_str(), ttl),
            (2, "b", Some(60))
        );
        assert!(parse(&["cart", "s1:a"]).is_err());
        assert!(parse(&["cart", "s1:a:x"]).is_err());
        assert!(parse(&["cart"]).is_err());
    }

    #[test]
    fn a_node_is_host_port_or_a_url() {
        assert_eq!(split_url("h:1").unwrap(), (false, "h:1".to_owned()));
        assert_eq!(split_url("http://h:1/").unwrap(), (false, "h:1".to_owned()));
        assert_eq!(split_url("https://h:1").unwrap(), (true, "h:1".to_owned()));
        assert!(split_url("h").is_err());
        assert!(split_url("http://h:1/api").is_err());
    }

    #[test]
    fn the_default_node_is_the_first_client_address_of_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.toml");
        std::fs::write(
            &path,
            "[[nodes]]\nid = 1\naddr = \"10.0.0.1:22001\"\nclient_addr = \"10.0.0.1:8080\"\n\n\
             [[nodes]]\nid = 2\naddr = \"10.0.0.2:22001\"\n",
        )
        .unwrap();
        assert_eq!(default_node(&path), "10.0.0.1:8080");
        std::fs::write(&path, "[[nodes]]\nid = 1\naddr = \"10.0.0.1:22001\"\n").unwrap();
        assert_eq!(default_node(&path), "10.0.0.1:22001");
        assert_eq!(default_node(&dir.path().join("missing.toml")), NODE_DEFAULT);
        std::fs::write(
            &path,
            "[[nodes]]\nid = 1\naddr = \"a:1\"\n[[nodes]]\nid = 2\naddr = \"b:2\"\n",
        )
        .unwrap();
        assert_eq!(follow_nodes("b:2", &path), ["b:2", "a:1"]);
        assert_eq!(follow_nodes("c:3", &path), ["c:3", "a:1", "b:2"]);
    }
}
