using System.Buffers.Binary;
using System.Globalization;
using System.Net;

namespace Vmi.Linux.Model;

/// <summary>
/// An inet TCP or UDP socket with the process that holds it open (what netstat -tunap shows).
/// Addresses are formatted by <see cref="IPAddress"/>; ports are host numbers; <see cref="State"/> is
/// the TCP state name (UDP sockets use the same numbers: "CLOSE" unconnected, "ESTABLISHED" connected).
/// </summary>
public sealed record LinuxSocket(string Protocol, string LocalAddress, int LocalPort, string RemoteAddress, int RemotePort, string State, ulong Inode, int Pid, string Comm, ulong SockAddress)
{
    /// <summary>The numeric state /proc/net/* prints (TCP_ESTABLISHED 1 … TCP_NEW_SYN_RECV 12).</summary>
    public int StateNumber { get; init; }
}

public sealed partial class LinuxKernel
{
    /// <summary>Upper bound of sockets reported.</summary>
    public const int MaxSockets = 1 << 20;

    private const int AfInet = 2;
    private const int AfInet6 = 10;
    private const int IpprotoTcp = 6;
    private const int IpprotoUdp = 17;
    private const int SockStream = 1;
    private const int SockDgram = 2;

    private static readonly string[] TcpStates =
    [
        "", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV",
    ];

    /// <summary>The name of a TCP state number (include/net/tcp_states.h).</summary>
    public static string TcpStateName(int state) =>
        state > 0 && state < TcpStates.Length ? TcpStates[state] : "UNKNOWN(" + state.ToString(CultureInfo.InvariantCulture) + ")";

    /// <summary>
    /// The inet TCP/UDP sockets held open by processes: every process's socket files
    /// (file->private_data is the struct socket, socket->sk the struct sock). A socket open in several
    /// processes is reported once, with the first process (lowest pid) that has it.
    /// </summary>
    public KernelList<LinuxSocket> GetSockets()
    {
        var procs = GetProcesses();
        var issues = new List<KernelWalkIssue>(procs.Issues);
        var result = new List<LinuxSocket>();
        var seen = new HashSet<ulong>();
        var o = new SocketOffsets(Types);
        bool haveSockOps = _symbols.TryGetAddress("socket_file_ops", out ulong sockOps);
        if (!haveSockOps)
            issues.Add(new KernelWalkIssue("symbols", 0, "socket_file_ops is not in the symbol table; sockets are recognised by their filesystem (sockfs)"));
        foreach (LinuxProcess p in procs.Items.OrderBy(p => p.Pid))
        {
            if (p.IsKernelThread)
                continue;
            foreach (var (fd, file) in FileTable(p, issues))
            {
                if (!_kernel.TryReadUInt64(file + (ulong)o.FileOp, out ulong op))
                {
                    issues.Add(new KernelWalkIssue("file", file, $"fd {fd} of pid {p.Pid} is unreadable"));
                    continue;
                }
                _kernel.TryReadUInt64(file + (ulong)o.FileInode, out ulong fileInode);
                bool isSocket = haveSockOps ? op == sockOps : FsTypeName(fileInode) == "sockfs";
                if (!isSocket)
                    continue;
                if (!_kernel.TryReadUInt64(file + (ulong)o.FilePrivate, out ulong socket) || socket == 0)
                {
                    issues.Add(new KernelWalkIssue("file", file, $"socket file fd {fd} of pid {p.Pid} has no readable struct socket"));
                    continue;
                }
                if (!seen.Add(socket))
                    continue;
                if (result.Count >= MaxSockets)
                {
                    issues.Add(new KernelWalkIssue("socket", socket, $"more than {MaxSockets} sockets"));
                    return new KernelList<LinuxSocket>(result, issues);
                }
                LinuxSocket? s = ReadSocket(o, socket, fileInode, p, issues);
                if (s is not null)
                    result.Add(s);
            }
        }
        return new KernelList<LinuxSocket>(result, issues);
    }

