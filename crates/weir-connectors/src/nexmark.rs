//! The Nexmark benchmark's event generator: the persons, auctions and bids of
//! an online auction site, built straight into Arrow columns.
//!
//! The model is the one of Beam's `NexmarkGenerator` and the `nexmark` crate.
//! Event `e` is a person, an auction or a bid by its place in a block of 50
//! (offset 0 a person, 1..=3 auctions, 4..=49 bids); ids, event times and the
//! persons and auctions a row refers to follow from `e` arithmetically, and
//! every random draw is a stateless hash of `(seed, e, draw index)`. So any
//! event can be generated on its own: a generator started at offset `k`
//! yields exactly the rows a generator started at 0 yields from event `k` on,
//! which is what lets a source replay from a checkpointed offset.
//!
//! Where Weir departs from the model, on purpose:
//! - Rows only refer to persons and auctions that already exist: the model's
//!   "leads" (bids on auctions up to 10 ids in the future) default to 0; set
//!   `nexmark.auction.id.lead` / `nexmark.person.id.lead` to 10 to restore them.
//! - Random strings (`extra`, item names, e-mail addresses) are windows into a
//!   fixed pool of random letters rather than fresh letters for every row:
//!   same alphabet and lengths, a copy instead of a draw per character.
//! - Vocabularies are lower case (`"or"`, `"seattle"`), as in the `nexmark`
//!   crate, so RisingWave's query texts find their rows.
//! - One generator, a constant rate: no rate shapes, no out-of-order groups.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use weir_common::arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use weir_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::ConnectorError;

/// Events per block: `PERSONS` persons, then `AUCTIONS` auctions, then bids.
const BLOCK: u64 = 50;
const PERSONS: u64 = 1;
const AUCTIONS: u64 = 3;
/// Ids start here so that small runs still meet the queries' constants.
const FIRST_PERSON_ID: u64 = 1000;
const FIRST_AUCTION_ID: u64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: u64 = 5;
/// Hot persons and auctions are the first of each run of this many ids.
const HOT_RUN: u64 = 100;
/// 2015-07-15 00:00:00 UTC, the fixed event time of event 0.
const DEFAULT_BASE_TIME_MS: i64 = 1_436_918_400_000;

const FIRST_NAMES: [&str; 11] = [
    "peter", "paul", "luke", "john", "saul", "vicky", "kate", "julie", "sarah", "deiter", "walter",
];
const LAST_NAMES: [&str; 9] = [
    "shultz", "abrams", "spencer", "white", "bartels", "walton", "smith", "jones", "noris",
];
const US_STATES: [&str; 6] = ["az", "ca", "id", "or", "wa", "wy"];
const US_CITIES: [&str; 10] = [
    "phoenix",
    "los angeles",
    "san francisco",
    "boise",
    "portland",
    "bend",
    "redmond",
    "seattle",
    "kent",
    "cheyenne",
];
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
/// Channels besides the hot ones: `channel-0` .. `channel-9999`.
const CHANNELS: usize = 10_000;

/// How the generator is configured; `Default` is the standard Nexmark model.
#[derive(Debug, Clone)]
pub struct NexmarkConfig {
    /// Events per second of event time: event `e` happens at
    /// `base_time_ms + e * 1000 / first_event_rate` (whole milliseconds).
    pub first_event_rate: u64,
    /// Wall-clock pace, in events per second, for the source that drives the
    /// generator; `None` means as fast as possible. The generator never waits.
    pub event_rate: Option<u64>,
    /// Events (of all three types) after which the stream ends; `None` for an
    /// unbounded stream.
    pub max_events: Option<u64>,
    /// Event time of event 0, in milliseconds since the Unix epoch. Fixed, so
    /// that runs are reproducible.
    pub base_time_ms: i64,
    /// Seed of every random draw.
    pub seed: u64,
    /// Most recent persons that auctions and bids pick from.
    pub num_active_people: u64,
    /// Most recent auctions that bids pick from.
    pub num_in_flight_auctions: u64,
    /// `1 - 1/ratio` of bids go to a hot auction.
    pub hot_auction_ratio: u64,
    /// `1 - 1/ratio` of bids come from a hot bidder.
    pub hot_bidders_ratio: u64,
    /// `1 - 1/ratio` of auctions come from a hot seller.
    pub hot_sellers_ratio: u64,
    /// `1 - 1/ratio` of bids come through one of the four hot channels.
    pub hot_channel_ratio: u64,
    /// Auction ids beyond the last one that bids may pick (the model: 10).
    pub auction_id_lead: u64,
    /// Person ids beyond the last one that auctions and bids may pick (the
    /// model: 10).
    pub person_id_lead: u64,
    /// Average size of a person in bytes; `extra` pads rows to it.
    pub avg_person_byte_size: u64,
    /// Average size of an auction in bytes; `extra` pads rows to it.
    pub avg_auction_byte_size: u64,
    /// Average size of a bid in bytes; `extra` pads rows to it.
    pub avg_bid_byte_size: u64,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        Self {
            first_event_rate: 10_000_000,
            event_rate: None,
            max_events: None,
            base_time_ms: DEFAULT_BASE_TIME_MS,
            seed: 0,
            num_active_people: 1000,
            num_in_flight_auctions: 100,
            hot_auction_ratio: 2,
            hot_bidders_ratio: 4,
            hot_sellers_ratio: 4,
            hot_channel_ratio: 2,
            auction_id_lead: 0,
            person_id_lead: 0,
            avg_person_byte_size: 200,
            avg_auction_byte_size: 500,
            avg_bid_byte_size: 100,
        }
    }
}

