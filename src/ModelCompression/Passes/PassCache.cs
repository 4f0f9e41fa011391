using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Policy;

namespace ModelCompression.Passes;

/// <summary>
/// Intermediate models of incremental builds: the model after each pass, keyed by (input model, engine, pass, the
/// settings the pass reads, calibration data). A run whose passes and settings match a cached prefix starts from
/// the last cached model, so changing only a gate threshold re-runs the gate, not SparseGPT and calibration. The
/// folder belongs to one output: each run keeps only the entries it used or wrote.
/// </summary>
public sealed class PassCache
{
    // Bigger models are not copied into the cache (each entry is a full model).
    private const long MaxModelBytes = 1L << 30;
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = false };

    private readonly string _directory;
    private readonly HashSet<string> _used = new(StringComparer.Ordinal);

    private PassCache(string directory) => _directory = directory;

    /// <summary>The cache for one output in <paramref name="directory"/>, or null when <paramref name="source"/> (loaded from <paramref name="modelPath"/>) is too big to cache.</summary>
    public static PassCache? Open(string? directory, OnnxModel source, string modelPath)
    {
        if (directory is null || new FileInfo(modelPath).Length + source.ExternalDataFiles().Sum(f => new FileInfo(f).Length) > MaxModelBytes) return null;
        Directory.CreateDirectory(directory);
        return new PassCache(Path.GetFullPath(directory));
    }

    /// <summary>The key of every pass's result: each one chains the key before it.</summary>
    public static IReadOnlyList<string> Keys(OnnxModel source, string modelPath, CompressionPolicy policy, IReadOnlyList<ICompressionPass> passes)
    {
        // External data lives next to the model; its bytes are part of the model.
        var model = string.Concat(source.ExternalDataFiles().Order(StringComparer.Ordinal).Prepend(modelPath).Select(HashBytes));
        var key = Hash($"engine {typeof(PassCache).Assembly.ManifestModule.ModuleVersionId}\nmodel {model}");
        var calibration = policy.Data.CalibrationData is { } data ? HashData(data) : "none";
        // Passes read the data and runtime settings too; not the gate's, nor the validation data.
        var shared = new OptionsGroup[] { DataOptions.Group, ExecutionOptions.Group, LayerSelectionOptions.Group };
        var keys = new List<string>();
        foreach (var pass in passes)
        {
            var settings = policy.Canonical(pass.Reads.Concat(shared), s => s.Name is not ("ValidationData" or "PolicyFile" or "CalibrationData"));
            key = Hash($"{key}\n{pass.Name}\n{settings}\ncalibration {calibration}");
            keys.Add(key);
        }
        return keys;
    }

    /// <summary>The index of the last pass whose result is cached with every pass before it, or -1 (all of them are kept).</summary>
    public int LongestCachedPrefix(IReadOnlyList<string> keys)
    {
        var last = -1;
        for (var i = 0; i < keys.Count && File.Exists(ModelFile(keys[i])) && File.Exists(StepFile(keys[i])); i++)
        {
            _used.Add(keys[i]);
            last = i;
        }
        return last;
    }

    /// <summary>Loads a cached model and the records and diagnostics of the passes that made it.</summary>
    public (OnnxModel Model, CachedSteps Steps) Load(string key)
    {
        _used.Add(key);
        var steps = JsonSerializer.Deserialize<CachedSteps>(File.ReadAllBytes(StepFile(key)), Json)!;
        return (OnnxModel.Load(ModelFile(key)), steps);
    }

    /// <summary>Stores a pass's result (written to a unique temp name, then renamed: a reader never sees half a file).</summary>
    public void Store(string key, OnnxModel model, CachedSteps steps)
    {
        _used.Add(key);
        var unique = TempFiles.NewToken();
        var modelTemp = ModelFile(key) + "." + unique + ".tmp";
        var stepTemp = StepFile(key) + "." + unique + ".tmp";
        try
        {
            model.Save(modelTemp);
            File.WriteAllBytes(stepTemp, JsonSerializer.SerializeToUtf8Bytes(steps, Json));
            File.Move(modelTemp, ModelFile(key), overwrite: true);
            File.Move(stepTemp, StepFile(key), overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A cache that cannot be written only costs time next build.
            File.Delete(modelTemp);
            File.Delete(stepTemp);
        }
    }

    /// <summary>Deletes the entries this run neither used nor wrote (older settings of the same output).</summary>
    public void Trim()
    {
        foreach (var file in Directory.EnumerateFiles(_directory))
        {
            var key = Path.GetFileName(file).Split('.')[0];
            if (_used.Contains(key)) continue;
            try { File.Delete(file); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
    }

    private string ModelFile(string key) => Path.Combine(_directory, key + ".onnx");
    private string StepFile(string key) => Path.Combine(_directory, key + ".steps.json");

    internal static string Hash(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..32];

    internal static string HashBytes(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    internal static string HashData(string path) =>
        File.Exists(path) ? HashBytes(path)
        : Directory.Exists(path) ? Hash(string.Join("\n", Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal)
            .Select(f => Path.GetRelativePath(path, f) + " " + Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(f))))))
        : "missing";
}

/// <summary>What the passes up to a cached model recorded: per-layer rows and diagnostics, replayed into the report.</summary>
public sealed record CachedSteps(IReadOnlyList<LayerRecord> Records, IReadOnlyList<Diagnostic> Diagnostics);
