using System.Net.Sockets;

namespace Vmi.Qemu;

/// <summary>Connects to a QEMU endpoint that may not be listening yet (QEMU still starting), retrying until a deadline.</summary>
internal static class SocketConnector
{
    private static readonly TimeSpan RetryDelay = TimeSpan.FromMilliseconds(50);

    /// <param name="create">Makes a fresh socket for each attempt.</param>
    /// <param name="connect">One connection attempt.</param>
    /// <param name="remaining">Time left before the caller's deadline.</param>
    /// <param name="fail">The exception to throw when time runs out, given the last socket error.</param>
    /// <param name="ct">Cancels the whole attempt.</param>
    public static async Task<Socket> ConnectWithRetryAsync(Func<Socket> create, Func<Socket, CancellationToken, ValueTask> connect,
        Func<TimeSpan> remaining, Func<SocketException?, Exception> fail, CancellationToken ct)
    {
        SocketException? last = null;
        while (true)
        {
            Socket socket = create();
            try
            {
                using var attempt = CancellationTokenSource.CreateLinkedTokenSource(ct);
                TimeSpan left0 = remaining();
                attempt.CancelAfter(left0 > TimeSpan.FromMilliseconds(1) ? left0 : TimeSpan.FromMilliseconds(1));
                await connect(socket, attempt.Token).ConfigureAwait(false);
                return socket;
            }
            catch (SocketException e)
            {
                // ENOENT / ECONNREFUSED while QEMU is still starting up.
                socket.Dispose();
                last = e;
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                socket.Dispose();
                break;
            }
            catch
            {
                socket.Dispose();
                throw;
            }

            TimeSpan left = remaining();
            if (left <= TimeSpan.Zero)
                break;
            await Task.Delay(left < RetryDelay ? left : RetryDelay, ct).ConfigureAwait(false);
        }
        throw fail(last);
    }
}