impl NexmarkConfig {
    /// From connector options. Keys follow RisingWave's nexmark source:
    /// `nexmark.event.num` or `max_events` (a bounded stream; negative means
    /// unbounded), `nexmark.event.rate` / `event_rate` /
    /// `nexmark.events.per.sec` or `nexmark.min.event.gap.in.ns` (wall-clock
    /// pace), `nexmark.first_event_rate` / `first_event_rate` /
    /// `nexmark.first.event.rate` (event-time rate), `seed`,
    /// `nexmark.base.time` (ms), the model's `nexmark.active.people`,
    /// `nexmark.in.flight.auctions`, `nexmark.hot.{auction,bidder,seller,channel}.ratio`,
    /// `nexmark.{auction,person}.id.lead`, `nexmark.avg.{person,auction,bid}.byte.size`,
    /// and the keys read by the source itself (`nexmark.table.type`,
    /// `nexmark.split.num`, `nexmark.max.chunk.size`), which are only checked.
    /// Any other `nexmark.*` key is an error; keys outside `nexmark.*` that are
    /// not listed belong to other layers and are ignored.
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<Self, ConnectorError> {
        let mut c = Self::default();
        for (key, value) in options {
            let v = value.trim();
            match key.to_ascii_lowercase().as_str() {
                "nexmark.event.num" | "max_events" => {
                    let n: i64 = parse(key, v)?;
                    c.max_events = u64::try_from(n).ok();
                }
                "nexmark.event.rate" | "event_rate" | "nexmark.events.per.sec" => {
                    c.event_rate = Some(positive(key, v)?);
                }
                "nexmark.min.event.gap.in.ns" => {
                    let gap: u64 = parse(key, v)?;
                    c.event_rate = (gap > 0).then(|| (1_000_000_000 / gap).max(1));
                }
                "nexmark.first_event_rate" | "first_event_rate" | "nexmark.first.event.rate" => {
                    c.first_event_rate = positive(key, v)?;
                }
                "seed" | "nexmark.seed" => c.seed = parse(key, v)?,
                "nexmark.base.time" => c.base_time_ms = parse(key, v)?,
                "nexmark.active.people" => c.num_active_people = positive(key, v)?,
                "nexmark.in.flight.auctions" => c.num_in_flight_auctions = positive(key, v)?,
                "nexmark.hot.auction.ratio" => c.hot_auction_ratio = positive(key, v)?,
                "nexmark.hot.bidder.ratio" => c.hot_bidders_ratio = positive(key, v)?,
                "nexmark.hot.seller.ratio" => c.hot_sellers_ratio = positive(key, v)?,
                "nexmark.hot.channel.ratio" => c.hot_channel_ratio = positive(key, v)?,
                "nexmark.auction.id.lead" => c.auction_id_lead = parse(key, v)?,
                "nexmark.person.id.lead" => c.person_id_lead = parse(key, v)?,
                "nexmark.avg.person.byte.size" => c.avg_person_byte_size = parse(key, v)?,
                "nexmark.avg.auction.byte.size" => c.avg_auction_byte_size = parse(key, v)?,
                "nexmark.avg.bid.byte.size" => c.avg_bid_byte_size = parse(key, v)?,
                "nexmark.table.type" => {
                    NexmarkTable::parse(v)?;
                }
                "nexmark.split.num" | "nexmark.max.chunk.size" => {
                    positive(key, v)?;
                }
                k if k.starts_with("nexmark.") => {
                    return Err(ConnectorError::Option(format!(
                        "unknown nexmark option \"{key}\""
                    )))
                }
                _ => {}
            }
        }
        Ok(c)
    }
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConnectorError> {
    value.parse().map_err(|_| {
        ConnectorError::Option(format!("invalid value \"{value}\" for option \"{key}\""))
    })
}

fn positive(key: &str, value: &str) -> Result<u64, ConnectorError> {
    match parse(key, value)? {
        0 => Err(ConnectorError::Option(format!(
            "option \"{key}\" must be positive"
        ))),
        n => Ok(n),
    }
}

/// Which Nexmark table a generator produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NexmarkTable {
    /// New users: `id, name, email_address, credit_card, city, state, date_time, extra`.
    Person,
    /// New auctions: `id, item_name, description, initial_bid, reserve,
    /// date_time, expires, seller, category, extra`.
    Auction,
    /// Bids: `auction, bidder, price, channel, url, date_time, extra`.
    Bid,
    /// All events in one stream; see [`schema`].
    Combined,
}

impl NexmarkTable {
    /// Parses a `nexmark.table.type` value, case-insensitively.
    pub fn parse(s: &str) -> Result<Self, ConnectorError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "person" => Ok(Self::Person),
            "auction" => Ok(Self::Auction),
            "bid" => Ok(Self::Bid),
            "combined" => Ok(Self::Combined),
            _ => Err(ConnectorError::Option(format!(
                "unknown nexmark table type \"{s}\" (expected Person, Auction, Bid or Combined)"
            ))),
        }
    }

    /// The offsets `lo..hi` within each block of 50 events that hold this
    /// table's events.
    fn block_range(self) -> (u64, u64) {
        match self {
            Self::Person => (0, PERSONS),
            Self::Auction => (PERSONS, PERSONS + AUCTIONS),
            Self::Bid => (PERSONS + AUCTIONS, BLOCK),
            Self::Combined => (0, BLOCK),
        }
    }

    /// Rows of this table among events `0..e`.
    fn rows_before(self, e: u64) -> u64 {
        let (lo, hi) = self.block_range();
        (e / BLOCK) * (hi - lo) + (e % BLOCK).clamp(lo, hi) - lo
    }
}

/// The Arrow schema of `table`. Columns and types are those of RisingWave's
/// nexmark source: BIGINT is `Int64`, VARCHAR `Utf8`, and TIMESTAMP is
/// `Timestamp(Nanosecond, None)`, which is what DataFusion 55 makes of a SQL
/// `TIMESTAMP` column (event times themselves are whole milliseconds). Every
/// field is nullable, as a column declared in SQL is, so that the schema
/// equals that of the same column list in a `CREATE` statement.
///
/// `Combined` is flat (no structs): `event_type INT` (0 person, 1 auction,
/// 2 bid), `date_time` (every event's time), then each table's columns but
/// `date_time`, prefixed with `person_`, `auction_` or `bid_` and null on the
/// rows of the other two types.
pub fn schema(table: NexmarkTable) -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
    let field = |name: &str, dt: &DataType| Field::new(name, dt.clone(), true);
    let fields: Vec<Field> = match table {
        NexmarkTable::Combined => {
            let mut fields = vec![
                field("event_type", &DataType::Int32),
                field("date_time", &ts),
            ];
            for (prefix, t) in [
                ("person_", NexmarkTable::Person),
                ("auction_", NexmarkTable::Auction),
                ("bid_", NexmarkTable::Bid),
            ] {
                fields.extend(
                    columns(t)
                        .iter()
                        .filter(|(name, _)| *name != "date_time")
                        .map(|(name, dt)| field(&format!("{prefix}{name}"), dt)),
                );
            }
            fields
        }
        t => columns(t)
            .iter()
            .map(|(name, dt)| field(name, dt))
            .collect(),
    };
    Arc::new(Schema::new(fields))
}

