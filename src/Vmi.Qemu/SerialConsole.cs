using System.Text;

namespace Vmi.Qemu;

/// <summary>
/// A guest serial console carried over a byte stream (QEMU's stdio chardev): a line transcript,
/// waiting for lines, and writing input. The transcript is bounded; older lines are dropped.
/// </summary>
public sealed class SerialConsole : IDisposable
{
    private const int MaxLineLength = 64 * 1024;
    private readonly Stream _input;
    private readonly Stream? _output;
    private readonly object _gate = new();
    private readonly List<string> _lines = [];
    private readonly List<Waiter> _waiters = [];
    private readonly int _maxLines;
    private long _dropped;
    private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private sealed record Waiter(long From, Func<string, bool> Predicate, TaskCompletionSource<string> Done);

    /// <param name="fromGuest">Bytes the guest writes (QEMU's standard output).</param>
    /// <param name="toGuest">Stream to the guest's input (QEMU's standard input); null for read-only capture.</param>
    /// <param name="maxLines">Transcript bound.</param>
    public SerialConsole(Stream fromGuest, Stream? toGuest, int maxLines = 200_000)
    {
        _input = fromGuest;
        _output = toGuest;
        _maxLines = maxLines;
        _ = Task.Run(PumpAsync);
    }

    /// <summary>Raised on a reader thread for every complete line (without the line terminator).</summary>
    public event Action<string>? LineReceived;

    /// <summary>Completes when the guest side of the console closes (QEMU exited).</summary>
    public Task Closed => _closed.Task;

    /// <summary>Index the next received line will have; use with <see cref="WaitForLineAsync"/>.</summary>
    public long Position
    {
        get { lock (_gate) return _dropped + _lines.Count; }
    }

    /// <summary>Lines received so far (bounded).</summary>
    public IReadOnlyList<string> Transcript
    {
        get { lock (_gate) return _lines.ToArray(); }
    }

    /// <summary>Lines from absolute position <paramref name="from"/> (inclusive) to <paramref name="to"/> (exclusive).</summary>
    public IReadOnlyList<string> GetLines(long from, long to)
    {
        lock (_gate)
        {
            long start = Math.Max(from, _dropped);
            long end = Math.Min(to, _dropped + _lines.Count);
            var result = new List<string>((int)Math.Max(0, end - start));
            for (long i = start; i < end; i++)
                result.Add(_lines[(int)(i - _dropped)]);
            return result;
        }
    }

    /// <summary>Waits for the first line at or after <paramref name="from"/> matching <paramref name="predicate"/>.</summary>
    /// <exception cref="TimeoutException">No such line within <paramref name="timeout"/>; the message quotes the last lines seen.</exception>
    public async Task<string> WaitForLineAsync(Func<string, bool> predicate, TimeSpan timeout, long from = 0, CancellationToken cancellationToken = default)
    {
        var waiter = new Waiter(from, predicate, new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously));
        lock (_gate)
        {
            for (long i = Math.Max(from, _dropped); i < _dropped + _lines.Count; i++)
            {
                string line = _lines[(int)(i - _dropped)];
                if (predicate(line))
                    return line;
            }
            _waiters.Add(waiter);
        }
        try
        {
            Task finished = await Task.WhenAny(waiter.Done.Task, _closed.Task, Task.Delay(timeout, cancellationToken)).ConfigureAwait(false);
            if (finished == waiter.Done.Task)
                return await waiter.Done.Task.ConfigureAwait(false);
            cancellationToken.ThrowIfCancellationRequested();
            string tail = string.Join("\n", GetLines(Position - 15, Position));
            throw new TimeoutException(finished == _closed.Task
                ? $"the guest console closed before the expected line. Last lines:\n{tail}"
                : $"no expected line on the guest console within {timeout.TotalSeconds:0.#} s. Last lines:\n{tail}");
        }
        finally
        {
            lock (_gate)
                _waiters.Remove(waiter);
        }
    }

    /// <summary>Sends one line to the guest.</summary>
    /// <exception cref="InvalidOperationException">The console is read-only.</exception>
    public async Task WriteLineAsync(string line, CancellationToken cancellationToken = default)
    {
        if (_output is null)
            throw new InvalidOperationException("this console has no input side");
        byte[] bytes = Encoding.UTF8.GetBytes(line + "\n");
        await _output.WriteAsync(bytes, cancellationToken).ConfigureAwait(false);
        await _output.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task PumpAsync()
    {
        var buffer = new byte[16 * 1024];
        var line = new List<byte>(256);
        try
        {
            while (true)
            {
                int n = await _input.ReadAsync(buffer).ConfigureAwait(false);
                if (n == 0)
                    break;
                for (int i = 0; i < n; i++)
                {
                    byte b = buffer[i];
                    if (b == (byte)'\n' || line.Count >= MaxLineLength)
                    {
                        if (line.Count > 0 && line[^1] == (byte)'\r')
                            line.RemoveAt(line.Count - 1);
                        Publish(Encoding.UTF8.GetString(line.ToArray()));
                        line.Clear();
                        if (b == (byte)'\n')
                            continue;
                    }
                    line.Add(b);
                }
            }
        }
        catch (IOException)
        {
            // The pipe broke because QEMU died: treated as closed below.
        }
        catch (ObjectDisposedException)
        {
        }
        if (line.Count > 0)
            Publish(Encoding.UTF8.GetString(line.ToArray()));
        _closed.TrySetResult();
    }

    private void Publish(string text)
    {
        List<Waiter>? hit = null;
        lock (_gate)
        {
            long index = _dropped + _lines.Count;
            _lines.Add(text);
            if (_lines.Count > _maxLines)
            {
                int drop = _lines.Count - _maxLines;
                _lines.RemoveRange(0, drop);
                _dropped += drop;
            }
            foreach (var w in _waiters)
            {
                if (index >= w.From && w.Predicate(text))
                    (hit ??= []).Add(w);
            }
        }
        if (hit is not null)
        {
            foreach (var w in hit)
                w.Done.TrySetResult(text);
        }
        LineReceived?.Invoke(text);
    }

    public void Dispose()
    {
        _output?.Dispose();
        _input.Dispose();
    }
}
