using System.Reflection;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;

namespace ModelCompression.Runtime;

/// <summary>
/// Chooses the native ONNX Runtime library before the first ORT call. A process can load only one: the engine uses
/// the CPU build that ships with it unless a front end names another (e.g. the CUDA build) first.
/// </summary>
public static class OnnxRuntimeLoader
{
    private static string? _requested;
    private static bool _configured;
    private static readonly object Gate = new();

    /// <summary>The library actually loaded ("bundled" for the package's own).</summary>
    public static string LoadedLibrary { get; private set; } = "bundled";

    /// <summary>
    /// Names the native library to load; must run before any session is created. Null states no preference and never
    /// undoes another caller's choice. Returns false when a different library was already chosen or loaded.
    /// </summary>
    public static bool UseLibrary(string? path)
    {
        lock (Gate)
        {
            if (path is null || path == _requested) return true;
            if (_configured || _requested is not null) return false;
            _requested = path;
            return true;
        }
    }

    internal static void EnsureConfigured()
    {
        lock (Gate)
        {
            if (_configured) return;
            _configured = true;
            if (_requested is null) return;
            var path = Path.GetFullPath(_requested);
            LoadedLibrary = path;
            NativeLibrary.SetDllImportResolver(typeof(OrtEnv).Assembly, (name, _, _) =>
                name.Contains("onnxruntime", StringComparison.Ordinal) && !name.Contains("providers", StringComparison.Ordinal) ? NativeLibrary.Load(path) : IntPtr.Zero);
        }
    }

    /// <summary>
    /// The native library a policy needs: the one it names, else for CUDA the GPU build restored from the
    /// Microsoft.ML.OnnxRuntime.Gpu.Linux package in the NuGet cache (null keeps the bundled CPU build).
    /// </summary>
    public static string? LibraryFor(Policy.CompressionPolicy policy) =>
        policy.Execution.OnnxRuntimeLibrary ?? (policy.Execution.ExecutionProvider.IsCuda ? FindRestoredGpuLibrary() : null);

    public static string? FindRestoredGpuLibrary()
    {
        if (!OperatingSystem.IsLinux()) return null;
        var cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var package = Path.Combine(cache, "microsoft.ml.onnxruntime.gpu.linux");
        if (!Directory.Exists(package)) return null;
        var expected = AssemblyVersion.Split('+')[0];
        var candidates = Directory.GetDirectories(package)
            .Select(v => Path.Combine(v, "runtimes", "linux-x64", "native", "libonnxruntime.so"))
            .Where(File.Exists)
            .OrderByDescending(p => p.Contains(Path.DirectorySeparatorChar + expected + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            .ThenByDescending(p => p, StringComparer.Ordinal)
            .ToList();
        return candidates.FirstOrDefault();
    }

    public static IReadOnlyList<string> AvailableProviders()
    {
        EnsureConfigured();
        return OrtEnv.Instance().GetAvailableProviders();
    }

    public static string Version()
    {
        EnsureConfigured();
        return OrtEnv.Instance().GetVersionString();
    }

    /// <summary>Where the native library was found on disk (for `doctor`).</summary>
    public static string? NativeLibraryPath()
    {
        if (_requested is not null) return Path.GetFullPath(_requested);
        var baseDir = AppContext.BaseDirectory;
        var rid = RuntimeInformation.RuntimeIdentifier;
        var file = OperatingSystem.IsWindows() ? "onnxruntime.dll" : OperatingSystem.IsMacOS() ? "libonnxruntime.dylib" : "libonnxruntime.so";
        foreach (var candidate in new[] { Path.Combine(baseDir, file), Path.Combine(baseDir, "runtimes", rid, "native", file) }
                     .Concat(Directory.Exists(Path.Combine(baseDir, "runtimes")) ? Directory.GetFiles(Path.Combine(baseDir, "runtimes"), file, SearchOption.AllDirectories) : []))
            if (File.Exists(candidate)) return candidate;
        return null;
    }

    internal static string AssemblyVersion => typeof(OrtEnv).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "?";
}
