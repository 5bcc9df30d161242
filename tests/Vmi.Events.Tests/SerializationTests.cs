using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using MessagePack;
using Xunit;

namespace Vmi.Events.Tests;

public sealed class SerializationTests
{
    /// <summary>
    /// The union tags are the wire contract: pinned here by hand, so renumbering one fails even when
    /// the vector file is regenerated.
    /// </summary>
    private static readonly (int Tag, Type Type)[] PinnedTags =
    [
        (0, typeof(ProcessStarted)), (1, typeof(ProcessExited)), (2, typeof(ProcessExec)), (3, typeof(ModuleLoaded)),
        (4, typeof(MemoryAccess)), (5, typeof(BreakpointHit)), (6, typeof(SweepTick)), (7, typeof(IntegrityFinding)),
        (8, typeof(NetworkFlow)), (9, typeof(SignatureMatch)), (10, typeof(Alert)), (11, typeof(DetectorFault)),
        (12, typeof(TelemetryShed)),
    ];

    public static TheoryData<string> EventTypes()
    {
        var data = new TheoryData<string>();
        foreach (VmiEvent e in SampleEvents.All())
            data.Add(e.GetType().Name);
        return data;
    }

    private static VmiEvent Sample(string type) => SampleEvents.All().Single(e => e.GetType().Name == type);

    [Fact]
    public void Union_tags_are_the_pinned_ones_and_samples_cover_every_type()
    {
        var declared = typeof(VmiEvent).GetCustomAttributes<UnionAttribute>()
            .Select(u => (u.Key, u.SubType)).OrderBy(u => u.Key).ToArray();
        Assert.Equal(PinnedTags, declared);
        Assert.Equal(PinnedTags.Select(p => p.Type), SampleEvents.All().Select(e => e.GetType()));
        // Every concrete event type in the assembly is in the union.
        var concrete = typeof(VmiEvent).Assembly.GetTypes().Where(t => t.IsSubclassOf(typeof(VmiEvent)) && !t.IsAbstract);
        Assert.Equal(PinnedTags.Select(p => p.Type).OrderBy(t => t.Name), concrete.OrderBy(t => t.Name));
    }

    [Fact]
    public void Keys_are_unique_and_subclass_keys_start_at_10()
    {
        foreach (var (_, type) in PinnedTags)
        {
            var keys = type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
                .Select(p => p.GetCustomAttribute<KeyAttribute>())
                .OfType<KeyAttribute>()
                .Select(k => k.IntKey!.Value)
                .ToArray();
            Assert.Equal(keys.Length, keys.Distinct().Count());
            Assert.Equal([0, 1, 2, 3, 4, 5], keys.Where(k => k < 10).Order());
        }
    }

    [Theory]
    [MemberData(nameof(EventTypes))]
    public void Round_trips_with_every_field(string type)
    {
        VmiEvent original = Sample(type);
        byte[] bytes = EventSerializer.Serialize(original);
        VmiEvent back = EventSerializer.Deserialize(bytes);
        SampleEvents.AssertSame(original, back);
        // Serializing the copy gives the same bytes: nothing was lost or reordered.
        Assert.Equal(bytes, EventSerializer.Serialize(back));
    }

    [Theory]
    [MemberData(nameof(EventTypes))]
    public void Round_trips_with_defaults_and_nulls(string type)
    {
        // The bare minimum of every type: required members only, nullable ones left null.
        VmiEvent minimal = Sample(type) switch
        {
            ProcessStarted e => new ProcessStarted { VmId = e.VmId, Time = e.Time, Pid = 1, Name = "init" },
            ProcessExited e => new ProcessExited { VmId = e.VmId, Time = e.Time, Pid = 1, Name = "init" },
            ProcessExec e => new ProcessExec { VmId = e.VmId, Time = e.Time, Pid = 1, Name = "init" },
            ModuleLoaded e => new ModuleLoaded { VmId = e.VmId, Time = e.Time, Name = "m" },
            MemoryAccess e => new MemoryAccess { VmId = e.VmId, Time = e.Time, Access = MemoryAccessKind.Execute, Hook = "h" },
            BreakpointHit e => new BreakpointHit { VmId = e.VmId, Time = e.Time, Hook = "h" },
            SweepTick e => new SweepTick { VmId = e.VmId, Time = e.Time, Reason = SweepReason.Periodic },
            IntegrityFinding e => new IntegrityFinding { VmId = e.VmId, Time = e.Time, Detector = "d", Subject = "s", Problem = "p", Severity = Severity.Info },
            NetworkFlow e => new NetworkFlow { VmId = e.VmId, Time = e.Time, Protocol = "UDP", SourceIp = "::1", DestinationIp = "::1" },
            SignatureMatch e => new SignatureMatch { VmId = e.VmId, Time = e.Time, Rule = "r", Region = "kernel" },
            Alert e => new Alert { VmId = e.VmId, Time = e.Time.ToOffset(TimeSpan.FromHours(-5)), Detector = "d", Title = "t", Severity = Severity.Low, Key = "k" },
            DetectorFault e => new DetectorFault { VmId = e.VmId, Time = e.Time, Detector = "d", Fault = DetectorFaultKind.Exception, Message = "m" },
            TelemetryShed e => new TelemetryShed { VmId = e.VmId, Time = e.Time, Stage = "ingress", Count = 0 },
            _ => throw new InvalidOperationException(type),
        };
        SampleEvents.AssertSame(minimal, EventSerializer.Deserialize(EventSerializer.Serialize(minimal)));
    }