/// Column names and types of one of the three tables.
fn columns(table: NexmarkTable) -> Vec<(&'static str, DataType)> {
    let (int, text) = (DataType::Int64, DataType::Utf8);
    let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
    match table {
        NexmarkTable::Person => vec![
            ("id", int),
            ("name", text.clone()),
            ("email_address", text.clone()),
            ("credit_card", text.clone()),
            ("city", text.clone()),
            ("state", text.clone()),
            ("date_time", ts),
            ("extra", text),
        ],
        NexmarkTable::Auction => vec![
            ("id", int.clone()),
            ("item_name", text.clone()),
            ("description", text.clone()),
            ("initial_bid", int.clone()),
            ("reserve", int.clone()),
            ("date_time", ts.clone()),
            ("expires", ts),
            ("seller", int.clone()),
            ("category", int),
            ("extra", text),
        ],
        NexmarkTable::Bid => vec![
            ("auction", int.clone()),
            ("bidder", int.clone()),
            ("price", int),
            ("channel", text.clone()),
            ("url", text.clone()),
            ("date_time", ts),
            ("extra", text),
        ],
        NexmarkTable::Combined => Vec::new(),
    }
}

/// Where `date_time` sits among a table's columns.
fn date_time_index(table: NexmarkTable) -> usize {
    match table {
        NexmarkTable::Combined => 1,
        t => columns(t)
            .iter()
            .position(|(name, _)| *name == "date_time")
            .unwrap_or(0),
    }
}

/// Generates the rows of one Nexmark table, batch by batch, from an event id.
#[derive(Debug)]
pub struct NexmarkGenerator {
    model: Model,
    table: NexmarkTable,
    schema: SchemaRef,
    /// The next event id to look at.
    next: u64,
    /// One past the last event id (`max_events`).
    end: u64,
}

impl NexmarkGenerator {
    /// Generates `table` rows from event id `offset` on.
    pub fn new(config: NexmarkConfig, table: NexmarkTable, offset: u64) -> Self {
        let end = config.max_events.unwrap_or(u64::MAX);
        Self {
            model: Model::new(config),
            table,
            schema: schema(table),
            next: offset.min(end),
            end,
        }
    }

    /// The schema of the batches.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The event id the next batch starts from (the offset to checkpoint).
    pub fn offset(&self) -> u64 {
        self.next
    }

    /// The configured wall-clock pace in events per second (`event_rate`).
    pub fn event_rate(&self) -> Option<u64> {
        self.model.config.event_rate
    }

    /// Like [`NexmarkGenerator::next_batch`], but only rows of events before
    /// `limit`: an empty batch (and the offset moved to `limit`) when there
    /// are none left before it; `None` once `max_events` is reached.
    pub fn next_batch_before(
        &mut self,
        max_rows: usize,
        limit: u64,
    ) -> Result<Option<RecordBatch>, ConnectorError> {
        if self.table.rows_before(self.end) == self.table.rows_before(self.next) {
            self.next = self.end;
            return Ok(None);
        }
        let end = self.end;
        self.end = end.min(limit).max(self.next);
        let limited_end = self.end;
        let result = self.next_batch(max_rows);
        self.end = end;
        match result {
            Ok(None) => {
                self.next = limited_end;
                Ok(Some(RecordBatch::new_empty(self.schema())))
            }
            other => other,
        }
    }

    /// The event id after the last one (`max_events`), if bounded.
    pub fn end(&self) -> Option<u64> {
        self.model.config.max_events
    }

    /// The next batch with up to `max_rows` rows of this table (events of
    /// other types are skipped), or `None` once `max_events` is reached.
    pub fn next_batch(&mut self, max_rows: usize) -> Result<Option<RecordBatch>, ConnectorError> {
        let available = self.table.rows_before(self.end) - self.table.rows_before(self.next);
        let rows = usize::try_from(available).map_or(max_rows, |a| a.min(max_rows));
        if rows == 0 {
            if available == 0 {
                self.next = self.end;
                return Ok(None);
            }
            return Ok(Some(RecordBatch::new_empty(self.schema())));
        }
        let mut date_time = TimestampNanosecondBuilder::with_capacity(rows);
        let mut columns = match self.table {
            NexmarkTable::Person => {
                let mut c = PersonColumns::with_capacity(rows, &self.model);
                self.for_each_run(rows, |m, ids| {
                    each_event(m, ids, &mut date_time, |e, _| c.append(m, e));
                });
                c.finish()
            }
            NexmarkTable::Auction => {
                let mut c = AuctionColumns::with_capacity(rows, &self.model);
                self.for_each_run(rows, |m, ids| {
                    each_event(m, ids, &mut date_time, |e, ms| c.append(m, e, ms));
                });
                c.finish()
            }
            NexmarkTable::Bid => {
                let mut c = BidColumns::with_capacity(rows, &self.model);
                self.for_each_run(rows, |m, ids| {
                    each_event(m, ids, &mut date_time, |e, _| c.append(m, e));
                });
                c.finish()
            }
            NexmarkTable::Combined => self.combined(rows, &mut date_time),
        };
        columns.insert(date_time_index(self.table), Arc::new(date_time.finish()));
        Ok(Some(RecordBatch::try_new(self.schema(), columns)?))
    }

    /// Calls `run(model, ids)` for the next `rows` events of this table, in
    /// runs of consecutive events of one type, jumping over the other tables'
    /// events a block at a time; then advances the offset past the last one.
    fn for_each_run(&mut self, rows: usize, mut run: impl FnMut(&Model, Range<u64>)) {
        let (lo, hi) = self.table.block_range();
        let mut left = rows as u64;
        let mut e = self.next;
        while left > 0 && e < self.end {
            let off = e % BLOCK;
            if off < lo {
                e += lo - off;
                continue;
            }
            if off >= hi {
                e = e.saturating_add(BLOCK - off);
                continue;
            }
            // Only a `Combined` run can reach past its type's events.
            let type_end = match event_type(off) {
                0 => PERSONS,
                1 => PERSONS + AUCTIONS,
                _ => BLOCK,
            };
            let run_end = (e - off + type_end)
                .min(self.end)
                .min(e.saturating_add(left));
            run(&self.model, e..run_end);
            left -= run_end - e;
            e = run_end;
        }
        self.next = e.min(self.end);
    }