    private LinuxSocket? ReadSocket(SocketOffsets o, ulong socket, ulong fileInode, LinuxProcess p, List<KernelWalkIssue> issues)
    {
        if (!_kernel.TryReadUInt64(socket + (ulong)o.SocketSk, out ulong sk))
        {
            issues.Add(new KernelWalkIssue("socket", socket, $"struct socket of pid {p.Pid} is unreadable"));
            return null;
        }
        if (sk == 0)
            return null; // released or not yet connected to a protocol
        Span<byte> family = stackalloc byte[2];
        Span<byte> state = stackalloc byte[1];
        Span<byte> ports = stackalloc byte[4];
        if (!_kernel.TryRead(sk + (ulong)o.Family, family) || !_kernel.TryRead(sk + (ulong)o.State, state)
            || !_kernel.TryRead(sk + (ulong)o.Num, ports[..2]) || !_kernel.TryRead(sk + (ulong)o.Dport, ports[2..]))
        {
            issues.Add(new KernelWalkIssue("sock", sk, $"struct sock of pid {p.Pid} is unreadable"));
            return null;
        }
        int af = BinaryPrimitives.ReadUInt16LittleEndian(family);
        if (af is not (AfInet or AfInet6))
            return null;
        if (!TryReadField(sk, o.Protocol, out ulong protocol) || !TryReadField(sk, o.Type, out ulong type))
        {
            issues.Add(new KernelWalkIssue("sock", sk, $"sk_protocol/sk_type of pid {p.Pid} is unreadable"));
            return null;
        }
        // A raw socket (SOCK_RAW 3) may carry protocol 6 or 17 too: only TCP streams and UDP datagrams count.
        string? proto = (protocol, type) switch
        {
            (IpprotoTcp, SockStream) => "tcp",
            (IpprotoUdp, SockDgram) => "udp",
            _ => null,
        };
        if (proto is null)
            return null;
        if (af == AfInet6)
            proto += "6";
        int localPort = BinaryPrimitives.ReadUInt16LittleEndian(ports);
        int remotePort = BinaryPrimitives.ReadUInt16BigEndian(ports[2..]);
        string local, remote;
        if (af == AfInet)
        {
            Span<byte> a = stackalloc byte[8];
            if (!_kernel.TryRead(sk + (ulong)o.RcvSaddr, a[..4]) || !_kernel.TryRead(sk + (ulong)o.Daddr, a[4..]))
            {
                issues.Add(new KernelWalkIssue("sock", sk, $"addresses of pid {p.Pid}'s socket are unreadable"));
                return null;
            }
            local = new IPAddress(a[..4]).ToString();
            remote = new IPAddress(a[4..]).ToString();
        }
        else
        {
            Span<byte> a = stackalloc byte[32];
            if (o.V6RcvSaddr < 0 || o.V6Daddr < 0 || !_kernel.TryRead(sk + (ulong)o.V6RcvSaddr, a[..16]) || !_kernel.TryRead(sk + (ulong)o.V6Daddr, a[16..]))
            {
                issues.Add(new KernelWalkIssue("sock", sk, $"IPv6 addresses of pid {p.Pid}'s socket are unreadable"));
                return null;
            }
            local = new IPAddress(a[..16]).ToString();
            remote = new IPAddress(a[16..]).ToString();
        }
        // SOCK_INODE(socket): struct socket_alloc { struct socket socket; struct inode vfs_inode; }.
        ulong inodeAddr = socket - (ulong)o.AllocSocket + (ulong)o.AllocInode;
        if (!_kernel.TryReadUInt64(inodeAddr + (ulong)o.InodeIno, out ulong ino))
        {
            issues.Add(new KernelWalkIssue("socket", socket, $"inode of pid {p.Pid}'s socket is unreadable"));
            return null;
        }
        if (fileInode != 0 && fileInode != inodeAddr)
            issues.Add(new KernelWalkIssue("socket", socket, FormattableString.Invariant($"file's f_inode 0x{fileInode:x} is not the socket's own inode 0x{inodeAddr:x} (pid {p.Pid})")));
        int st = state[0];
        return new LinuxSocket(proto, local, localPort, remote, remotePort, TcpStateName(st), ino, p.Pid, p.Comm, sk) { StateNumber = st };
    }

