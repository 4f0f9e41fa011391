using System.IO.MemoryMappedFiles;

namespace ModelCompression.Onnx;

/// <summary>
/// A read-only memory map of [offset, offset + length) of an open file: how external data, spilled tensors and the
/// files handed to a runtime are read without a copy in the heap. An empty range maps nothing.
/// </summary>
internal sealed unsafe class MappedRange : IDisposable
{
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly FileStream? _ownedStream;
    private readonly byte* _base;

    /// <param name="ownsStream">Dispose the stream with the map (the map does not need it open once made).</param>
    public MappedRange(FileStream stream, long offset, long length, bool ownsStream)
    {
        Length = length;
        if (ownsStream) _ownedStream = stream;
        if (length == 0) return;
        try
        {
            _map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true);
            _view = _map.CreateViewAccessor(offset, length, MemoryMappedFileAccess.Read);
        }
        catch
        {
            _map?.Dispose();
            _ownedStream?.Dispose();
            throw;
        }
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _base = p;
        Pointer = p + _view.PointerOffset;
    }

    /// <summary>The range's first byte (null when it is empty).</summary>
    public byte* Pointer { get; }

    public long Length { get; }

    /// <summary>
    /// Drops the pages wholly inside [start, start + length) of the range from the resident set (they stay in the page
    /// cache and are read back on the next access). Linux and macOS; elsewhere it does nothing.
    /// </summary>
    public void ReleasePages(long start, long length)
    {
        if (_view is null || !(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())) return;
        Native.DontNeedWithin((nint)_base, Pointer - _base + start, length);
    }

    public void ReleasePages() => ReleasePages(0, Length);

    public void Dispose()
    {
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
            _map!.Dispose();
        }
        _ownedStream?.Dispose();
    }
}

internal static partial class Native
{
    /// <summary>MADV_DONTNEED: the same value on Linux and macOS.</summary>
    public const int DontNeed = 4;

    private static bool _unavailable;

    /// <summary>
    /// The advice is only an optimization of the resident set: a C library that cannot be loaded or lacks madvise turns
    /// it off for the process instead of failing the run.
    /// </summary>
    public static void DontNeedPages(nint address, nuint length)
    {
        if (_unavailable) return;
        try { _ = madvise(address, length, DontNeed); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { _unavailable = true; }
    }

    /// <summary>
    /// Drops the pages wholly inside [start, start + length) of a mapping that begins at <paramref name="mappingBase"/>
    /// (a mapping starts on a page; a page shared with bytes outside the range is kept).
    /// </summary>
    public static void DontNeedWithin(nint mappingBase, long start, long length)
    {
        var page = Environment.SystemPageSize;
        var first = (start + page - 1) / page * page;
        var end = (start + length) / page * page;
        if (end > first) DontNeedPages(mappingBase + (nint)first, (nuint)(end - first));
    }

    [System.Runtime.InteropServices.LibraryImport("libc", SetLastError = true)]
    private static partial int madvise(nint address, nuint length, int advice);
}