    /// The columns of a `Combined` batch but `date_time`.
    fn combined(
        &mut self,
        rows: usize,
        date_time: &mut TimestampNanosecondBuilder,
    ) -> Vec<ArrayRef> {
        let mut event_types = Int32Builder::with_capacity(rows);
        // Capacities for the expected mix: 1 person and 3 auctions per 46 bids.
        let mut person = PersonColumns::with_capacity(rows / 40 + 1, &self.model);
        let mut auction = AuctionColumns::with_capacity(rows / 12 + 1, &self.model);
        let mut bid = BidColumns::with_capacity(rows, &self.model);
        self.for_each_run(rows, |m, ids| {
            let n = (ids.end - ids.start) as usize;
            let kind = event_type(ids.start % BLOCK);
            event_types.append_value_n(kind, n);
            if kind != 0 {
                person.append_nulls(n);
            }
            if kind != 1 {
                auction.append_nulls(n);
            }
            if kind != 2 {
                bid.append_nulls(n);
            }
            match kind {
                0 => each_event(m, ids, date_time, |e, _| person.append(m, e)),
                1 => each_event(m, ids, date_time, |e, ms| auction.append(m, e, ms)),
                _ => each_event(m, ids, date_time, |e, _| bid.append(m, e)),
            }
        });
        let mut columns: Vec<ArrayRef> = vec![Arc::new(event_types.finish())];
        columns.extend(person.finish());
        columns.extend(auction.finish());
        columns.extend(bid.finish());
        columns
    }
}

/// The `event_type` of the event at `offset` in its block: 0 person,
/// 1 auction, 2 bid.
fn event_type(offset: u64) -> i32 {
    if offset < PERSONS {
        0
    } else if offset < PERSONS + AUCTIONS {
        1
    } else {
        2
    }
}

/// Calls `row(event id, event time in ms)` for each of `ids` and appends its
/// event time to `date_time`.
fn each_event(
    model: &Model,
    ids: Range<u64>,
    date_time: &mut TimestampNanosecondBuilder,
    mut row: impl FnMut(u64, i64),
) {
    let mut clock = Clock::at(model, ids.start);
    for e in ids {
        row(e, clock.ms);
        date_time.append_value(ms_to_ns(clock.ms));
        clock.advance();
    }
}

fn ms_to_ns(ms: i64) -> i64 {
    ms.saturating_mul(1_000_000)
}

/// The model's arithmetic: which persons and auctions exist at an event,
/// which ones a row picks, and its random draws.
#[derive(Debug, Clone)]
struct Model {
    config: NexmarkConfig,
    /// The seed, mixed once.
    seed_key: u64,
}

impl Model {
    fn new(mut config: NexmarkConfig) -> Self {
        // Zeros would divide by zero or leave nothing to pick; `from_options`
        // rejects them, a hand-built config gets the nearest valid value.
        for v in [
            &mut config.first_event_rate,
            &mut config.num_active_people,
            &mut config.hot_auction_ratio,
            &mut config.hot_bidders_ratio,
            &mut config.hot_sellers_ratio,
            &mut config.hot_channel_ratio,
        ] {
            *v = (*v).max(1);
        }
        let seed_key = mix64(config.seed ^ 0x6e65_786d_6172_6b00);
        Self { config, seed_key }
    }

    /// The random draws of event `e`.
    fn draws(&self, e: u64) -> Draws {
        Draws(mix64(self.seed_key ^ e.wrapping_mul(GOLDEN)))
    }

    /// Event time of event `e`, in milliseconds.
    fn time_ms(&self, e: u64) -> i64 {
        let since = u128::from(e) * 1000 / u128::from(self.config.first_event_rate);
        self.config
            .base_time_ms
            .saturating_add(i64::try_from(since).unwrap_or(i64::MAX))
    }

    /// The newest person (0-based) at event `e`: the one it creates, if any.
    /// With one person per block, the person of `e`'s block.
    fn last_person(e: u64) -> u64 {
        const _: () = assert!(PERSONS == 1);
        e / BLOCK
    }

    /// The newest auction (0-based) at event `e`, which must not be a person
    /// event of the first block.
    fn last_auction(e: u64) -> u64 {
        let (epoch, off) = (e / BLOCK, e % BLOCK);
        if off < PERSONS {
            (epoch * AUCTIONS).saturating_sub(1)
        } else {
            epoch * AUCTIONS + (off - PERSONS).min(AUCTIONS - 1)
        }
    }

    /// A random active person (0-based) for event `e`.
    fn pick_person(&self, e: u64, d: &mut Draws) -> u64 {
        let people = Self::last_person(e) + 1;
        let active = people.min(self.config.num_active_people);
        people - active + d.below(active + self.config.person_id_lead)
    }

    /// A random in-flight auction (0-based) for event `e`.
    fn pick_auction(&self, e: u64, d: &mut Draws) -> u64 {
        let newest = Self::last_auction(e);
        let oldest = newest.saturating_sub(self.config.num_in_flight_auctions);
        oldest + d.below(newest - oldest + 1 + self.config.auction_id_lead)
    }

    /// Length of `extra` for a row of `size` bytes to average `average` bytes.
    fn extra_len(size: usize, average: u64, d: &mut Draws) -> usize {
        let size = size as u64;
        if size > average {
            return 0;
        }
        let want = average - size;
        let delta = (want * 2 + 5) / 10; // round(want * 0.2)
        let len = want - delta + if delta == 0 { 0 } else { d.below(2 * delta) };
        usize::try_from(len).map_or(POOL_LEN, |l| l.min(POOL_LEN))
    }
}

/// Advances event time one event at a time without a division per event.
struct Clock {
    ms: i64,
    /// `e * 1000 % rate`.
    rem: u64,
    step_ms: i64,
    step_rem: u64,
    rate: u64,
}

impl Clock {
    fn at(model: &Model, e: u64) -> Self {
        let rate = model.config.first_event_rate;
        Self {
            ms: model.time_ms(e),
            rem: (u128::from(e) * 1000 % u128::from(rate)) as u64,
            step_ms: (1000 / rate) as i64,
            step_rem: 1000 % rate,
            rate,
        }
    }

    fn advance(&mut self) {
        self.ms = self.ms.saturating_add(self.step_ms);
        self.rem += self.step_rem;
        if self.rem >= self.rate {
            self.rem -= self.rate;
            self.ms = self.ms.saturating_add(1);
        }
    }
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The splitmix64 finalizer: a bijective mix of 64 bits.
const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The random draws of one event: a splitmix64 sequence whose start is a hash
/// of (seed, event id), so draw `i` of event `e` never depends on other events.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `0..n`, as an index.
    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// A price in cents, log-uniform over 1 .. 1,000,000 dollars
    /// (Beam: `round(10^(u * 6) * 100)`).
    fn price(&mut self) -> i64 {
        const SCALE: f64 = 6.0 * std::f64::consts::LN_10 / (1u64 << 53) as f64;
        let cents = ((self.next() >> 11) as f64 * SCALE).exp() * 100.0;
        // Rounds: `cents` is at least 100, and a cast truncates.
        (cents + 0.5) as i64
    }

