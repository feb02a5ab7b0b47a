//! The writer's VFS: SQLite's own, except that a commit's log writes reach the kernel
//! together.
//!
//! SQLite writes each WAL frame with two `pwrite`s (its 24-byte header, then the page),
//! so a commit of 36 pages costs 72 system calls, and each pays the kernel's per-call
//! and per-page work: at fan-out 1 that was 8 % of Herald's CPU. This VFS wraps the
//! platform's default VFS and changes one thing. On a WAL file, writes that continue
//! one another are gathered in memory, and passed on as one write before anything that
//! depends on them (a sync, a read, a size query, a truncation, a file control, a
//! close), before a write elsewhere in the file, and once [`MOST_GATHERED`] bytes wait,
//! in as few writes as the default VFS takes ([`MOST_PER_WRITE`]).
//! Every other file, and every other call, goes straight to the default VFS.
//!
//! **Durability is unchanged**, given the writer's `synchronous = FULL` (checked when
//! its connection opens, [`require_full_sync`]):
//!
//! - A commit's frames are gathered and passed on by the sync that makes them durable,
//!   before it syncs. SQLite adds them to the WAL index, where other connections find
//!   them, only after that sync returns.
//! - Frames SQLite spills before a commit (a transaction larger than the page cache)
//!   are in the index at once, but only this connection reads them before the commit,
//!   and its reads pass the gathered bytes on first.
//! - Bytes are never left behind when the WAL write lock is released: the database
//!   file's unlock of that lock passes its log's gathered bytes on first (a rolled-back
//!   transaction's spilled frames, which SQLite would have written anyway), and so
//!   does the database file's own unlock (in exclusive locking mode, SQLite takes no
//!   WAL locks). Otherwise they could be written later, over frames another
//!   connection committed meanwhile.
//! - A log is gathered only when its database file is open through this VFS (for the
//!   unlocks above) and the device overwrites safely (`POWERSAFE_OVERWRITE`, the
//!   default on Unix): otherwise SQLite pads a commit's last frame after the sync.
//! - A failure to pass bytes on answers `SQLITE_IOERR_WRITE` wherever it happens, and
//!   SQLite rolls back the whole transaction on an I/O error (a "disk full" answer
//!   could make it undo only the statement and go on with frames it believes written).
//!
//! The one `unsafe` module of Herald: a VFS is a table of C functions. SQLite's list of
//! VFSes is process-wide, so this one is registered once per process, by name, and
//! used only by the connections that ask for it (the writer's).
#![allow(unsafe_code)]

use std::ffi::{CStr, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};

use herald_core::store::StoreError;
use rusqlite::{Connection, ffi};

use super::error::translate;

/// The name the writer's connection opens its database with.
const NAME: &CStr = c"herald-gathered-log";

/// Most bytes gathered before they are passed on: a large transaction (a migration, a
/// retention sweep) spills its pages to the log before it commits, and those need not
/// wait in memory.
const MOST_GATHERED: usize = 4 << 20;

/// Most bytes handed to the default VFS in one write. The Unix VFS writes at most
/// 128 KiB − 1 bytes per call (it masks the length with `0x1ffff`, and answers
/// `SQLITE_FULL` when that leaves nothing), so a run goes in pieces of 124 KiB: a
/// commit of 36 pages in 2 writes rather than 72.
const MOST_PER_WRITE: usize = 124 << 10;

/// What a run keeps of its buffer once passed on: enough for an ordinary commit, so
/// the next one allocates nothing; a large transaction's buffer is given back.
const KEPT_CAPACITY: usize = 1 << 20;

/// The default VFS this one wraps, found once at registration.
static DEFAULT_VFS: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(ptr::null_mut());

/// Why the VFS could not be registered.
#[derive(Debug, thiserror::Error)]
#[error("could not register the writer's SQLite VFS: {0}")]
struct NotRegistered(String);

/// The VFS's name, registering it on first use.
pub(super) fn registered() -> Result<&'static CStr, StoreError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    match REGISTERED.get_or_init(register) {
        Ok(()) => Ok(NAME),
        Err(reason) => Err(StoreError::backend(NotRegistered(reason.clone()))),
    }
}

