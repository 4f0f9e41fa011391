using System.IO.MemoryMappedFiles;
using Google.Protobuf.Collections;
using ModelCompression.Onnx.Protobuf;

namespace ModelCompression.Onnx;

/// <summary>Where a tensor's bytes live when <c>data_location</c> is EXTERNAL.</summary>
public readonly record struct ExternalDataInfo(string Location, long Offset, long Length)
{
    /// <summary>Parses and checks a tensor's <c>external_data</c> entries (location is required; offset/length optional).</summary>
    public static ExternalDataInfo Parse(TensorProto tensor)
    {
        string? location = null;
        long offset = 0, length = -1;
        foreach (var entry in tensor.ExternalData)
        {
            switch (entry.Key)
            {
                case "location": location = entry.Value; break;
                case "offset": offset = ParseNonNegative(tensor, entry); break;
                case "length": length = ParseNonNegative(tensor, entry); break;
            }
        }
        if (string.IsNullOrEmpty(location))
            throw new OnnxFormatException($"tensor '{tensor.Name}': external data has no 'location' entry");
        return new ExternalDataInfo(location, offset, length);
    }

    private static long ParseNonNegative(TensorProto tensor, StringStringEntryProto entry)
    {
        if (!long.TryParse(entry.Value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var value))
            throw new OnnxFormatException($"tensor '{tensor.Name}': external data '{entry.Key}' is '{entry.Value}', not a non-negative integer");
        return value;
    }

    public static void Write(RepeatedField<StringStringEntryProto> target, string location, long offset, long length)
    {
        target.Clear();
        target.Add(new StringStringEntryProto { Key = "location", Value = location });
        target.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        target.Add(new StringStringEntryProto { Key = "length", Value = length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
    }
}

/// <summary>
/// Memory-maps external-data side files on first use, so a model whose weights live outside the .onnx file is read
/// without holding a second copy of them in memory. Shared by a model and its clones; the loading model disposes it.
/// </summary>
internal sealed unsafe class ExternalDataStore : IDisposable
{
    private readonly string _baseDirectory;
    private readonly Dictionary<string, MappedRange> _files = new(StringComparer.Ordinal);
    private readonly Dictionary<string, SpillFile> _spills = new(StringComparer.Ordinal);
    private readonly object _gate = new();

    public ExternalDataStore(string baseDirectory) => _baseDirectory = Path.GetFullPath(baseDirectory);

    public string BaseDirectory => _baseDirectory;

    public ReadOnlySpan<byte> Read(TensorProto tensor, long expectedLength)
    {
        var info = ExternalDataInfo.Parse(tensor);
        if (Spill(info.Location) is { } spill) return spill.Read(info.Offset, info.Length >= 0 ? info.Length : expectedLength);
        var file = Open(tensor.Name, info.Location);
        var length = info.Length >= 0 ? info.Length : expectedLength >= 0 ? expectedLength : file.Length - info.Offset;
        if (info.Offset > file.Length || length > file.Length - info.Offset)
            throw new OnnxFormatException(
                $"tensor '{tensor.Name}': external data at offset {info.Offset} length {length} runs past the end of '{info.Location}' ({file.Length} bytes)");
        if (length > int.MaxValue)
            throw new OnnxFormatException($"tensor '{tensor.Name}': {length} bytes of external data exceed the 2 GB a single tensor view can hold");
        return file.Length == 0 ? ReadOnlySpan<byte>.Empty : new ReadOnlySpan<byte>(file.Pointer + info.Offset, (int)length);
    }

    /// <summary>
    /// Drops this process's mapping of the pages that hold the tensor's external bytes (they stay in the page cache
    /// and are read back on the next access). A pass that has read a weight once calls it, so the resident set
    /// holds the weight being worked on, not every weight read so far. Linux and macOS; elsewhere it does nothing.
    /// </summary>
    public void Release(TensorProto tensor)
    {
        if (!(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())) return;
        var info = ExternalDataInfo.Parse(tensor);
        if (Spill(info.Location) is { } spill) { spill.Release(info.Offset); return; }
        MappedRange? file;
        lock (_gate) _files.TryGetValue(info.Location, out file);
        if (file is null || info.Offset >= file.Length) return;
        var length = info.Length >= 0 ? Math.Min(info.Length, file.Length - info.Offset) : file.Length - info.Offset;
        file.ReleasePages(info.Offset, length);
    }

    /// <summary>Drops this process's mapping of every mapped page (see <see cref="Release(TensorProto)"/>).</summary>
    public void ReleaseAll()
    {
        if (!(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())) return;
        lock (_gate)
        {
            foreach (var file in _files.Values) file.ReleasePages();
            foreach (var spill in _spills.Values) spill.ReleaseAll();
        }
    }

    /// <summary>Makes the spill file's tensors readable through this store (by its location, which no model file names).</summary>
    public void Register(SpillFile spill)
    {
        lock (_gate) _spills.Add(spill.Location, spill);
    }

    public void Unregister(SpillFile spill)
    {
        lock (_gate) _spills.Remove(spill.Location);
    }

    /// <summary>The spill file a location names, or null for a location of the model's own files.</summary>
    public SpillFile? Spill(string location)
    {
        lock (_gate) return _spills.TryGetValue(location, out var spill) ? spill : null;
    }

    /// <summary>
    /// Resolves a location relative to the model folder; locations that escape it are rejected: by their text
    /// (absolute, <c>..</c>) and after following links, so a symlink inside the folder cannot reach a file outside.
    /// </summary>
    public static string ResolveLocation(string baseDirectory, string tensorName, string location)
    {
        if (Path.IsPathRooted(location) || location.Contains('\\') && Path.IsPathRooted(location.Replace('\\', '/')))
            throw new OnnxFormatException($"tensor '{tensorName}': external data location '{location}' is an absolute path; it must be relative to the model's folder");
        var full = Path.GetFullPath(Path.Combine(baseDirectory, location));
        if (!IsInside(full, Path.GetFullPath(baseDirectory)))
            throw new OnnxFormatException($"tensor '{tensorName}': external data location '{location}' escapes the model's folder");
        // The model folder itself may be reached through links (/tmp on macOS); compare real paths with real paths.
        var real = RealPath(full);
        if (!IsInside(real, RealPath(baseDirectory)))
            throw new OnnxFormatException($"tensor '{tensorName}': external data location '{location}' escapes the model's folder through a symbolic link");
        // The real path: sizes and maps of a link are those of its target.
        return real;
    }

    private static bool IsInside(string path, string directory) =>
        path.StartsWith(Path.TrimEndingDirectorySeparator(directory) + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    /// <summary>The path with every link along it followed (parts that do not exist are kept as written).</summary>
    internal static string RealPath(string path)
    {
        var full = Path.GetFullPath(path);
        var root = Path.GetPathRoot(full)!;
        var current = root;
        var parts = new Queue<string>(full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries));
        // Each link followed can add parts; a bound on the links followed stops loops (a -> b -> a).
        for (var links = 0; parts.Count > 0;)
        {
            var next = Path.Combine(current, parts.Dequeue());
            FileSystemInfo info = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
            if (info.LinkTarget is not { } target) { current = next; continue; }
            if (++links > 40) throw new OnnxFormatException($"'{path}': too many levels of symbolic links");
            var resolved = Path.GetFullPath(target, current);
            var rest = parts.ToArray();
            parts = new Queue<string>(resolved[Path.GetPathRoot(resolved)!.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries).Concat(rest));
            current = Path.GetPathRoot(resolved)!;
        }
        return current;
    }

    /// <summary>
    /// A map of its own of the whole file a location names (a spill file or one of the model's, confined to its folder
    /// as every read is), for a runtime that reads it while this store may let go of its pages.
    /// </summary>
    public ExternalFileMap MapWhole(string tensorName, string location)
    {
        if (Spill(location) is { } spill) return spill.MapWhole();
        var path = ResolveLocation(_baseDirectory, tensorName, location);
        if (!File.Exists(path))
            throw new OnnxFormatException($"tensor '{tensorName}': external data file '{location}' does not exist next to the model");
        return new ExternalFileMap(location, MapFile(path));
    }

    private MappedRange Open(string tensorName, string location)
    {
        lock (_gate)
        {
            if (_files.TryGetValue(location, out var existing)) return existing;
            var path = ResolveLocation(_baseDirectory, tensorName, location);
            if (!File.Exists(path))
                throw new OnnxFormatException($"tensor '{tensorName}': external data file '{location}' does not exist next to the model");
            var mapped = MapFile(path);
            _files.Add(location, mapped);
            return mapped;
        }
    }

    private static MappedRange MapFile(string path)
    {
        try
        {
            // The length of what is opened (a link's target; 0 for a device such as /dev/zero), not of the path.
            var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            return new MappedRange(stream, 0, stream.Length, ownsStream: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new OnnxFormatException($"external data file '{Path.GetFileName(path)}' cannot be read: {e.Message}");
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            foreach (var file in _files.Values) file.Dispose();
            _files.Clear();
        }
    }
}