    /// `len` random lower-case letters.
    fn letters(&mut self, len: usize) -> &'static str {
        window(LETTERS, len, self)
    }

    /// The model's `nextString(max)`: 3 to `max - 1` letters with some spaces,
    /// trimmed.
    fn words(&mut self, max: u64) -> &'static str {
        let len = 3 + self.below(max - 3) as usize;
        window(WORDS, len, self).trim_matches(' ')
    }
}

/// Size of the pools random strings are cut from (so also the longest one).
const POOL_LEN: usize = 8192;

/// A random window of `len` bytes of an ASCII `pool`.
fn window(pool: &'static str, len: usize, d: &mut Draws) -> &'static str {
    let len = len.min(pool.len());
    let start = d.index(pool.len() - len + 1);
    pool.get(start..start + len).unwrap_or("")
}

const fn pool(salt: u64, spaces: bool) -> [u8; POOL_LEN] {
    let mut out = [b'a'; POOL_LEN];
    let mut i = 0;
    while i < POOL_LEN {
        let r = mix64(salt.wrapping_add((i as u64 + 1).wrapping_mul(GOLDEN)));
        out[i] = if spaces && r.is_multiple_of(13) {
            b' '
        } else {
            b'a' + ((r >> 32) % 26) as u8
        };
        i += 1;
    }
    out
}

/// "0000" to "9999", four bytes each.
const fn four_digits() -> [u8; 40_000] {
    let mut out = [b'0'; 40_000];
    let mut n = 0;
    while n < 10_000 {
        out[4 * n] = b'0' + (n / 1000) as u8;
        out[4 * n + 1] = b'0' + (n / 100 % 10) as u8;
        out[4 * n + 2] = b'0' + (n / 10 % 10) as u8;
        out[4 * n + 3] = b'0' + (n % 10) as u8;
        n += 1;
    }
    out
}

const fn ascii(bytes: &'static [u8]) -> &'static str {
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(_) => panic!("generated pools are ASCII"),
    }
}

static LETTER_BYTES: [u8; POOL_LEN] = pool(1, false);
static WORD_BYTES: [u8; POOL_LEN] = pool(2, true);
static DIGIT_BYTES: [u8; 40_000] = four_digits();
/// Random lower-case letters.
static LETTERS: &str = ascii(&LETTER_BYTES);
/// Random lower-case letters and, one time in 13, a space.
static WORDS: &str = ascii(&WORD_BYTES);
static DIGITS: &str = ascii(&DIGIT_BYTES);

/// `n` (below 10,000) as four digits.
fn four(n: u64) -> &'static str {
    let i = n as usize * 4;
    DIGITS.get(i..i + 4).unwrap_or("0000")
}

/// The bid channels and their URLs, built once: entries `0..4` are the hot
/// channels, then `channel-0` .. `channel-9999`. Names and URLs are packed in
/// one buffer, each name next to its URL, so a lookup touches little memory.
struct Channels {
    text: String,
    /// Entry `i` is `text[bounds[2i]..bounds[2i + 1]]` (name) followed by
    /// `text[bounds[2i + 1]..bounds[2i + 2]]` (URL).
    bounds: Vec<usize>,
}

impl Channels {
    /// Name and URL of entry `i`.
    fn get(&self, i: usize) -> (&str, &str) {
        match self.bounds.get(2 * i..2 * i + 3) {
            Some(&[a, b, c]) => (
                self.text.get(a..b).unwrap_or(""),
                self.text.get(b..c).unwrap_or(""),
            ),
            _ => ("", ""),
        }
    }
}

fn channels() -> &'static Channels {
    static CHANNEL_TABLE: OnceLock<Channels> = OnceLock::new();
    CHANNEL_TABLE.get_or_init(|| {
        let entries = HOT_CHANNELS.len() + CHANNELS;
        let mut text = String::with_capacity(entries * 90);
        let mut bounds = Vec::with_capacity(2 * entries + 1);
        bounds.push(0);
        for i in 0..entries {
            let mut d = Draws(mix64(0x6368_616e ^ (i as u64).wrapping_mul(GOLDEN)));
            match HOT_CHANNELS.get(i) {
                Some(name) => text.push_str(name),
                None => {
                    let _ = write!(text, "channel-{}", i - HOT_CHANNELS.len());
                }
            }
            bounds.push(text.len());
            text.push_str("https://www.nexmark.com");
            for _ in 0..3 {
                text.push('/');
                for _ in 0..3 + d.below(2) {
                    let c = if d.below(13) == 0 {
                        '_'
                    } else {
                        char::from(b'a' + d.below(26) as u8)
                    };
                    text.push(c);
                }
            }
            text.push_str("/item.htm?query=1");
            // Nine in ten of the other channels carry their id in the URL.
            if let Some(n) = i.checked_sub(HOT_CHANNELS.len()) {
                if d.below(10) > 0 {
                    let id = i64::from((n as i32).reverse_bits()).abs();
                    let _ = write!(text, "&channel_id={id}");
                }
            }
            bounds.push(text.len());
        }
        Channels { text, bounds }
    })
}

/// Appends a value made of several pieces.
fn append_parts(b: &mut StringBuilder, parts: &[&str]) {
    for p in parts {
        let _ = b.write_str(p);
    }
    b.append_value("");
}

fn text(rows: usize, bytes_per_row: u64) -> StringBuilder {
    StringBuilder::with_capacity(rows, rows.saturating_mul(bytes_per_row as usize))
}