fn register() -> Result<(), String> {
    // SAFETY: `sqlite3_vfs_find` initialises SQLite if needed and returns the default
    // VFS, which SQLite keeps for the life of the process, or null.
    let default = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
    if default.is_null() {
        return Err("SQLite has no default VFS".into());
    }
    DEFAULT_VFS.store(default, Ordering::Release);
    // SAFETY: non-null, and never freed (above).
    let mut vfs = unsafe { *default };
    vfs.szOsFile = usize::try_from(vfs.szOsFile)
        .ok()
        .and_then(|size| size.checked_add(real_file_offset()))
        .and_then(|size| c_int::try_from(size).ok())
        .ok_or("the default VFS's files are too large")?;
    vfs.zName = NAME.as_ptr();
    vfs.pNext = ptr::null_mut();
    // Every other method is the default VFS's own: they read only the fields copied
    // with them (`pAppData`, `mxPathname`), so they work as well on this copy.
    vfs.xOpen = Some(open);
    let vfs = Box::into_raw(Box::new(vfs));
    // SAFETY: `vfs` is valid and leaked: SQLite keeps the pointer for the life of the
    // process; 0 leaves the default VFS the default.
    let code = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
    if code == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!("sqlite3_vfs_register answered {code}"))
    }
}

/// Refuses a connection of this VFS whose commits would not sync the log: a commit's
/// gathered bytes are passed on by its sync (see the module's doc).
pub(super) fn require_full_sync(connection: &Connection) -> Result<(), StoreError> {
    let level: i64 = connection
        .pragma_query_value(None, "synchronous", |row| row.get(0))
        .map_err(translate)?;
    if level >= FULL {
        Ok(())
    } else {
        Err(StoreError::backend(NotDurable(level)))
    }
}

/// `PRAGMA synchronous`'s value for `FULL`.
const FULL: i64 = 2;

/// A connection of this VFS configured not to sync its commits.
#[derive(Debug, thiserror::Error)]
#[error("the SQLite writer needs `synchronous = FULL`, found level {0}")]
struct NotDurable(i64);

/// One open file: SQLite's header, the default VFS's file it wraps (allocated by
/// SQLite right after this struct, `szOsFile` covering both), and the link between a
/// database file and its WAL file, which gathers writes.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// A WAL file's writes gathered so far; null for other files.
    gathered: *mut Gathered,
    /// A WAL file's database file, whose shared-memory locks guard the log.
    database: *mut File,
    /// A database file's open WAL file.
    wal: *mut File,
}

// SQLite allocates files with 8-byte alignment.
const _: () = assert!(std::mem::align_of::<File>() <= 8);

/// Where the default VFS's file starts inside the space SQLite allocates for a file.
fn real_file_offset() -> usize {
    std::mem::size_of::<File>().next_multiple_of(16)
}

/// Calls the default VFS's method `$method` on the wrapped file with `$args`; a method
/// the default VFS lacks answers `$missing`.
macro_rules! forward {
    ($file:expr, $method:ident, $missing:expr $(, $arg:expr)*) => {{
        let file: &File = $file;
        // SAFETY: the caller holds a live `File` (see `shim`).
        match unsafe { real_methods(file) }.$method {
            // SAFETY: the default VFS's own method, on its own file, with SQLite's
            // arguments passed through unchanged.
            Some(method) => unsafe { method(file.real $(, $arg)*) },
            None => $missing,
        }
    }};
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let default = DEFAULT_VFS.load(Ordering::Acquire);
    // SAFETY: SQLite hands `open` `szOsFile` bytes at `file`, 8-byte aligned (enough
    // for `File` and for the default VFS's file), which hold a `File` and, from
    // `real_file_offset()`, the default VFS's file. `default` was set before this VFS
    // was registered.
    unsafe {
        let shim = file.cast::<File>();
        let real = file
            .cast::<u8>()
            .add(real_file_offset())
            .cast::<ffi::sqlite3_file>();
        ptr::write(
            shim,
            File {
                base: ffi::sqlite3_file {
                    pMethods: ptr::null(),
                },
                real,
                gathered: ptr::null_mut(),
                database: ptr::null_mut(),
                wal: ptr::null_mut(),
            },
        );
        (*real).pMethods = ptr::null();
        let Some(default_open) = (*default).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        let code = default_open(default, name, real, flags, out_flags);
        // SQLite closes a file whose methods are set, even after a failed open: set
        // them exactly when the default VFS set its own, so that close reaches it.
        if (*real).pMethods.is_null() {
            return code;
        }
        (*shim).base.pMethods = &METHODS;
        if code == ffi::SQLITE_OK && flags & ffi::SQLITE_OPEN_WAL != 0 {
            link_to_database(shim, name);
        }
        code
    }
}

