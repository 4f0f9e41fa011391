using System.IO.MemoryMappedFiles;

namespace ModelCompression.Onnx;

/// <summary>
/// An external-data file mapped whole and read-only, under the location a model's tensors name it by: what a runtime
/// that takes external data from memory reads. It must outlive every session given it.
/// </summary>
public sealed unsafe class ExternalFileMap : IDisposable
{
    private readonly FileStream? _stream;
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _base;

    internal ExternalFileMap(FileStream stream, string location, long length, bool leaveOpen)
    {
        Location = location;
        Length = length;
        if (!leaveOpen) _stream = stream;
        if (length == 0) return;
        _map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true);
        _view = _map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _base = p;
        Pointer = (nint)(p + _view.PointerOffset);
    }

    /// <summary>The external-data location the tensors carry (as written in them).</summary>
    public string Location { get; }

    public nint Pointer { get; }

    public long Length { get; }

    /// <summary>Drops the pages read through this map from the resident set (they stay in the page cache).</summary>
    public void ReleasePages()
    {
        if (_view is null || !(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())) return;
        Native.DontNeedWithin((nint)_base, Pointer - (nint)_base, Length);
    }

    public void Dispose()
    {
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
            _map!.Dispose();
        }
        _stream?.Dispose();
    }
}
