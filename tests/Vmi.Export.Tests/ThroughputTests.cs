using System.Diagnostics;
using Vmi.Export.Elasticsearch;
using Vmi.Export.Spool;
using Xunit;
using Xunit.Abstractions;

namespace Vmi.Export.Tests;

/// <summary>
/// Throughput figures (printed; the assertions are only far-off floors so a busy CI machine does not
/// fail them): spool append rate, and records per second through spool, exporter, HTTP and the fake
/// Elasticsearch over loopback. The fake parses every document, so it shares the CPU with the exporter.
/// </summary>
[Trait("Category", "Performance")]
public sealed class ThroughputTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = TestData.TempDir();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData(SpoolDurability.ProcessCrash, 1)]
    [InlineData(SpoolDurability.ProcessCrash, 100)]
    [InlineData(SpoolDurability.PowerLoss, 100)]
    public void Spool_append_rate(SpoolDurability durability, int perCall)
    {
        List<ExportItem> items = TestData.Items(50_000);
        long jsonBytes = items.Sum(i => (long)i.Json.Length);
        using DurableSpool spool = DurableSpool.Open(TestData.Spool(_dir) with { SegmentBytes = 16 << 20, MaxBytes = 1L << 30, Durability = durability });
        var watch = Stopwatch.StartNew();
        for (int i = 0; i < items.Count; i += perCall)
            spool.AppendRange(items.GetRange(i, Math.Min(perCall, items.Count - i)));
        watch.Stop();
        double rate = items.Count / watch.Elapsed.TotalSeconds;
        output.WriteLine($"spool append ({durability}, {perCall}/call): {rate:N0} records/s, {jsonBytes / watch.Elapsed.TotalSeconds / (1 << 20):N1} MB/s of JSON, avg record {jsonBytes / items.Count} B");
        Assert.True(rate > 500, $"{rate} records/s");

        watch.Restart();
        long read = 0;
        for (IReadOnlyList<SpoolRecord> r; (r = spool.Read(1000, 5 << 20)).Count > 0;)
            read += r.Count;
        output.WriteLine($"spool read back: {read / watch.Elapsed.TotalSeconds:N0} records/s");
        Assert.Equal(items.Count, read);
    }

    [Fact]
    public async Task End_to_end_export_rate_over_loopback()
    {
        const int Count = 50_000;
        await using FakeElasticsearch es = await FakeElasticsearch.StartAsync();
        using var sink = new ElasticsearchSink(new ElasticsearchOptions { Nodes = [es.Url] });
        using (DurableSpool warm = DurableSpool.Open(TestData.Spool(Path.Combine(_dir, "warm-up"))))
        {
            // Pays for JIT, template set-up and the connection before the measured run.
            warm.AppendRange(TestData.Items(3000, from: 10 * Count));
            await new Exporter(warm, sink, new ExporterOptions { MaxBatchCount = 1000 }).DrainAsync(CancellationToken.None);
        }
        int before = es.Documents.Count;

        using DurableSpool spool = DurableSpool.Open(TestData.Spool(Path.Combine(_dir, "measured")) with { SegmentBytes = 16 << 20, MaxBytes = 1L << 30 });
        List<ExportItem> items = TestData.Items(Count, from: Count);
        for (int i = 0; i < Count; i += 1000)
            spool.AppendRange(items.GetRange(i, 1000));
        var exporter = new Exporter(spool, sink, new ExporterOptions { MaxBatchCount = 1000 });
        var watch = Stopwatch.StartNew();
        await exporter.DrainAsync(CancellationToken.None);
        watch.Stop();
        ExportCounters c = exporter.Counters;
        double rate = Count / watch.Elapsed.TotalSeconds;
        output.WriteLine($"export spool -> exporter -> _bulk (1000/batch) -> fake ES on loopback: {rate:N0} docs/s, {c.Bytes / watch.Elapsed.TotalSeconds / (1 << 20):N1} MB/s on the wire, {c.Batches} batches, {watch.Elapsed.TotalSeconds:0.00} s");
        Assert.Equal(before + Count, es.Documents.Count);
        Assert.Equal(Count, c.Sent);
        Assert.True(rate > 1000, $"{rate} docs/s");
    }
}