/// Makes a WAL file gather its writes, if its database file is open through this VFS
/// too (only then can the write lock's release pass them on, see the module's doc) and
/// the device overwrites safely: otherwise SQLite pads a commit to a sector boundary
/// after its sync, and those bytes would wait here while readers are told of them.
///
/// # Safety
/// `wal` is a WAL file `open` just opened, under SQLite's `name` for it.
unsafe fn link_to_database(wal: *mut File, name: ffi::sqlite3_filename) {
    // SAFETY: SQLite opens a WAL file under a name made by `sqlite3_create_filename`
    // from its database's, which `sqlite3_database_file_object` maps back to the open
    // database file: one of this VFS's if its methods are this VFS's.
    let database = unsafe {
        let database = ffi::sqlite3_database_file_object(name).cast::<File>();
        if database.is_null() || !ptr::eq((*database).base.pMethods, &METHODS) {
            return;
        }
        &mut *database
    };
    let characteristics = forward!(&*database, xDeviceCharacteristics, 0);
    if characteristics & ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE == 0 {
        return;
    }
    database.wal = wal;
    // SAFETY: `wal` is the live file `open` is opening.
    unsafe {
        (*wal).database = database;
        (*wal).gathered = Box::into_raw(Box::default());
    }
}

/// The methods of every file this VFS opens. Version 3, like the Unix VFS it wraps
/// (shared memory for the WAL index, and memory-mapped reads).
static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// The wrapper of a file SQLite calls a method on.
///
/// # Safety
/// `file` must be a file opened by [`open`] and not yet closed.
unsafe fn shim<'a>(file: *mut ffi::sqlite3_file) -> &'a mut File {
    // SAFETY: per the contract, `file` points to a live `File`.
    unsafe { &mut *file.cast::<File>() }
}

/// The default VFS's methods for `file`'s wrapped file.
///
/// # Safety
/// As for [`shim`].
unsafe fn real_methods<'a>(file: &File) -> &'a ffi::sqlite3_io_methods {
    // SAFETY: `open` gives a `File` methods only once the default VFS set its own.
    unsafe { &*(*file.real).pMethods }
}

/// Passes on what `file` has gathered, if anything, in as few writes to the wrapped
/// file as it takes. A failure answers `SQLITE_IOERR_WRITE`, whatever the wrapped
/// file said, so that SQLite gives up the whole transaction (see the module's doc).
fn pass_on(file: &mut File) -> c_int {
    match pass_on_as_written(file) {
        ffi::SQLITE_OK => ffi::SQLITE_OK,
        code => {
            tracing::error!(
                code,
                "could not write the SQLite log's gathered pages; failing the transaction"
            );
            ffi::SQLITE_IOERR_WRITE
        }
    }
}

fn pass_on_as_written(file: &mut File) -> c_int {
    // SAFETY: `gathered` is null or the box `link_to_database` made for this file,
    // which only `close` frees.
    let Some(gathered) = (unsafe { file.gathered.as_mut() }) else {
        return ffi::SQLITE_OK;
    };
    let real = file.real;
    gathered.pass_on(|offset, bytes| {
        // SAFETY: the wrapped file is live while its wrapper is.
        let Some(write) = (unsafe { &*(*real).pMethods }).xWrite else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        #[cfg(test)]
        if let Some(code) = tests::injected_failure() {
            return code;
        }
        let mut offset = offset;
        for piece in bytes.chunks(MOST_PER_WRITE) {
            let (Ok(amount), Ok(length)) =
                (c_int::try_from(piece.len()), i64::try_from(piece.len()))
            else {
                return ffi::SQLITE_IOERR_WRITE;
            };
            #[cfg(test)]
            tests::count(&tests::PIECES);
            // SAFETY: `piece` is valid for `amount` bytes; the wrapped file is live.
            let code = unsafe { write(real, piece.as_ptr().cast(), amount, offset) };
            if code != ffi::SQLITE_OK {
                return code;
            }
            offset += length;
        }
        ffi::SQLITE_OK
    })
}