    [Fact]
    public void Serialized_bytes_match_the_committed_vectors()
    {
        string path = Path.Combine(AppContext.BaseDirectory, "Vectors", "events.json");
        if (Environment.GetEnvironmentVariable("VMI_UPDATE_VECTORS") == "1")
        {
            // Deliberate contract change: regenerate, review the diff, bump SchemaVersion if a meaning changed.
            var fresh = SampleEvents.All().Select(e => new Vector(e.GetType().Name, Convert.ToHexStringLower(EventSerializer.Serialize(e)))).ToArray();
            File.WriteAllText(SourceVectorPath(), JsonSerializer.Serialize(fresh, new JsonSerializerOptions { WriteIndented = true }) + "\n");
            return;
        }
        Vector[] vectors = JsonSerializer.Deserialize<Vector[]>(File.ReadAllText(path))!;
        Assert.Equal(PinnedTags.Length, vectors.Length);
        for (int i = 0; i < vectors.Length; i++)
        {
            VmiEvent sample = SampleEvents.All()[i];
            Assert.Equal(sample.GetType().Name, vectors[i].Type);
            byte[] pinned = Convert.FromHexString(vectors[i].Hex);
            // Layout: [tag, [key 0, key 1, …]].
            Assert.Equal(0x92, pinned[0]);
            Assert.Equal(PinnedTags[i].Tag, pinned[1]);
            Assert.Equal(vectors[i].Hex, Convert.ToHexStringLower(EventSerializer.Serialize(sample)));
            // Old bytes still read as the same event (the reader half of the contract).
            SampleEvents.AssertSame(sample, EventSerializer.Deserialize(pinned));
        }
    }

    private sealed record Vector(string Type, string Hex);

    private static string SourceVectorPath([CallerFilePath] string source = "") =>
        Path.Combine(Path.GetDirectoryName(source)!, "Vectors", "events.json");

    [Fact]
    public void Every_truncation_of_every_event_is_a_serialization_error()
    {
        foreach (VmiEvent e in SampleEvents.All())
        {
            byte[] bytes = EventSerializer.Serialize(e);
            for (int length = 0; length < bytes.Length; length++)
                Assert.Throws<MessagePackSerializationException>(() => EventSerializer.Deserialize(bytes.AsMemory(0, length)));
        }
    }

    [Fact]
    public void Random_garbage_is_a_serialization_error_or_an_event()
    {
        var random = new Random(1234);
        byte[] buffer = new byte[256];
        for (int i = 0; i < 20_000; i++)
        {
            random.NextBytes(buffer);
            int length = random.Next(buffer.Length);
            // Half of the inputs start like a union so the object formatters are reached too.
            if (i % 2 == 0 && length > 2)
            {
                buffer[0] = 0x92;
                buffer[1] = (byte)random.Next(13);
            }
            try
            {
                Assert.NotNull(EventSerializer.Deserialize(buffer.AsMemory(0, length)));
            }
            catch (MessagePackSerializationException)
            {
            }
        }
    }

    [Fact]
    public void Mutated_events_are_a_serialization_error_or_an_event()
    {
        var random = new Random(99);
        foreach (VmiEvent e in SampleEvents.All())
        {
            byte[] original = EventSerializer.Serialize(e);
            for (int i = 0; i < 2_000; i++)
            {
                byte[] bytes = (byte[])original.Clone();
                for (int flips = random.Next(1, 4); flips > 0; flips--)
                    bytes[random.Next(bytes.Length)] = (byte)random.Next(256);
                try
                {
                    VmiEvent back = EventSerializer.Deserialize(bytes);
                    // Whatever came back honours the nullable contract, so mapping it cannot throw.
                    Assert.NotNull(back.VmId);
                    _ = back.ToEcs();
                }
                catch (MessagePackSerializationException)
                {
                }
            }
        }
    }

