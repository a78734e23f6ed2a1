//! The self-contained demo: real files, real fsyncs, every value checked
//! against an in-memory model after a simulated crash. Every write is
//! acknowledged only after the WAL's group commit (`Shard::sync_wal`);
//! the shard is then dropped without a checkpoint and reopened, and
//! replaying its WAL must bring back every acknowledged write.

use crate::Cli;
use crate::error::StoreError;
use crate::manifest::{Partitioning, ShardLayout};
use crate::page::PageSize;
use crate::shard::{Shard, ShardOptions};
use crate::table::TableId;
use crate::wal::{Op, WalConfig};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why the demo stopped.
#[derive(Debug, Error)]
pub enum DemoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad page size: {0}")]
    PageSize(#[from] crate::page::PageSizeError),
    #[error("verification failed: {0}")]
    Mismatch(String),
}

const USERS: TableId = TableId(0);
const EVENTS: TableId = TableId(1);

type Model = BTreeMap<(TableId, Vec<u8>), Vec<u8>>;

/// A small deterministic generator (xorshift64*), so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

fn key_of(i: u32) -> (TableId, Vec<u8>) {
    if i % 2 == 0 {
        (USERS, format!("user:{:08}", i / 2).into_bytes())
    } else {
        (EVENTS, format!("event:{:08}", i / 2).into_bytes())
    }
}

/// Writes acknowledged per WAL group commit while loading.
const GROUP: u32 = 64;

fn rate(n: usize, d: Duration) -> String {
    let s = d.as_secs_f64().max(1e-9);
    format!("{n} in {:.1} ms ({:.0}/s)", s * 1e3, n as f64 / s)
}

/// Runs the demo; see the `--help` text.
///
/// # Errors
/// A store operation failed or a value read back differs from the model.
pub fn run(cli: &Cli) -> Result<(), DemoError> {
    let (dir, temporary) = match &cli.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("store-demo-{}", std::process::id())),
            true,
        ),
    };
    fs::create_dir_all(&dir).map_err(|source| DemoError::Dir {
        path: dir.clone(),
        source,
    })?;
    let file = dir.join("shard-0.data");
    let result = demo(cli, &file);
    if temporary {
        let _ = fs::remove_dir_all(&dir);
    }
    result
}

fn options(cli: &Cli) -> Result<ShardOptions, DemoError> {
    Ok(ShardOptions {
        page_size: PageSize::new(cli.page_size)?,
        layout: ShardLayout {
            count: 1,
            index: 0,
            partitioning: Partitioning::Hash,
        },
        wal: WalConfig {
            segment_bytes: 8 << 20,
        },
        cache_bytes: usize::try_from(cli.cache_mb << 20).unwrap_or(usize::MAX),
    })
}