/// Passes on what is gathered, then runs `then` unless that failed.
fn after_passing_on(file: &mut File, then: impl FnOnce(&File) -> c_int) -> c_int {
    match pass_on(file) {
        ffi::SQLITE_OK => then(file),
        failed => failed,
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes only files `open` gave methods.
    let file = unsafe { shim(file) };
    let passed_on = pass_on(file);
    let closed = forward!(file, xClose, ffi::SQLITE_OK);
    // SAFETY: a linked file is live until it unlinks itself here; SQLite closes a
    // WAL file before its database file, but either order unlinks both.
    unsafe {
        if let Some(database) = file.database.as_mut() {
            database.wal = ptr::null_mut();
        }
        if let Some(wal) = file.wal.as_mut() {
            wal.database = ptr::null_mut();
        }
    }
    file.database = ptr::null_mut();
    file.wal = ptr::null_mut();
    if !file.gathered.is_null() {
        // SAFETY: made by `Box::into_raw` in `link_to_database`, freed only here.
        drop(unsafe { Box::from_raw(file.gathered) });
        file.gathered = ptr::null_mut();
    }
    if passed_on == ffi::SQLITE_OK {
        closed
    } else {
        passed_on
    }
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buffer: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite calls methods only on files `open` gave them.
    let file = unsafe { shim(file) };
    after_passing_on(file, |file| {
        forward!(file, xRead, ffi::SQLITE_IOERR_READ, buffer, amount, offset)
    })
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: as for `read`.
    let file = unsafe { shim(file) };
    if file.gathered.is_null() {
        return forward!(file, xWrite, ffi::SQLITE_IOERR_WRITE, data, amount, offset);
    }
    let Ok(length @ 1..) = usize::try_from(amount) else {
        return forward!(file, xWrite, ffi::SQLITE_IOERR_WRITE, data, amount, offset);
    };
    // SAFETY: SQLite passes `amount` readable bytes at `data`.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), length) };
    // SAFETY: checked non-null above; see `pass_on`.
    if !unsafe { &*file.gathered }.continues(offset, bytes.len()) {
        let code = pass_on(file);
        if code != ffi::SQLITE_OK {
            return code;
        }
    }
    // SAFETY: as above.
    unsafe { &mut *file.gathered }.gather(offset, bytes);
    ffi::SQLITE_OK
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    // SAFETY: as for `read`.
    let file = unsafe { shim(file) };
    after_passing_on(file, |file| {
        forward!(file, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size)
    })
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: as for `read`.
    let file = unsafe { shim(file) };
    after_passing_on(file, |file| {
        forward!(file, xSync, ffi::SQLITE_IOERR_FSYNC, flags)
    })
}

unsafe extern "C" fn file_size(
    file: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: as for `read`.
    let file = unsafe { shim(file) };
    after_passing_on(file, |file| {
        forward!(file, xFileSize, ffi::SQLITE_IOERR_FSTAT, size)
    })
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: as for `read`.
    forward!(unsafe { shim(file) }, xLock, ffi::SQLITE_IOERR_LOCK, level)
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: as for `read`.
    let file = unsafe { shim(file) };
    // In exclusive locking mode SQLite takes no shared-memory locks, so the write
    // lock's release (see `shm_lock`) never comes; leaving that mode unlocks the database
    // file, and anything still gathered must reach the log before another
    // connection can write to it.
    pass_on_log_of(file);
    forward!(file, xUnlock, ffi::SQLITE_IOERR_UNLOCK, level)
}

/// Passes on what a database file's WAL file has gathered, if it has one. A failure
/// is only logged: this runs as a lock is let go, which must happen regardless, and
/// what is gathered then belongs to a transaction that did not commit.
fn pass_on_log_of(database: &mut File) {
    // SAFETY: a linked WAL file is live until it unlinks itself in `close`.
    if let Some(wal) = unsafe { database.wal.as_mut() } {
        pass_on(wal);
    }
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: as for `read`.
    forward!(
        unsafe { shim(file) },
        xCheckReservedLock,
        ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
        out
    )
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    operation: c_int,
    argument: *mut c_void,
) -> c_int {
    // SAFETY: as for `read`.
    let file = unsafe { shim(file) };
    // Some controls size or sync the file: let them see every byte written.
    after_passing_on(file, |file| {
        forward!(
            file,
            xFileControl,
            ffi::SQLITE_NOTFOUND,
            operation,
            argument
        )
    })
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as for `read`.
    forward!(unsafe { shim(file) }, xSectorSize, 4096)
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as for `read`.
    forward!(unsafe { shim(file) }, xDeviceCharacteristics, 0)
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    mapped: *mut *mut c_void,
) -> c_int {
    // SAFETY: as for `read`.
    forward!(
        unsafe { shim(file) },
        xShmMap,
        ffi::SQLITE_IOERR_SHMMAP,
        region,
        size,
        extend,
        mapped
    )
}

unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    count: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: as for `read`.
    let file = unsafe { shim(file) };
    if offset == WAL_WRITE_LOCK && flags == ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE {
        // The write lock is still held: nothing of another connection's can be
        // overwritten.
        pass_on_log_of(file);
    }
    forward!(
        file,
        xShmLock,
        ffi::SQLITE_IOERR_SHMLOCK,
        offset,
        count,
        flags
    )
}

