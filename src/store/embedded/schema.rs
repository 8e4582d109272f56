//! The redb tables of the embedded store. Their names and layouts are the stored data's:
//! changing one makes an existing file unreadable (or drops its contents, as [`create_tables`]
//! does for the legacy tables).

use redb::{Database, MultimapTableDefinition, TableDefinition};

/// The cold tier of the de-duplication marks (the hot one is in memory, see `log.rs`): (the
/// event's CreateTime in unix seconds, event id) → unix second at which the mark expires. WeChat's retries repeat the CreateTime, so the exact key is
/// known on lookup; leading with time keeps the inserts of a commit in the newest leaf pages
/// instead of scattering them over the tree (a random-id key dirtied one page per callback,
/// two `pwrite`s per callback in all), and lets pruning read the oldest keys first with no
/// second index.
pub(super) const SEEN: TableDefinition<(u64, &str), u64> = TableDefinition::new("seen_by_time");
/// The layout before `SEEN` (id → expiry, plus an expiry index): dropped on open.
pub(super) const LEGACY_SEEN: TableDefinition<&str, u64> = TableDefinition::new("seen");
pub(super) const LEGACY_SEEN_BY_EXPIRY: TableDefinition<&[u8], ()> =
    TableDefinition::new("seen_by_expiry");
/// Sequence number → (unix ms when enqueued, encoded `pb::Event`): the outbox of a store
/// written before the log (`log.rs`) held it; moved into the log and dropped on open.
pub(super) const OUTBOX: TableDefinition<u64, (u64, &[u8])> = TableDefinition::new("outbox");
/// Sequence number → (unix s when dead-lettered, reason, encoded `pb::Event`), oldest first.
pub(super) const DEAD: TableDefinition<u64, (u64, &str, &[u8])> =
    TableDefinition::new("dead_letters");
/// Event id → its sequence numbers in [`DEAD`], so a replay needs no scan. A multimap because an
/// id can be dead-lettered twice when it was recorded again after its mark expired.
pub(super) const DEAD_BY_ID: MultimapTableDefinition<&str, u64> =
    MultimapTableDefinition::new("dead_letters_by_id");
/// `<account> 0x1f <scene>` → the JSON of its [`SceneRecord`].
pub(super) const SCENES: TableDefinition<&str, &[u8]> = TableDefinition::new("scenes");
/// (account, version number) → the JSON of its [`MenuVersion`], so one account's versions are
/// one range, in order.
pub(super) const MENU_VERSIONS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("menu_versions");
/// `(account, kind, id)` → a document as [`super::encode_doc`] lays it out.
pub(super) const DOCS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("docs");
/// Counters: [`NEXT_SEQ`], and the mark compactor's watermark (`marks.rs`).
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The next sequence number for [`DEAD`] (and, before the log, the outbox: the log's numbers
/// continue from it). Never reused.
pub(super) const NEXT_SEQ: &str = "next_seq";

/// Creates every table, so that read transactions find them in a new file.
pub(super) fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(SEEN)?;
    txn.delete_table(LEGACY_SEEN)?;
    txn.delete_table(LEGACY_SEEN_BY_EXPIRY)?;
    txn.open_table(DEAD)?;
    txn.open_multimap_table(DEAD_BY_ID)?;
    txn.open_table(META)?;
    txn.open_table(SCENES)?;
    txn.open_table(MENU_VERSIONS)?;
    txn.open_table(DOCS)?;
    txn.commit()?;
    Ok(())
}
