using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace ModelCompression.Onnx;

/// <summary>
/// Names of temporary files and candidates: unique per write and carrying the writing process's id
/// (<c>out.onnx.~4711-&lt;guid&gt;.tmp</c>), so two runs never share one, and a run can tell the leftovers of a run that
/// was killed (kill -9, power loss: no finally block ran) from the files of a run still going, and remove them.
/// </summary>
public static partial class TempFiles
{
    /// <summary>A token no other write uses: <c>~&lt;process id&gt;-&lt;guid&gt;</c>.</summary>
    public static string NewToken() => $"~{Environment.ProcessId.ToString(CultureInfo.InvariantCulture)}-{Guid.NewGuid():N}";

    /// <summary>A temporary name for <paramref name="path"/>: <c>path.~pid-guid.tmp</c>, in the same folder (so a rename is atomic).</summary>
    public static string For(string path) => $"{path}.{NewToken()}.tmp";

    /// <summary>
    /// Deletes, in <paramref name="directory"/>, the files (and folders) named <c>prefix…~pid-guid…</c> whose process has ended:
    /// temporaries and candidates a killed run left behind. Files of live processes (this one included) are left;
    /// a file that cannot be deleted is skipped. Returns the deleted paths.
    /// </summary>
    public static IReadOnlyList<string> RemoveStale(string directory, string prefix)
    {
        var removed = new List<string>();
        if (!Directory.Exists(directory)) return removed;
        IEnumerable<string> files;
        // Folders too: a search keeps its private pass cache in one.
        try { files = Directory.EnumerateFileSystemEntries(directory, prefix + "*").ToList(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return removed; }
        foreach (var file in files)
        {
            var match = TokenPattern().Match(Path.GetFileName(file));
            if (!match.Success || !int.TryParse(match.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out var pid)) continue;
            if (pid == Environment.ProcessId || IsRunning(pid)) continue;
            try
            {
                if (Directory.Exists(file)) Directory.Delete(file, recursive: true);
                else File.Delete(file);
                removed.Add(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        return removed;
    }

    private static bool IsRunning(int pid)
    {
        try
        {
            using var process = Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException) { return false; } // no such process
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception or NotSupportedException) { return true; } // cannot tell: keep the file
    }

    [GeneratedRegex(@"\.~([0-9]{1,10})-[0-9a-f]{32}\.")]
    private static partial Regex TokenPattern();
}