/// The first of the WAL index's locks: the one a writer holds.
const WAL_WRITE_LOCK: c_int = 0;

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: as for `read`.
    forward!(unsafe { shim(file) }, xShmBarrier, ())
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: as for `read`.
    forward!(unsafe { shim(file) }, xShmUnmap, ffi::SQLITE_OK, delete)
}

unsafe extern "C" fn fetch(
    file: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    amount: c_int,
    page: *mut *mut c_void,
) -> c_int {
    // SAFETY: as for `read`.
    let file = unsafe { shim(file) };
    // SAFETY: SQLite passes a valid out-pointer; null means "read it instead".
    unsafe { *page = ptr::null_mut() };
    after_passing_on(file, |file| {
        forward!(file, xFetch, ffi::SQLITE_OK, offset, amount, page)
    })
}

unsafe extern "C" fn unfetch(
    file: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    page: *mut c_void,
) -> c_int {
    // SAFETY: as for `read`.
    forward!(
        unsafe { shim(file) },
        xUnfetch,
        ffi::SQLITE_OK,
        offset,
        page
    )
}

/// Writes gathered for one file: a single run of bytes, from `offset` on.
#[derive(Debug, Default)]
struct Gathered {
    offset: i64,
    bytes: Vec<u8>,
}

impl Gathered {
    /// Whether a write of `length` bytes at `offset` can join the run: it starts where
    /// the run ends, and the run stays within [`MOST_GATHERED`]. Anything joins an
    /// empty run.
    fn continues(&self, offset: i64, length: usize) -> bool {
        self.bytes.is_empty()
            || (Some(offset) == self.end() && self.bytes.len() + length <= MOST_GATHERED)
    }

    fn end(&self) -> Option<i64> {
        self.offset
            .checked_add(i64::try_from(self.bytes.len()).ok()?)
    }

    /// Adds a write that [`Self::continues`] the run.
    fn gather(&mut self, offset: i64, bytes: &[u8]) {
        if self.bytes.is_empty() {
            self.offset = offset;
        }
        self.bytes.extend_from_slice(bytes);
    }