fn id(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Person columns but `date_time`.
struct PersonColumns {
    id: Int64Builder,
    name: StringBuilder,
    email_address: StringBuilder,
    credit_card: StringBuilder,
    city: StringBuilder,
    state: StringBuilder,
    extra: StringBuilder,
}

impl PersonColumns {
    fn with_capacity(rows: usize, m: &Model) -> Self {
        Self {
            id: Int64Builder::with_capacity(rows),
            name: text(rows, 14),
            email_address: text(rows, 16),
            credit_card: text(rows, 19),
            city: text(rows, 10),
            state: text(rows, 2),
            extra: text(rows, m.config.avg_person_byte_size * 5 / 4),
        }
    }

    fn append(&mut self, m: &Model, e: u64) {
        let mut d = m.draws(e);
        self.id
            .append_value(id(Model::last_person(e) + FIRST_PERSON_ID));
        let first = FIRST_NAMES[d.index(FIRST_NAMES.len())];
        let last = LAST_NAMES[d.index(LAST_NAMES.len())];
        append_parts(&mut self.name, &[first, " ", last]);
        let (user, domain) = (d.words(7), d.words(5));
        append_parts(&mut self.email_address, &[user, "@", domain, ".com"]);
        let mut card = d.next();
        let mut group = || {
            let wide = u128::from(card) * 10_000;
            card = wide as u64;
            four((wide >> 64) as u64)
        };
        let (g1, g2, g3, g4) = (group(), group(), group(), group());
        append_parts(&mut self.credit_card, &[g1, " ", g2, " ", g3, " ", g4]);
        let city = US_CITIES[d.index(US_CITIES.len())];
        let state = US_STATES[d.index(US_STATES.len())];
        self.city.append_value(city);
        self.state.append_value(state);
        let size = 8 + first.len() + 1 + last.len() + user.len() + domain.len() + 5 + 19;
        let len = Model::extra_len(
            size + city.len() + state.len(),
            m.config.avg_person_byte_size,
            &mut d,
        );
        self.extra.append_value(d.letters(len));
    }

    fn append_nulls(&mut self, n: usize) {
        self.id.append_nulls(n);
        for b in [
            &mut self.name,
            &mut self.email_address,
            &mut self.credit_card,
            &mut self.city,
            &mut self.state,
            &mut self.extra,
        ] {
            b.append_nulls(n);
        }
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.id.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.email_address.finish()),
            Arc::new(self.credit_card.finish()),
            Arc::new(self.city.finish()),
            Arc::new(self.state.finish()),
            Arc::new(self.extra.finish()),
        ]
    }
}

/// Auction columns but `date_time`.
struct AuctionColumns {
    id: Int64Builder,
    item_name: StringBuilder,
    description: StringBuilder,
    initial_bid: Int64Builder,
    reserve: Int64Builder,
    expires: TimestampNanosecondBuilder,
    seller: Int64Builder,
    category: Int64Builder,
    extra: StringBuilder,
}

impl AuctionColumns {
    fn with_capacity(rows: usize, m: &Model) -> Self {
        Self {
            id: Int64Builder::with_capacity(rows),
            item_name: text(rows, 12),
            description: text(rows, 52),
            initial_bid: Int64Builder::with_capacity(rows),
            reserve: Int64Builder::with_capacity(rows),
            expires: TimestampNanosecondBuilder::with_capacity(rows),
            seller: Int64Builder::with_capacity(rows),
            category: Int64Builder::with_capacity(rows),
            extra: text(rows, m.config.avg_auction_byte_size * 5 / 4),
        }
    }

    /// Appends auction event `e`, created at `ms`.
    fn append(&mut self, m: &Model, e: u64, ms: i64) {
        let c = &m.config;
        let mut d = m.draws(e);
        self.id
            .append_value(id(Model::last_auction(e) + FIRST_AUCTION_ID));
        let seller = if d.below(c.hot_sellers_ratio) > 0 {
            (Model::last_person(e) / HOT_RUN) * HOT_RUN
        } else {
            m.pick_person(e, &mut d)
        };
        self.seller.append_value(id(seller + FIRST_PERSON_ID));
        self.category
            .append_value(FIRST_CATEGORY_ID + d.below(NUM_CATEGORIES) as i64);
        let initial_bid = d.price();
        self.initial_bid.append_value(initial_bid);
        self.reserve.append_value(initial_bid + d.price());
        // Auctions last on average as long as it takes to create
        // `num_in_flight_auctions` more of them.
        let ahead = c.num_in_flight_auctions * BLOCK / AUCTIONS;
        let horizon = m.time_ms(e.saturating_add(ahead)).saturating_sub(ms);
        let length = 1 + d.below(horizon.saturating_mul(2).max(1) as u64) as i64;
        self.expires
            .append_value(ms_to_ns(ms.saturating_add(length)));
        let (name, description) = (d.words(20), d.words(100));
        self.item_name.append_value(name);
        self.description.append_value(description);
        let size = 8 + name.len() + description.len() + 40;
        let len = Model::extra_len(size, c.avg_auction_byte_size, &mut d);
        self.extra.append_value(d.letters(len));
    }

    fn append_nulls(&mut self, n: usize) {
        for b in [
            &mut self.id,
            &mut self.initial_bid,
            &mut self.reserve,
            &mut self.seller,
            &mut self.category,
        ] {
            b.append_nulls(n);
        }
        self.expires.append_nulls(n);
        for b in [&mut self.item_name, &mut self.description, &mut self.extra] {
            b.append_nulls(n);
        }
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.id.finish()),
            Arc::new(self.item_name.finish()),
            Arc::new(self.description.finish()),
            Arc::new(self.initial_bid.finish()),
            Arc::new(self.reserve.finish()),
            Arc::new(self.expires.finish()),
            Arc::new(self.seller.finish()),
            Arc::new(self.category.finish()),
            Arc::new(self.extra.finish()),
        ]
    }
}

/// Bid columns but `date_time`.
struct BidColumns {
    auction: Int64Builder,
    bidder: Int64Builder,
    price: Int64Builder,
    channel: StringBuilder,
    url: StringBuilder,
    extra: StringBuilder,
    channels: &'static Channels,
}

impl BidColumns {
    fn with_capacity(rows: usize, m: &Model) -> Self {
        Self {
            auction: Int64Builder::with_capacity(rows),
            bidder: Int64Builder::with_capacity(rows),
            price: Int64Builder::with_capacity(rows),
            channel: text(rows, 12),
            url: text(rows, 72),
            extra: text(rows, m.config.avg_bid_byte_size),
            channels: channels(),
        }
    }

    fn append(&mut self, m: &Model, e: u64) {
        let c = &m.config;
        let mut d = m.draws(e);
        let auction = if d.below(c.hot_auction_ratio) > 0 {
            (Model::last_auction(e) / HOT_RUN) * HOT_RUN
        } else {
            m.pick_auction(e, &mut d)
        };
        self.auction.append_value(id(auction + FIRST_AUCTION_ID));
        let bidder = if d.below(c.hot_bidders_ratio) > 0 {
            // The second person of the run, so hot bidders are not hot
            // sellers; without a lead, never a person yet to come.
            let newest = Model::last_person(e);
            ((newest / HOT_RUN) * HOT_RUN + 1).min(newest + c.person_id_lead)
        } else {
            m.pick_person(e, &mut d)
        };
        self.bidder.append_value(id(bidder + FIRST_PERSON_ID));
        self.price.append_value(d.price());
        let entry = if d.below(c.hot_channel_ratio) > 0 {
            d.index(HOT_CHANNELS.len())
        } else {
            HOT_CHANNELS.len() + d.index(CHANNELS)
        };
        let (channel, url) = self.channels.get(entry);
        self.channel.append_value(channel);
        self.url.append_value(url);
        let len = Model::extra_len(32, c.avg_bid_byte_size, &mut d);
        self.extra.append_value(d.letters(len));
    }

