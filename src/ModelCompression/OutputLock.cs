using System.Security.Cryptography;
using System.Text;

namespace ModelCompression;

/// <summary>
/// Serializes, across processes, the end of runs that write the same output or the same reports: the output (or
/// the kept candidate) and the reports are written as one step, so the reports next to an output are always those of
/// the run whose model it is, and a passing run never deletes the candidate a failing run is about to report.
/// The lock files live in the temp folder (never next to the outputs) and hold no data.
/// </summary>
public sealed class OutputLock : IDisposable
{
    private readonly List<FileStream> _held;

    private OutputLock(List<FileStream> held) => _held = held;

    /// <summary>Waits until no other run holds any of <paramref name="paths"/> (full paths), then holds them all.</summary>
    public static OutputLock Acquire(IEnumerable<string> paths, CancellationToken cancellation)
    {
        // One fixed order for every run, so two runs that need the same two locks cannot deadlock.
        var files = paths.Select(LockFile).OfType<string>().Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();
        var held = new List<FileStream>();
        try
        {
            foreach (var file in files)
            {
                FileStream? stream;
                var unusable = false;
                while ((stream = TryOpen(file, out unusable)) is null && !unusable) cancellation.WaitHandle.WaitOne(50);
                cancellation.ThrowIfCancellationRequested();
                if (stream is not null) held.Add(stream); // a lock folder that cannot be written: run unserialized, as before locks

            }
            return new OutputLock(held);
        }
        catch
        {
            foreach (var stream in held) stream.Dispose();
            throw;
        }
    }

    /// <summary>The lock for one path, or null when another run (or another thread) holds it now.</summary>
    public static OutputLock? TryAcquire(string path) => LockFile(path) is { } file && TryOpen(file, out _) is { } stream ? new OutputLock([stream]) : null;

    private static FileStream? TryOpen(string file, out bool unusable)
    {
        unusable = false;
        try { return new FileStream(file, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
        catch (IOException) when (File.Exists(file)) { return null; } // held by another run
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { unusable = true; return null; }
    }

    private static string? LockFile(string path)
    {
        var comparable = OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? path.ToUpperInvariant() : path;
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(comparable)))[..32];
        var folder = Path.Combine(Path.GetTempPath(), "compress-model-locks");
        try { Directory.CreateDirectory(folder); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
        return Path.Combine(folder, hash + ".lock");
    }

    public void Dispose()
    {
        foreach (var stream in _held) stream.Dispose();
        _held.Clear();
    }
}