    /// Hands the run to `write` (offset, bytes), if there is one, and empties it
    /// whatever `write` answers: a failure fails the whole transaction (see
    /// [`pass_on`]), whose frames SQLite then gives up.
    fn pass_on(&mut self, write: impl FnOnce(i64, &[u8]) -> c_int) -> c_int {
        if self.bytes.is_empty() {
            return ffi::SQLITE_OK;
        }
        let code = write(self.offset, &self.bytes);
        self.bytes.clear();
        self.bytes.shrink_to(KEPT_CAPACITY);
        #[cfg(test)]
        tests::count(&tests::PASSED_ON);
        code
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::path::Path;
    use std::thread::LocalKey;

    use rusqlite::{Connection, ErrorCode, OpenFlags};

    use super::*;

    thread_local! {
        /// Runs passed on by this thread's files.
        pub(super) static PASSED_ON: Cell<usize> = const { Cell::new(0) };
        /// Writes those runs took.
        pub(super) static PIECES: Cell<usize> = const { Cell::new(0) };
        /// How many of this thread's next runs fail as a full disk would.
        static FAILING: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) fn count(counter: &'static LocalKey<Cell<usize>>) {
        counter.with(|count| count.set(count.get() + 1));
    }

    /// `SQLITE_FULL` if this thread asked for failures, one per run passed on.
    pub(super) fn injected_failure() -> Option<c_int> {
        FAILING.with(|failing| {
            let left = failing.get();
            (left > 0).then(|| {
                failing.set(left - 1);
                ffi::SQLITE_FULL
            })
        })
    }

    fn read(counter: &'static LocalKey<Cell<usize>>) -> usize {
        counter.with(Cell::get)
    }

    /// Runs each write of `writes` (offset, length) through a `Gathered` the way
    /// `write` does, and returns the runs passed on, then what is left gathered.
    fn runs_of(writes: &[(i64, usize)]) -> (Vec<(i64, usize)>, (i64, usize)) {
        let mut gathered = Gathered::default();
        let mut runs = Vec::new();
        for &(offset, length) in writes {
            if !gathered.continues(offset, length) {
                gathered.pass_on(|offset, bytes| {
                    runs.push((offset, bytes.len()));
                    ffi::SQLITE_OK
                });
            }
            gathered.gather(offset, &vec![7; length]);
        }
        (runs, (gathered.offset, gathered.bytes.len()))
    }

    #[test]
    fn writes_that_continue_one_another_make_one_run() {
        let frames: Vec<(i64, usize)> = (0..36)
            .flat_map(|frame| {
                let start = 32 + frame * 4120;
                [(start, 24), (start + 24, 4096)]
            })
            .collect();
        let (runs, left) = runs_of(&[&[(0, 32)], frames.as_slice()].concat());
        assert!(
            runs.is_empty(),
            "nothing passed on before the sync: {runs:?}"
        );
        assert_eq!(left, (0, 32 + 36 * 4120));
    }

    #[test]
    fn a_write_elsewhere_passes_the_run_on_first() {
        let (runs, left) = runs_of(&[(100, 10), (110, 10), (50, 5), (55, 5), (0, 1)]);
        assert_eq!(runs, vec![(100, 20), (50, 10)]);
        assert_eq!(left, (0, 1));
    }

    #[test]
    fn a_run_is_passed_on_before_it_grows_past_the_limit() {
        let half = MOST_GATHERED / 2;
        let step = i64::try_from(half).expect("small");
        let (runs, left) = runs_of(&[(0, half), (step, half), (2 * step, 1)]);
        assert_eq!(runs, vec![(0, MOST_GATHERED)]);
        assert_eq!(left, (2 * step, 1));
    }

    fn open_with_vfs(path: &Path) -> Connection {
        let connection = Connection::open_with_flags_and_vfs(
            path,
            OpenFlags::default(),
            registered().expect("registered"),
        )
        .expect("opened");
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE IF NOT EXISTS pages (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
            )
            .expect("configured");
        connection
    }

    /// A new database through this VFS (in a directory kept while the first value
    /// lives), with a page cache of a few pages: a large transaction spills frames
    /// into the log before its commit, and reads some of them back.
    fn spilling_database() -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("gathered.db");
        let connection = open_with_vfs(&path);
        connection
            .execute_batch("PRAGMA cache_size = 5")
            .expect("small cache");
        (dir, path, connection)
    }

