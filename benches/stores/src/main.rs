//! What a durable outbox asks of its store, measured for each candidate on this machine:
//! an app's `send_durable` returns once its message is on the disk, so the cost that
//! matters is one durable commit of one small record (latency, p50 and p99, and how many
//! such commits a second), then how many records a second when commits are grouped (a
//! burst of sends, or deletes of acknowledged ones), and the bytes left on disk after
//! every record was deleted.
//!
//! `cargo run --release --manifest-path benches/stores/Cargo.toml [single] [batched]`
//! (from the workspace root; the folder is made under the current directory, on the
//! real disk, since a tmpfs would make every sync free).

use std::path::Path;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error>;

/// One candidate: put records durably, one commit each or many per commit, and delete.
trait Store {
    fn put(&mut self, key: u64, value: &[u8]) -> Result<(), Error>;
    fn put_batch(&mut self, keys: std::ops::Range<u64>, value: &[u8]) -> Result<(), Error>;
    fn delete_batch(&mut self, keys: std::ops::Range<u64>) -> Result<(), Error>;
}

struct Redb {
    db: redb::Database,
}

const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("outbox");

impl Store for Redb {
    fn put(&mut self, key: u64, value: &[u8]) -> Result<(), Error> {
        let tx = self.db.begin_write()?;
        tx.open_table(TABLE)?.insert(key, value)?;
        tx.commit()?;
        Ok(())
    }
    fn put_batch(&mut self, keys: std::ops::Range<u64>, value: &[u8]) -> Result<(), Error> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(TABLE)?;
            for key in keys {
                table.insert(key, value)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
    fn delete_batch(&mut self, keys: std::ops::Range<u64>) -> Result<(), Error> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(TABLE)?;
            for key in keys {
                table.remove(key)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

struct Fjall {
    keyspace: fjall::Keyspace,
    outbox: fjall::PartitionHandle,
}

impl Store for Fjall {
    fn put(&mut self, key: u64, value: &[u8]) -> Result<(), Error> {
        self.outbox.insert(key.to_be_bytes(), value)?;
        self.keyspace.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }
    fn put_batch(&mut self, keys: std::ops::Range<u64>, value: &[u8]) -> Result<(), Error> {
        let mut batch = self.keyspace.batch();
        for key in keys {
            batch.insert(&self.outbox, key.to_be_bytes(), value);
        }
        batch.commit()?;
        self.keyspace.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }
    fn delete_batch(&mut self, keys: std::ops::Range<u64>) -> Result<(), Error> {
        let mut batch = self.keyspace.batch();
        for key in keys {
            batch.remove(&self.outbox, key.to_be_bytes());
        }
        batch.commit()?;
        self.keyspace.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }
}

struct Sqlite {
    db: rusqlite::Connection,
}

impl Store for Sqlite {
    fn put(&mut self, key: u64, value: &[u8]) -> Result<(), Error> {
        self.db.execute(
            "INSERT INTO outbox (id, body) VALUES (?1, ?2)",
            rusqlite::params![key as i64, value],
        )?;
        Ok(())
    }
    fn put_batch(&mut self, keys: std::ops::Range<u64>, value: &[u8]) -> Result<(), Error> {
        let tx = self.db.transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO outbox (id, body) VALUES (?1, ?2)")?;
            for key in keys {
                insert.execute(rusqlite::params![key as i64, value])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
    fn delete_batch(&mut self, keys: std::ops::Range<u64>) -> Result<(), Error> {
        let tx = self.db.transaction()?;
        tx.execute(
            "DELETE FROM outbox WHERE id >= ?1 AND id < ?2",
            rusqlite::params![keys.start as i64, keys.end as i64],
        )?;
        tx.commit()?;
        Ok(())
    }
}

fn open(name: &str, dir: &Path) -> Result<Box<dyn Store>, Error> {
    Ok(match name {
        "redb" => Box::new(Redb {
            db: redb::Database::create(dir.join("outbox.redb"))?,
        }),
        "fjall" => {
            let keyspace = fjall::Config::new(dir.join("fjall")).open()?;
            let outbox =
                keyspace.open_partition("outbox", fjall::PartitionCreateOptions::default())?;
            Box::new(Fjall { keyspace, outbox })
        }
        _ => {
            let db = rusqlite::Connection::open(dir.join("outbox.sqlite"))?;
            // WAL with a sync at every commit: durable, as send_durable promises.
            db.pragma_update(None, "journal_mode", "WAL")?;
            db.pragma_update(None, "synchronous", "FULL")?;
            db.execute_batch(
                "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, body BLOB NOT NULL)",
            )?;
            Box::new(Sqlite { db })
        }
    })
}

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let single: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1_000);
    let batched: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    const GROUP: u64 = 100;
    let value = [7u8; 64];
    println!(
        "durable commits of 64-byte records: {single} one per commit, then {batched} in commits of {GROUP}, then all deleted in commits of {GROUP}"
    );
    println!(
        "  {:<8} {:>10} {:>10} {:>12} {:>14} {:>14} {:>12}",
        "store", "p50", "p99", "commits/s", "batched rec/s", "deletes rec/s", "left on disk"
    );
    for name in ["redb", "fjall", "sqlite"] {
        let dir = tempfile::tempdir_in(".")?;
        let mut store = open(name, dir.path())?;
        let mut times = Vec::with_capacity(single as usize);
        let start = Instant::now();
        for key in 0..single {
            let t = Instant::now();
            store.put(key, &value)?;
            times.push(t.elapsed());
        }
        let single_rate = single as f64 / start.elapsed().as_secs_f64();
        times.sort();
        let start = Instant::now();
        let mut key = single;
        while key < single + batched {
            store.put_batch(key..key + GROUP, &value)?;
            key += GROUP;
        }
        let batched_rate = batched as f64 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut key = 0;
        while key < single + batched {
            store.delete_batch(key..key + GROUP)?;
            key += GROUP;
        }
        let delete_rate = (single + batched) as f64 / start.elapsed().as_secs_f64();
        drop(store);
        println!(
            "  {:<8} {:>10.1?} {:>10.1?} {:>12.0} {:>14.0} {:>14.0} {:>10} KiB",
            name,
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            single_rate,
            batched_rate,
            delete_rate,
            dir_bytes(dir.path()) / 1024
        );
    }
    Ok(())
}
