namespace ModelCompression.Onnx;

/// <summary>
/// An external-data file mapped whole and read-only, under the location a model's tensors name it by: what a runtime
/// that takes external data from memory reads. It must outlive every session given it.
/// </summary>
public sealed unsafe class ExternalFileMap : IDisposable
{
    private readonly MappedRange _range;

    internal ExternalFileMap(string location, MappedRange range)
    {
        Location = location;
        _range = range;
    }

    /// <summary>The external-data location the tensors carry (as written in them).</summary>
    public string Location { get; }

    public nint Pointer => (nint)_range.Pointer;

    public long Length => _range.Length;

    /// <summary>Drops the pages read through this map from the resident set (they stay in the page cache).</summary>
    public void ReleasePages() => _range.ReleasePages();

    public void Dispose() => _range.Dispose();
}