    [Theory]
    [InlineData("")]
    [InlineData("c0")] // nil
    [InlineData("90")] // empty array
    [InlineData("9263c0")] // unknown union tag
    [InlineData("920a90")] // alert with no members at all
    [InlineData("920ac0")] // alert: nil body
    [InlineData("dd7fffffff")] // top-level array claiming 2^31 elements
    [InlineData("92dd7fffffff")]
    [InlineData("9200dcffff")] // a process with 65535 members and no bytes
    [InlineData("a3616263")] // a string
    public void Malformed_payloads_are_serialization_errors(string hex) =>
        Assert.Throws<MessagePackSerializationException>(() => EventSerializer.Deserialize(Convert.FromHexString(hex)));

    [Fact]
    public void Huge_declared_lengths_inside_an_event_fail_fast_without_allocating()
    {
        const string Marker = "MARKER-MARKER";
        byte[] markerStr = [0xad, .. Encoding.ASCII.GetBytes(Marker)]; // fixstr of 13 bytes
        var cases = new List<byte[]>
        {
            // A list of 2^31-1 strings (array32 header in place of fixarray 1).
            Patch(EventSerializer.Serialize(new ProcessStarted { VmId = "v", Time = SampleEvents.Time, Pid = 1, Name = "n", Cmdline = [Marker] }),
                [0x91, .. markerStr], [0xdd, 0x7f, 0xff, 0xff, 0xff, .. markerStr]),
            // A map of 2^31-1 evidence entries.
            Patch(EventSerializer.Serialize(new Alert { VmId = "v", Time = SampleEvents.Time, Detector = "d", Title = "t", Severity = Severity.High, Key = "k", Evidence = new Dictionary<string, string> { [Marker] = "x" } }),
                [0x81, .. markerStr], [0xdf, 0x7f, 0xff, 0xff, 0xff, .. markerStr]),
            // A 2 GiB byte string.
            Patch(EventSerializer.Serialize(new MemoryAccess { VmId = "v", Time = SampleEvents.Time, Access = MemoryAccessKind.Write, Hook = "h", OldValue = Encoding.ASCII.GetBytes(Marker) }),
                [0xc4, 13, .. Encoding.ASCII.GetBytes(Marker)], [0xc6, 0x7f, 0xff, 0xff, 0xff, .. Encoding.ASCII.GetBytes(Marker)]),
            // A 2 GiB string.
            Patch(EventSerializer.Serialize(new ModuleLoaded { VmId = "v", Time = SampleEvents.Time, Name = Marker }),
                markerStr, [0xdb, 0x7f, 0xff, 0xff, 0xff, .. Encoding.ASCII.GetBytes(Marker)]),
        };
        long before = GC.GetAllocatedBytesForCurrentThread();
        foreach (byte[] bytes in cases)
            Assert.Throws<MessagePackSerializationException>(() => EventSerializer.Deserialize(bytes));
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 16 << 20, "a declared length was allocated before it was checked");
    }

    [Fact]
    public void Deep_nesting_is_refused()
    {
        // An alert whose techniques list is 100 000 nested arrays deep.
        byte[] bytes = [0x92, 0x0a, .. Enumerable.Repeat((byte)0x91, 100_000), 0xc0];
        Assert.Throws<MessagePackSerializationException>(() => EventSerializer.Deserialize(bytes));
    }

    [Fact]
    public void Nil_in_non_nullable_members_is_refused()
    {
        var alert = (Alert)Sample(nameof(Alert));
        // Well-formed MessagePack that breaks the nullable contract: nil VmId, nil list, nil list element, nil dictionary value, nil technique id.
        VmiEvent[] broken =
        [
            alert with { VmId = null! },
            alert with { Techniques = null! },
            alert with { Techniques = [null!] },
            alert with { Techniques = [new AttackTechnique(null!, "n", "t")] },
            alert with { Evidence = new Dictionary<string, string> { ["k"] = null! } },
            alert with { Title = null! },
            new ProcessStarted { VmId = "v", Time = SampleEvents.Time, Pid = 1, Name = "n", Cmdline = ["a", null!] },
        ];
        foreach (VmiEvent e in broken)
        {
            var ex = Assert.Throws<MessagePackSerializationException>(() => EventSerializer.Deserialize(EventSerializer.Serialize(e)));
            Assert.Contains("non-nullable", ex.Message, StringComparison.Ordinal);
        }
    }

    private static byte[] Patch(byte[] bytes, byte[] find, byte[] replace)
    {
        int at = bytes.AsSpan().IndexOf(find);
        Assert.True(at >= 0, "marker not found");
        Assert.Equal(-1, bytes.AsSpan(at + 1).IndexOf(find));
        return [.. bytes.AsSpan(0, at), .. replace, .. bytes.AsSpan(at + find.Length)];
    }
}