    /// <summary>Reads an integer member (plain or bitfield) of a structure at <paramref name="baseAddress"/>.</summary>
    private bool TryReadField(ulong baseAddress, Btf.BtfMemberInfo m, out ulong value)
    {
        value = 0;
        if (!m.IsBitfield)
        {
            Span<byte> b = stackalloc byte[8];
            int size = Math.Clamp(m.Size, 1, 8);
            if (!_kernel.TryRead(baseAddress + (ulong)m.Offset, b[..size]))
                return false;
            value = BinaryPrimitives.ReadUInt64LittleEndian(b) & (size == 8 ? ulong.MaxValue : (1UL << (size * 8)) - 1);
            return true;
        }
        long firstByte = m.BitOffset / 8;
        int shift = (int)(m.BitOffset % 8);
        int bytes = (shift + m.BitfieldSize + 7) / 8;
        if (bytes > 8)
            return false;
        Span<byte> raw = stackalloc byte[8];
        raw.Clear();
        if (!_kernel.TryRead(baseAddress + (ulong)firstByte, raw[..bytes]))
            return false;
        ulong v = BinaryPrimitives.ReadUInt64LittleEndian(raw) >> shift;
        value = m.BitfieldSize >= 64 ? v : v & ((1UL << m.BitfieldSize) - 1);
        return true;
    }

    private sealed class SocketOffsets
    {
        public SocketOffsets(Btf.BtfTypes t)
        {
            FileOp = t.OffsetOf("file", "f_op");
            FileInode = t.OffsetOf("file", "f_inode");
            FilePrivate = t.OffsetOf("file", "private_data");
            SocketSk = t.OffsetOf("socket", "sk");
            int common = t.OffsetOf("sock", "__sk_common");
            Family = common + t.OffsetOf("sock_common", "skc_family");
            State = common + t.OffsetOf("sock_common", "skc_state");
            RcvSaddr = common + t.OffsetOf("sock_common", "skc_rcv_saddr");
            Daddr = common + t.OffsetOf("sock_common", "skc_daddr");
            Num = common + t.OffsetOf("sock_common", "skc_num");
            Dport = common + t.OffsetOf("sock_common", "skc_dport");
            V6RcvSaddr = t.TryOffsetOf("sock_common", "skc_v6_rcv_saddr", out int v6s) ? common + v6s : -1;
            V6Daddr = t.TryOffsetOf("sock_common", "skc_v6_daddr", out int v6d) ? common + v6d : -1;
            Protocol = t.ResolveMember("sock", "sk_protocol");
            Type = t.ResolveMember("sock", "sk_type");
            AllocSocket = t.OffsetOf("socket_alloc", "socket");
            AllocInode = t.OffsetOf("socket_alloc", "vfs_inode");
            InodeIno = t.OffsetOf("inode", "i_ino");
        }

        public int FileOp { get; }
        public int FileInode { get; }
        public int FilePrivate { get; }
        public int SocketSk { get; }
        public int Family { get; }
        public int State { get; }
        public int RcvSaddr { get; }
        public int Daddr { get; }
        public int Num { get; }
        public int Dport { get; }
        public int V6RcvSaddr { get; }
        public int V6Daddr { get; }
        public Btf.BtfMemberInfo Protocol { get; }
        public Btf.BtfMemberInfo Type { get; }
        public int AllocSocket { get; }
        public int AllocInode { get; }
        public int InodeIno { get; }
    }
}
