namespace ModelCompression.Onnx;

/// <summary>
/// A private side file that holds tensors a model has built, so their bytes live in the page cache (and on disk)
/// rather than in the process's heap until the model is saved. Its name is unique to the process and the write; on
/// Linux and macOS it is unlinked as soon as it is open, so nothing is left behind even by a run that is killed.
/// Each tensor is written once at a 4 KiB boundary and mapped on its first read.
/// </summary>
internal sealed unsafe class SpillFile : IDisposable
{
    private const long Alignment = 4096;
    private readonly FileStream _stream;
    private readonly Dictionary<long, MappedRange> _regions = [];
    private readonly object _gate = new();
    private long _end;

    /// <param name="pathPrefix">Folder and start of the name: the file is <c>&lt;prefix&gt;.~pid-guid.spill</c>, a name
    /// <see cref="TempFiles.RemoveStale"/> knows (where it could not be unlinked at once).</param>
    public SpillFile(string pathPrefix)
    {
        // A location no model file can name: the token is not known before the run.
        var path = $"{Path.GetFullPath(pathPrefix)}.{TempFiles.NewToken()}.spill";
        Location = Path.GetFileName(path);
        var unlinkNow = OperatingSystem.IsLinux() || OperatingSystem.IsMacOS();
        _stream = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 4096,
            unlinkNow ? FileOptions.None : FileOptions.DeleteOnClose);
        // The open handle keeps the file's blocks; the name is not needed to write or map them.
        if (unlinkNow) File.Delete(path);
    }

    /// <summary>The name tensors stored here carry as their external-data location.</summary>
    public string Location { get; }

    /// <summary>Bytes written so far (the tensors' lengths, not the alignment).</summary>
    public long Bytes { get; private set; }

    /// <summary>Appends the bytes; returns where they are.</summary>
    public long Append(ReadOnlySpan<byte> bytes)
    {
        lock (_gate)
        {
            var offset = (_end + Alignment - 1) / Alignment * Alignment;
            RandomAccess.Write(_stream.SafeFileHandle, bytes, offset);
            _end = offset + bytes.Length;
            Bytes += bytes.Length;
            return offset;
        }
    }

    public ReadOnlySpan<byte> Read(long offset, long length)
    {
        if (length == 0) return ReadOnlySpan<byte>.Empty;
        lock (_gate)
        {
            if (!_regions.TryGetValue(offset, out var region))
            {
                if (offset % Alignment != 0 || offset + length > _end) throw new OnnxFormatException($"spilled tensor at {offset} (+{length}) is not in the spill file");
                // The file grows after a map is made, so each tensor has a map of its own.
                region = new MappedRange(_stream, offset, length, ownsStream: false);
                _regions.Add(offset, region);
            }
            if (length > region.Length) throw new OnnxFormatException($"spilled tensor at {offset} is {region.Length} bytes, not {length}");
            return new ReadOnlySpan<byte>(region.Pointer, (int)length);
        }
    }

    /// <summary>Drops the tensor's pages from the resident set (they stay in the page cache).</summary>
    public void Release(long offset)
    {
        MappedRange? region;
        lock (_gate) _regions.TryGetValue(offset, out region);
        region?.ReleasePages();
    }

    /// <summary>
    /// The whole file as written so far, mapped read-only, for a runtime that takes external data from memory: the
    /// view must outlive every session given it.
    /// </summary>
    public ExternalFileMap MapWhole()
    {
        lock (_gate) return new ExternalFileMap(Location, new MappedRange(_stream, 0, _end, ownsStream: false));
    }

    public void ReleaseAll()
    {
        lock (_gate)
            foreach (var region in _regions.Values) region.ReleasePages();
    }

    public void Dispose()
    {
        lock (_gate)
        {
            foreach (var region in _regions.Values) region.Dispose();
            _regions.Clear();
            _stream.Dispose();
        }
    }
}
