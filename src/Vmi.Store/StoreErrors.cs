using Microsoft.Data.Sqlite;
using Vmi.Core;

namespace Vmi.Store;

/// <summary>Turns SQLite result codes into <see cref="StoreException"/>s that say what to do.</summary>
internal static class StoreErrors
{
    // Primary result codes from sqlite3.h.
    private const int SQLITE_PERM = 3;
    private const int SQLITE_BUSY = 5;
    private const int SQLITE_LOCKED = 6;
    private const int SQLITE_READONLY = 8;
    private const int SQLITE_IOERR = 10;
    private const int SQLITE_CORRUPT = 11;
    private const int SQLITE_FULL = 13;
    private const int SQLITE_CANTOPEN = 14;
    private const int SQLITE_NOTADB = 26;

    public static StoreException Wrap(SqliteException ex, string path, string doing)
    {
        // Extended codes carry the primary one in the low byte (SQLITE_IOERR_WRITE = 10 | 3 << 8).
        string advice = (ex.SqliteErrorCode & 0xff) switch
        {
            SQLITE_FULL => "the disk (or the store's size limit) is full. Free space or move the store; what was stored before is intact",
            SQLITE_NOTADB => "the file is not a Vmi event store (not an SQLite database). Choose another store path, or move the file away",
            SQLITE_CORRUPT => "the database file is corrupt. Move it away (keep it for inspection) and start a new store",
            SQLITE_READONLY or SQLITE_PERM => "the file or its directory is read-only for this user. Fix the permissions or choose a writable path",
            SQLITE_CANTOPEN => "the file cannot be opened or created. Check that the directory exists and is writable by this user",
            SQLITE_BUSY or SQLITE_LOCKED => "another process holds the store locked for too long. Stop the other writer or use another store path",
            SQLITE_IOERR => "the operating system reported an I/O error. Check the disk and the file system",
            _ => "SQLite reported an error",
        };
        return new StoreException($"Event store {path}: cannot {doing}: {advice} ({ex.Message.TrimEnd('.')}).", ex);
    }

    public static StoreException Wrap(IOException ex, string path, string doing) =>
        new($"Event store {path}: cannot {doing}: {ex.Message}", ex);
}
