using Vmi.Events;
using Vmi.Export;
using Vmi.Export.Elasticsearch;
using Vmi.Export.Spool;

// Usage: Vmi.Export.CrashHost SPOOL_DIR ES_URL TOTAL
// Appends records 0..TOTAL-1 to the spool (resuming at the spool's next sequence, so record i always has
// sequence i and the same document id), then exports until the spool is empty, then prints "drained".
// The crash test kills this process at random points and starts it again.
if (args.Length != 3)
{
    Console.Error.WriteLine("usage: Vmi.Export.CrashHost SPOOL_DIR ES_URL TOTAL");
    return 2;
}
string directory = args[0];
var es = new Uri(args[1]);
long total = long.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture);

using DurableSpool spool = DurableSpool.Open(new SpoolOptions { Directory = directory, SegmentBytes = 256 << 10, MaxBytes = 1L << 30 });
Console.WriteLine($"open next={spool.NextSequence} committed={spool.CommittedSequence} recovered={spool.Counters.RecoveredTailBytes}");
var start = new DateTimeOffset(2026, 11, 1, 0, 0, 0, TimeSpan.Zero);
while (spool.NextSequence < total)
{
    long first = spool.NextSequence;
    long n = Math.Min(100, total - first);
    var items = new List<ExportItem>((int)n);
    for (long i = first; i < first + n; i++)
        items.Add(ExportItem.FromEvent(Record(i)));
    spool.AppendRange(items);
}
Console.WriteLine("appended");

using var sink = new ElasticsearchSink(new ElasticsearchOptions { Nodes = [es], RequestTimeout = TimeSpan.FromSeconds(10) });
var exporter = new Exporter(spool, sink, new ExporterOptions
{
    MaxBatchCount = 250,
    InitialRetryDelay = TimeSpan.FromMilliseconds(20),
    MaxRetryDelay = TimeSpan.FromMilliseconds(500),
});
await exporter.DrainAsync(CancellationToken.None);
ExportCounters c = exporter.Counters;
Console.WriteLine($"drained sent={c.Sent} duplicates={c.Duplicates} retries={c.Retries} dead={c.DeadLettered}");
return 0;

VmiEvent Record(long i)
{
    // Record i's id is fixed by i: a replay after a kill sends the same document id again.
    var id = new Guid((int)i, 0x7e57, 0x1d, [0, 0, 0, 0, 0, 0, 0, 1]);
    DateTimeOffset time = start.AddMilliseconds(i);
    if (i % 10 == 0)
    {
        return new Alert
        {
            Id = id, VmId = "vm-crash", Time = time, Sequence = i, Detector = "syscall-hook", Title = $"hook {i}",
            Severity = Severity.High, Key = "k" + i, Techniques = [AttackTechnique.Rootkit], Pid = (int)(i % 30000), ProcessName = "evil",
        };
    }
    return new ProcessStarted { Id = id, VmId = "vm-crash", Time = time, Sequence = i, Pid = (int)(i % 30000), Name = "proc" + i, Cmdline = ["/bin/true", i.ToString(System.Globalization.CultureInfo.InvariantCulture)] };
}