fn demo(cli: &Cli, file: &Path) -> Result<(), DemoError> {
    let opts = options(cli)?;
    println!(
        "store demo: {} ({} B pages, {} keys in 2 tables)",
        file.display(),
        cli.page_size,
        cli.keys
    );
    let mut shard = Shard::open(file, opts)?;
    // A directory from an earlier run: what it holds is the starting model.
    let mut model = existing(&shard)?;
    if !model.is_empty() {
        println!("reopened an existing store: {} keys", model.len());
    }
    load(&mut shard, &mut model, cli.keys)?;
    one_sync_each(&mut shard, &mut model)?;
    batch(&mut shard, &mut model)?;
    println!("{} dirty nodes in memory", shard.stats().dirty);
    let t = Instant::now();
    let seq = shard.checkpoint()?;
    println!(
        "checkpoint {seq}: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let st = shard.stats();
    println!(
        "file {} pages: {} free, {} freed but kept for the older checkpoint, \
         {} for this one",
        st.page_count, st.reusable, st.cooling, st.pending
    );
    delete_some(&mut shard, &mut model)?;
    scan_range(&shard, &model)?;
    let (segments, durable) = shard.wal_state();
    // The crash: everything since the checkpoint is only in the WAL.
    drop(shard);
    println!(
        "crash: shard dropped without a checkpoint ({durable} durable, {segments} WAL segment(s))"
    );
    let t = Instant::now();
    let mut shard = Shard::open(file, opts)?;
    let rec = shard.recovery();
    println!(
        "reopen: {:.1} ms, {} WAL records read, {} batches replayed past the checkpoint, \
         torn tail cut: {}",
        t.elapsed().as_secs_f64() * 1e3,
        rec.records,
        rec.replayed,
        if rec.truncated.is_some() { "yes" } else { "no" }
    );
    verify(&shard, &model)?;
    shard.checkpoint()?;
    random_gets(&shard, &model)?;
    let c = shard.stats().cache;
    println!(
        "page cache: {} frames ({:.1} MiB), {} resident; {} hits, {} misses, {} evictions, \
         {} invalidations",
        c.frames,
        (c.frames * cli.page_size as usize) as f64 / (1 << 20) as f64,
        c.resident,
        c.hits,
        c.misses,
        c.evictions,
        c.invalidations
    );
    let bytes = fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    println!(
        "ok: {} keys verified byte for byte after reopen; data file {:.1} MiB",
        model.len(),
        bytes as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// Everything in the demo's two tables.
fn existing(shard: &Shard) -> Result<Model, DemoError> {
    let mut model = Model::new();
    for table in [USERS, EVENTS] {
        let mut from = Some(Vec::new());
        while let Some(k) = from.take() {
            let batch = shard.scan(table, &k, 4096)?;
            for (k, v) in batch.entries {
                model.insert((table, k), v);
            }
            from = batch.resume;
        }
    }
    Ok(model)
}

/// Puts `keys` small values in a scrambled order, acknowledged in WAL
/// group commits of [`GROUP`], then three large ones, each acknowledged.
fn load(shard: &mut Shard, model: &mut Model, keys: u32) -> Result<(), DemoError> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t = Instant::now();
    let mut bytes = 0;
    let mut syncs = 0;
    for n in 0..keys {
        // A multiplicative permutation of 0..keys: not in key order.
        let i = ((n as u64 * 2_654_435_761) % keys as u64) as u32;
        let (table, key) = key_of(i);
        let len = 16 + (rng.next() % 185) as usize;
        let value = rng.bytes(len);
        bytes += len;
        shard.put(table, &key, &value)?;
        model.insert((table, key), value);
        if n % GROUP == GROUP - 1 || n == keys - 1 {
            shard.sync_wal()?;
            syncs += 1;
        }
    }
    let d = t.elapsed();
    println!(
        "put {} ({:.1} MiB of values), acknowledged in {syncs} group commits of {GROUP} \
         ({:.0} fdatasyncs/s)",
        rate(keys as usize, d),
        bytes as f64 / (1 << 20) as f64,
        syncs as f64 / d.as_secs_f64().max(1e-9)
    );
    let t = Instant::now();
    let mut big = 0;
    for (name, mib) in [("blob:a", 1usize), ("blob:b", 3), ("blob:c", 5)] {
        let value = rng.bytes(mib << 20);
        big += value.len();
        shard.put(EVENTS, name.as_bytes(), &value)?;
        shard.sync_wal()?;
        model.insert((EVENTS, name.as_bytes().to_vec()), value);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "put 3 large values ({} MiB) in {:.1} ms ({:.0} MiB/s)",
        big >> 20,
        secs * 1e3,
        (big >> 20) as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// 200 puts, each acknowledged by its own WAL sync: what group commit
/// saves.
fn one_sync_each(shard: &mut Shard, model: &mut Model) -> Result<(), DemoError> {
    let t = Instant::now();
    for i in 0..200u32 {
        let key = format!("single:{i:04}").into_bytes();
        let value = i.to_le_bytes().repeat(8);
        shard.put(USERS, &key, &value)?;
        shard.sync_wal()?;
        model.insert((USERS, key), value);
    }
    println!("put {} with one fdatasync each", rate(200, t.elapsed()));
    Ok(())
}

/// One atomic batch (one WAL record): 100 puts and a delete.
fn batch(shard: &mut Shard, model: &mut Model) -> Result<(), DemoError> {
    let keys: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("batch:{i:03}").into_bytes())
        .collect();
    let value = b"written in one atomic batch";
    let mut ops: Vec<Op<'_>> = keys
        .iter()
        .map(|key| Op::Put {
            table: EVENTS,
            key,
            value,
        })
        .collect();
    ops.push(Op::Delete {
        table: USERS,
        key: b"single:0000",
    });
    let lsn = shard.write_batch(&ops)?;
    shard.sync_wal()?;
    for key in keys {
        model.insert((EVENTS, key), value.to_vec());
    }
    model.remove(&(USERS, b"single:0000".to_vec()));
    println!("batch of 101 ops written atomically as {lsn}, acknowledged");
    Ok(())
}

/// Deletes every seventh small key, one large value, and overwrites
/// another large value with a smaller one.
fn delete_some(shard: &mut Shard, model: &mut Model) -> Result<(), DemoError> {
    let doomed: Vec<(TableId, Vec<u8>)> = model
        .keys()
        .filter(|(_, k)| !k.starts_with(b"blob:"))
        .step_by(7)
        .cloned()
        .collect();
    let t = Instant::now();
    for (table, key) in &doomed {
        if !shard.delete(*table, key)? {
            return Err(DemoError::Mismatch(format!(
                "{table}: {key:?} was not there"
            )));
        }
        model.remove(&(*table, key.clone()));
    }
    println!("delete {}", rate(doomed.len(), t.elapsed()));
    shard.delete(EVENTS, b"blob:b")?;
    model.remove(&(EVENTS, b"blob:b".to_vec()));
    let value = Rng(42).bytes(2 << 20);
    shard.put(EVENTS, b"blob:c", &value)?;
    model.insert((EVENTS, b"blob:c".to_vec()), value);
    let durable = shard.sync_wal()?;
    println!(
        "deleted blob:b (3 MiB), overwrote blob:c (5 MiB -> 2 MiB); acknowledged up to {durable}"
    );
    Ok(())
}

/// Scans `user:00010000..` in batches of 1000 through the resume key.
fn scan_range(shard: &Shard, model: &Model) -> Result<(), DemoError> {
    let start = b"user:00010000".to_vec();
    let want: Vec<_> = model
        .range((USERS, start.clone())..)
        .take_while(|((t, _), _)| *t == USERS)
        .take(5000)
        .map(|((_, k), v)| (k.clone(), v.clone()))
        .collect();
    let t = Instant::now();
    let mut got = Vec::new();
    let mut from = Some(start);
    while let Some(k) = from.take() {
        if got.len() >= want.len() {
            break;
        }
        let batch = shard.scan(USERS, &k, 1000.min(want.len() - got.len()))?;
        got.extend(batch.entries);
        from = batch.resume;
    }
    let d = t.elapsed();
    if got != want {
        return Err(DemoError::Mismatch(
            "range scan differs from the model".into(),
        ));
    }
    println!(
        "scan {} from user:00010000 in batches of 1000",
        rate(got.len(), d)
    );
    Ok(())
}

/// Point reads of random keys once every page is clean (just after a
/// checkpoint): the read path a server's GETs take, each from the root.
fn random_gets(shard: &Shard, model: &Model) -> Result<(), DemoError> {
    let keys: Vec<_> = model.iter().filter(|(_, v)| v.len() < 4096).collect();
    if keys.is_empty() {
        return Ok(());
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let n = 200_000;
    let t = Instant::now();
    for _ in 0..n {
        let ((table, key), value) = keys[(rng.next() % keys.len() as u64) as usize];
        if shard.get(*table, key)?.as_ref() != Some(value) {
            return Err(DemoError::Mismatch(format!("{table}: random get {key:?}")));
        }
    }
    println!(
        "get {} (random keys, clean pages after a checkpoint)",
        rate(n, t.elapsed())
    );
    Ok(())
}

/// Every model key by `get`, each table by a full scan, and the deleted
/// keys by `exists`.
fn verify(shard: &Shard, model: &Model) -> Result<(), DemoError> {
    let t = Instant::now();
    for ((table, key), value) in model {
        let got = shard.get(*table, key)?;
        if got.as_ref() != Some(value) {
            return Err(DemoError::Mismatch(format!("{table}: get {key:?}")));
        }
    }
    println!("get {}", rate(model.len(), t.elapsed()));
    let t = Instant::now();
    let mut scanned = 0;
    for table in [USERS, EVENTS] {
        let mut want = model
            .range((table, Vec::new())..)
            .take_while(|((t, _), _)| *t == table);
        let mut from = Some(Vec::new());
        while let Some(k) = from.take() {
            let batch = shard.scan(table, &k, 4096)?;
            for (k, v) in &batch.entries {
                match want.next() {
                    Some(((_, wk), wv)) if wk == k && wv == v => scanned += 1,
                    _ => return Err(DemoError::Mismatch(format!("{table}: scan at {k:?}"))),
                }
            }
            from = batch.resume;
        }
        if want.next().is_some() {
            return Err(DemoError::Mismatch(format!("{table}: scan ended early")));
        }
    }
    println!("scan {} (both tables, in full)", rate(scanned, t.elapsed()));
    let t = Instant::now();
    let mut absent = 0;
    for i in (0..50_000u32).step_by(7) {
        let (table, key) = key_of(i);
        let want = model.contains_key(&(table, key.clone()));
        if shard.exists(table, &key)? != want {
            return Err(DemoError::Mismatch(format!("{table}: exists {key:?}")));
        }
        absent += usize::from(!want);
    }
    println!(
        "exists checked ({absent} deleted keys absent) in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TempDir;

    #[test]
    fn the_demo_runs_twice_over_one_directory() {
        let dir = TempDir::new();
        let cli = Cli {
            command: None,
            dir: Some(dir.0.clone()),
            keys: 3000,
            page_size: 8192,
            cache_mb: 1,
        };
        run(&cli).unwrap();
        // The second run starts from what the first left.
        run(&cli).unwrap();
        assert!(dir.file("shard-0.data").exists());
    }
}