    fn insert(connection: &Connection, ids: std::ops::Range<i64>, fill: u8) {
        for id in ids {
            connection
                .execute(
                    "INSERT INTO pages (id, body) VALUES (?1, ?2)",
                    (id, vec![fill; 3000]),
                )
                .expect("inserted");
        }
    }

    fn insert_committed(connection: &Connection, ids: std::ops::Range<i64>, fill: u8) {
        let transaction = connection.unchecked_transaction().expect("begun");
        insert(&transaction, ids, fill);
        transaction.commit().expect("committed");
    }

    fn pages(ids: std::ops::Range<i64>, fill: u8) -> Vec<(i64, Vec<u8>)> {
        ids.map(|id| (id, vec![fill; 3000])).collect()
    }

    /// Every row, read through a new connection on the default VFS, after checking
    /// the database's integrity.
    fn stored(path: &Path) -> Vec<(i64, Vec<u8>)> {
        let connection = Connection::open(path).expect("a connection on the default VFS");
        let check: String = connection
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .expect("checked");
        assert_eq!(check, "ok");
        let mut statement = connection
            .prepare("SELECT id, body FROM pages ORDER BY id")
            .expect("prepared");
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect("queried")
            .collect::<Result<_, _>>()
            .expect("read")
    }

    #[test]
    fn a_commit_reaches_the_log_in_one_run() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let connection = open_with_vfs(&dir.path().join("gathered.db"));
        // The log's first commit also writes (and syncs) the log's header.
        insert_committed(&connection, 0..1, 1);
        let (runs, pieces) = (read(&PASSED_ON), read(&PIECES));
        insert_committed(&connection, 1..61, 2);
        assert_eq!(
            read(&PASSED_ON) - runs,
            1,
            "60 pages, some 120 writes by SQLite"
        );
        let pieces = read(&PIECES) - pieces;
        assert!(
            (2..=4).contains(&pieces),
            "about 250 KB in pieces of 124 KiB, not {pieces}"
        );
    }

    #[test]
    fn what_was_gathered_is_in_the_files_for_every_connection_and_after_a_reopen() {
        let (_dir, path, connection) = spilling_database();
        insert_committed(&connection, 0..2000, 3);
        connection
            .execute(
                "UPDATE pages SET body = ?1 WHERE id % 7 = 0",
                [vec![4u8; 3000]],
            )
            .expect("updated");
        let mut expected: Vec<(i64, Vec<u8>)> = (0..2000)
            .map(|id| (id, vec![if id % 7 == 0 { 4 } else { 3 }; 3000]))
            .collect();
        assert!(
            stored(&path) == expected,
            "another connection reads every commit"
        );
        connection
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .expect("checkpointed");
        insert_committed(&connection, 2000..2010, 5);
        drop(connection);
        expected.extend(pages(2000..2010, 5));
        let reopened = open_with_vfs(&path);
        drop(reopened);
        assert!(
            stored(&path) == expected,
            "everything is there after a reopen"
        );
    }

    #[test]
    fn a_failed_pass_on_rolls_the_whole_transaction_back() {
        let (_dir, path, connection) = spilling_database();
        insert_committed(&connection, 0..10, 1);
        connection
            .execute_batch("BEGIN; SAVEPOINT job;")
            .expect("begun");
        insert(&connection, 10..500, 2);
        // The next run passed on (this update reads spilled frames back, and spills
        // more) fails as a full disk would. Answered as a full disk, SQLite would
        // undo only the statement and keep the transaction, with frames it believes
        // written; as an I/O error, it gives the transaction up.
        FAILING.with(|failing| failing.set(1));
        let failed = connection
            .execute("UPDATE pages SET body = ?1", [vec![9u8; 3000]])
            .expect_err("the update fails");
        FAILING.with(|failing| failing.set(0));
        assert_eq!(failed.sqlite_error_code(), Some(ErrorCode::SystemIoFailure));
        assert!(
            connection.is_autocommit(),
            "the whole transaction is given up"
        );
        assert!(connection.execute_batch("ROLLBACK TO job").is_err());
        assert!(stored(&path) == pages(0..10, 1));
        insert_committed(&connection, 10..20, 3);
        let mut expected = pages(0..10, 1);
        expected.extend(pages(10..20, 3));
        assert!(
            stored(&path) == expected,
            "the connection goes on afterwards"
        );
    }

    /// Rows 0..10 committed by the writer, then a transaction of the writer's that
    /// spills frames and is rolled back (with `locking` set before it), then
    /// `let_go`, which must be what passes the spilled frames on. Then another
    /// connection commits where those frames were and further, and the writer commits
    /// again: its old frames must not come back over the other's.
    fn rolled_back_frames_then_another_commit(locking: &str, let_go: impl Fn(&Connection)) {
        let (_dir, path, connection) = spilling_database();
        insert_committed(&connection, 0..10, 1);
        // With the log empty, the rollback reads nothing from it (its pages'
        // committed versions are in the database file), so it passes nothing on.
        connection
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .expect("checkpointed");
        connection
            .execute_batch(&format!("PRAGMA locking_mode = {locking}"))
            .expect("locking mode");
        connection.execute_batch("BEGIN").expect("begun");
        insert(&connection, 10..60, 2);
        let passed_on = read(&PASSED_ON);
        let_go(&connection);
        assert_eq!(
            read(&PASSED_ON),
            passed_on + 1,
            "passed on as the lock goes"
        );
        let other = Connection::open(&path).expect("a connection on the default VFS");
        insert_committed(&other, 1000..1300, 7);
        drop(other);
        insert_committed(&connection, 10..12, 3);
        let mut expected = pages(0..10, 1);
        expected.extend(pages(10..12, 3));
        expected.extend(pages(1000..1300, 7));
        assert!(stored(&path) == expected);
    }

    #[test]
    fn a_rolled_back_transaction_never_overwrites_another_connections_commit() {
        // The rollback lets go of the WAL write lock.
        rolled_back_frames_then_another_commit("NORMAL", |connection| {
            connection.execute_batch("ROLLBACK").expect("rolled back");
        });
    }

    #[test]
    fn leaving_exclusive_locking_passes_a_rolled_back_transactions_frames_on_first() {
        // Exclusive, SQLite takes no shared-memory locks: the rollback lets go of
        // nothing. Back to normal locking, the next read lets go of the database.
        rolled_back_frames_then_another_commit("EXCLUSIVE", |connection| {
            connection.execute_batch("ROLLBACK").expect("rolled back");
            let count: i64 = connection
                .query_row("PRAGMA locking_mode = NORMAL", [], |row| {
                    row.get::<_, String>(0)
                })
                .and_then(|_| {
                    connection.query_row("SELECT COUNT(*) FROM pages", [], |row| row.get(0))
                })
                .expect("read");
            assert_eq!(count, 10);
        });
    }

    #[test]
    fn a_log_on_a_device_that_does_not_overwrite_safely_is_written_as_sqlite_writes_it() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("gathered.db");
        // Without `POWERSAFE_OVERWRITE`, SQLite pads a commit after its sync.
        let uri = format!("file:{}?psow=0", path.display());
        let connection = Connection::open_with_flags_and_vfs(
            uri,
            OpenFlags::default() | OpenFlags::SQLITE_OPEN_URI,
            registered().expect("registered"),
        )
        .expect("opened");
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
                 CREATE TABLE pages (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
            )
            .expect("configured");
        let passed_on = read(&PASSED_ON);
        insert_committed(&connection, 0..20, 6);
        assert_eq!(read(&PASSED_ON), passed_on, "nothing gathered");
        assert!(stored(&path) == pages(0..20, 6));
    }

    #[test]
    fn a_connection_that_does_not_sync_its_commits_is_refused() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let connection = open_with_vfs(&dir.path().join("gathered.db"));
        assert!(require_full_sync(&connection).is_ok());
        connection
            .execute_batch("PRAGMA synchronous = NORMAL")
            .expect("set");
        let refused = require_full_sync(&connection).expect_err("refused");
        let cause = std::error::Error::source(&refused).map(ToString::to_string);
        assert!(
            cause
                .as_deref()
                .is_some_and(|cause| cause.contains("synchronous = FULL")),
            "{cause:?}"
        );
    }
}
