using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Vmi.Core;

namespace Vmi.Memory;

/// <summary>Throw sites kept out of hot methods so those stay small enough to inline.</summary>
internal static class ThrowHelper
{
    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    public static void GuestMemory(string message) => throw new GuestMemoryException(message);

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    public static void ArgumentOutOfRange(string paramName, string message) =>
        throw new ArgumentOutOfRangeException(paramName, message);

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    public static void ObjectDisposed(object instance) => throw new ObjectDisposedException(instance.GetType().Name);
}