    fn append_nulls(&mut self, n: usize) {
        for b in [&mut self.auction, &mut self.bidder, &mut self.price] {
            b.append_nulls(n);
        }
        for b in [&mut self.channel, &mut self.url, &mut self.extra] {
            b.append_nulls(n);
        }
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.auction.finish()),
            Arc::new(self.bidder.finish()),
            Arc::new(self.price.finish()),
            Arc::new(self.channel.finish()),
            Arc::new(self.url.finish()),
            Arc::new(self.extra.finish()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use weir_common::arrow::array::{Array, AsArray, Int32Array, Int64Array};
    use weir_common::arrow::compute::concat_batches;
    use weir_common::arrow::datatypes::{Int32Type, Int64Type, TimestampNanosecondType};

    use super::*;

    const ALL: [NexmarkTable; 4] = [
        NexmarkTable::Person,
        NexmarkTable::Auction,
        NexmarkTable::Bid,
        NexmarkTable::Combined,
    ];

    fn config(max_events: u64) -> NexmarkConfig {
        NexmarkConfig {
            max_events: Some(max_events),
            ..NexmarkConfig::default()
        }
    }

    /// All batches of `table` from `offset` on, concatenated.
    fn generate(c: &NexmarkConfig, table: NexmarkTable, offset: u64, batch: usize) -> RecordBatch {
        let mut g = NexmarkGenerator::new(c.clone(), table, offset);
        let mut batches = Vec::new();
        while let Some(b) = g.next_batch(batch).unwrap() {
            assert!(b.num_rows() <= batch);
            assert_eq!(b.schema(), schema(table));
            batches.push(b);
        }
        concat_batches(&schema(table), &batches).unwrap()
    }

    fn int64<'a>(b: &'a RecordBatch, name: &str) -> &'a Int64Array {
        b.column_by_name(name).unwrap().as_primitive::<Int64Type>()
    }

    fn ts(b: &RecordBatch, name: &str) -> Vec<i64> {
        let a = b.column_by_name(name).unwrap();
        a.as_primitive::<TimestampNanosecondType>()
            .values()
            .to_vec()
    }

    #[test]
    fn proportions_and_sequential_ids() {
        let c = config(50_000);
        let all = generate(&c, NexmarkTable::Combined, 0, 4096);
        let types: &Int32Array = all.column(0).as_primitive::<Int32Type>();
        let count = |t| types.values().iter().filter(|&&v| v == t).count();
        assert_eq!((count(0), count(1), count(2)), (1000, 3000, 46000));
        for (i, t) in types.values().iter().enumerate() {
            let expected = match i % 50 {
                0 => 0,
                1..=3 => 1,
                _ => 2,
            };
            assert_eq!(*t, expected, "event {i}");
        }
        let persons = generate(&c, NexmarkTable::Person, 0, 333);
        let ids: Vec<i64> = int64(&persons, "id").values().to_vec();
        assert_eq!(ids, (1000..2000).collect::<Vec<_>>());
        let auctions = generate(&c, NexmarkTable::Auction, 0, 1000);
        let ids: Vec<i64> = int64(&auctions, "id").values().to_vec();
        assert_eq!(ids, (1000..4000).collect::<Vec<_>>());
        assert_eq!(generate(&c, NexmarkTable::Bid, 0, 8192).num_rows(), 46_000);
        // Combined columns agree with the per-table ones.
        let person_ids = int64(&all, "person_id");
        assert_eq!(person_ids.null_count(), 49_000);
        assert_eq!(person_ids.value(50), 1001);
        assert_eq!(int64(&all, "auction_id").value(52), 1004);
    }

    #[test]
    fn any_offset_replays_the_same_rows() {
        let c = config(20_000);
        for table in ALL {
            let full = generate(&c, table, 0, 8192);
            for offset in [0, 1, 3, 4, 5, 49, 50, 51, 777, 8193, 12_345, 19_999, 20_000] {
                for batch in [13, 100, 8192] {
                    let part = generate(&c, table, offset, batch);
                    let skip = table.rows_before(offset) as usize;
                    assert_eq!(
                        part,
                        full.slice(skip, full.num_rows() - skip),
                        "{table:?} from {offset} in batches of {batch}"
                    );
                }
            }
        }
    }

    #[test]
    fn resuming_from_the_checkpointed_offset_continues_the_stream() {
        let c = config(10_000);
        for table in ALL {
            let full = generate(&c, table, 0, 8192);
            let mut g = NexmarkGenerator::new(c.clone(), table, 0);
            let mut batches = vec![g.next_batch(37).unwrap().unwrap()];
            let mut resumed = NexmarkGenerator::new(c.clone(), table, g.offset());
            while let Some(b) = resumed.next_batch(501).unwrap() {
                batches.push(b);
            }
            assert_eq!(
                concat_batches(&schema(table), &batches).unwrap(),
                full,
                "{table:?}"
            );
        }
    }

    #[test]
    fn bids_reference_existing_auctions_and_persons() {
        let all = generate(&config(200_000), NexmarkTable::Combined, 0, 8192);
        let types = all.column(0).as_primitive::<Int32Type>();
        let (persons, auctions) = (int64(&all, "person_id"), int64(&all, "auction_id"));
        let sellers = int64(&all, "auction_seller");
        let (bid_auction, bidder) = (int64(&all, "bid_auction"), int64(&all, "bid_bidder"));
        let (mut last_person, mut last_auction) = (0, 0);
        let (mut bids, mut hot) = (0, 0);
        for i in 0..all.num_rows() {
            match types.value(i) {
                0 => last_person = persons.value(i),
                1 => {
                    last_auction = auctions.value(i);
                    assert!((1000..=last_person).contains(&sellers.value(i)));
                }
                _ => {
                    let a = bid_auction.value(i);
                    assert!((1000..=last_auction).contains(&a), "bid {i} on {a}");
                    assert!((1000..=last_person).contains(&bidder.value(i)), "bid {i}");
                    bids += 1;
                    hot += usize::from((a - 1000) % 100 == 0);
                }
            }
        }
        // Half of the bids go to the hot auction of the current run of 100.
        let share = hot as f64 / bids as f64;
        assert!((0.45..0.56).contains(&share), "hot share {share}");
    }

    #[test]
    fn prices_are_log_uniform_and_times_follow_the_rate() {
        let c = NexmarkConfig {
            first_event_rate: 1000,
            ..config(100_000)
        };
        let bids = generate(&c, NexmarkTable::Bid, 0, 8192);
        let prices = int64(&bids, "price");
        let mut decades = [0usize; 7];
        for p in prices.values() {
            assert!(*p >= 100 && *p <= 100_000_000, "price {p}");
            decades[((*p as f64).log10().floor() as usize - 2).min(6)] += 1;
        }
        for d in &decades[..6] {
            let share = *d as f64 / prices.len() as f64;
            assert!((0.14..0.19).contains(&share), "decades {decades:?}");
        }

        // One event per millisecond at 1000 events/s.
        let all = generate(&c, NexmarkTable::Combined, 0, 8192);
        let base = DEFAULT_BASE_TIME_MS * 1_000_000;
        for (e, t) in ts(&all, "date_time").iter().enumerate() {
            assert_eq!(*t, base + e as i64 * 1_000_000);
        }
        // 10M events/s: 10,000 events per millisecond, from event 123,456 on.
        let fast = NexmarkConfig {
            first_event_rate: 10_000_000,
            ..config(200_000)
        };
        let part = generate(&fast, NexmarkTable::Combined, 123_456, 1000);
        for (i, t) in ts(&part, "date_time").iter().enumerate() {
            let e = 123_456 + i as i64;
            assert_eq!(*t, base + e / 10_000 * 1_000_000);
        }
        let auctions = generate(&c, NexmarkTable::Auction, 0, 8192);
        for (t, x) in ts(&auctions, "date_time")
            .iter()
            .zip(ts(&auctions, "expires"))
        {
            assert!(x > *t);
        }
    }

    #[test]
    fn max_events_bounds_the_stream() {
        let mut g = NexmarkGenerator::new(config(1000), NexmarkTable::Bid, 0);
        let mut rows = 0;
        while let Some(b) = g.next_batch(64).unwrap() {
            rows += b.num_rows();
        }
        assert_eq!(rows, 20 * 46);
        assert_eq!(g.offset(), 1000);
        assert!(g.next_batch(64).unwrap().is_none());
        // A bound inside a block, and a table with nothing left before it.
        assert_eq!(generate(&config(10), NexmarkTable::Bid, 0, 8).num_rows(), 6);
        assert_eq!(
            generate(&config(60), NexmarkTable::Person, 1, 8).num_rows(),
            1
        );
        assert_eq!(
            generate(&config(50), NexmarkTable::Person, 1, 8).num_rows(),
            0
        );
    }

    #[test]
    fn schemas_match_batches_and_strings_follow_the_model() {
        for table in ALL {
            let b = generate(&config(2000), table, 0, 512);
            assert_eq!(b.schema(), schema(table));
            assert!(b.num_rows() > 0);
        }
        assert_eq!(
            schema(NexmarkTable::Auction).field(5).data_type(),
            &DataType::Timestamp(TimeUnit::Nanosecond, None)
        );
        let persons = generate(&config(50_000), NexmarkTable::Person, 0, 8192);
        let column = |name| {
            persons
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        for i in 0..persons.num_rows() {
            let card = column("credit_card").value(i).to_string();
            assert_eq!(card.len(), 19);
            assert!(card
                .split(' ')
                .all(|g| g.len() == 4 && g.bytes().all(|c| c.is_ascii_digit())));
            assert!(US_STATES.contains(&column("state").value(i)));
            assert!(US_CITIES.contains(&column("city").value(i)));
            let name = column("name").value(i).to_string();
            let (first, last) = name.split_once(' ').unwrap();
            assert!(FIRST_NAMES.contains(&first) && LAST_NAMES.contains(&last));
            assert!(column("email_address").value(i).ends_with(".com"));
        }
        let bids = generate(&config(5000), NexmarkTable::Bid, 0, 8192);
        let channel = bids.column_by_name("channel").unwrap().as_string::<i32>();
        let url = bids.column_by_name("url").unwrap().as_string::<i32>();
        let extra = bids.column_by_name("extra").unwrap().as_string::<i32>();
        let hot = channel
            .iter()
            .flatten()
            .filter(|c| HOT_CHANNELS.contains(c))
            .count();
        assert!(hot > bids.num_rows() * 2 / 5 && hot < bids.num_rows() * 3 / 5);
        assert!(url
            .iter()
            .flatten()
            .all(|u| u.starts_with("https://www.nexmark.com/")));
        // Bids average 100 bytes: 32 of numbers and 54..=81 of extra.
        assert!(extra.iter().flatten().all(|x| (54..=81).contains(&x.len())));
    }

    #[test]
    fn seeds_change_the_data_but_not_the_ids() {
        let a = generate(&config(5000), NexmarkTable::Bid, 0, 8192);
        let other = NexmarkConfig {
            seed: 7,
            ..config(5000)
        };
        let b = generate(&other, NexmarkTable::Bid, 0, 8192);
        assert_ne!(int64(&a, "price"), int64(&b, "price"));
        assert_eq!(ts(&a, "date_time"), ts(&b, "date_time"));
    }

    #[test]
    fn options() {
        let opts = |pairs: &[(&str, &str)]| {
            let map: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            NexmarkConfig::from_options(&map)
        };
        let c = opts(&[
            ("connector", "nexmark"),
            ("nexmark.table.type", "Bid"),
            ("nexmark.event.num", "1000"),
            ("nexmark.first_event_rate", "5000"),
            ("event_rate", "200"),
            ("seed", "42"),
        ])
        .unwrap();
        assert_eq!(c.max_events, Some(1000));
        assert_eq!(c.first_event_rate, 5000);
        assert_eq!(c.event_rate, Some(200));
        assert_eq!(c.seed, 42);
        let c = opts(&[("max_events", "-1"), ("first_event_rate", "7")]).unwrap();
        assert_eq!((c.max_events, c.first_event_rate), (None, 7));
        let c = opts(&[("nexmark.min.event.gap.in.ns", "100000")]).unwrap();
        assert_eq!(c.event_rate, Some(10_000));
        assert!(opts(&[("nexmark.bogus", "1")]).is_err());
        assert!(opts(&[("nexmark.event.num", "ten")]).is_err());
        assert!(opts(&[("first_event_rate", "0")]).is_err());
        assert!(opts(&[("nexmark.table.type", "Bids")]).is_err());
        assert_eq!(
            NexmarkTable::parse("AUCTION").unwrap(),
            NexmarkTable::Auction
        );
        assert_eq!(
            NexmarkTable::parse("combined").unwrap(),
            NexmarkTable::Combined
        );
        assert!(NexmarkTable::parse("people").is_err());
    }
}
