using System.Reflection;
using System.Text.Json;
using System.Text.Json.Serialization;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Passes;
using ModelCompression.Policy;

namespace ModelCompression.Search;

/// <summary>What a lock was chosen for: a hash of each input, so a stale lock can say which one changed.</summary>
public sealed record LockInputs(string Engine, string Model, string CalibrationData, string ValidationData, string Settings)
{
    /// <summary>
    /// The inputs of a run: the engine's version, the model's bytes (external data included), the data files' bytes,
    /// and every setting (policy-file entries included) except paths, which differ between machines (their files'
    /// bytes are hashed instead), and the fallback's own, which say how to choose, not what was chosen for.
    /// </summary>
    public static LockInputs Of(string modelPath, OnnxModel source, CompressionPolicy policy)
    {
        var model = PassCache.Hash(string.Concat(source.ExternalDataFiles().Order(StringComparer.Ordinal).Prepend(modelPath).Select(PassCache.HashBytes)));
        var data = policy.Data;
        var settings = policy.Canonical(SettingsCatalog.Groups, s => (s.Group != FallbackOptions.Group && s.Group != DataOptions.Group) || s.Name == "CalibrationSamples");
        return new LockInputs(EngineVersion, model,
            data.CalibrationData is { } c ? PassCache.HashData(c) : "none",
            data.ValidationData is { } v ? PassCache.HashData(v) : "none",
            PassCache.Hash(settings));
    }

    /// <summary>The engine's product version: a lock stays valid across builds of one version.</summary>
    public static string EngineVersion { get; } = typeof(LockInputs).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0]
        ?? typeof(LockInputs).Assembly.GetName().Version?.ToString() ?? "unknown";

    [JsonIgnore] public string Hash => PassCache.Hash($"{Engine}\n{Model}\n{CalibrationData}\n{ValidationData}\n{Settings}");

    /// <summary>What differs from <paramref name="other"/>, in words ("the model, the settings").</summary>
    public IReadOnlyList<string> Differences(LockInputs other)
    {
        var changed = new List<string>();
        if (Engine != other.Engine) changed.Add($"the engine version ({other.Engine} → {Engine})");
        if (Model != other.Model) changed.Add("the model");
        if (CalibrationData != other.CalibrationData) changed.Add("the calibration data");
        if (ValidationData != other.ValidationData) changed.Add("the validation data");
        if (Settings != other.Settings) changed.Add("the settings (techniques, constraints or policy file)");
        return changed;
    }
}

/// <summary>The gate's verdict when the lock was written.</summary>
public sealed record LockGate(bool Passed, double? OriginalAccuracy, double? Accuracy, long OriginalBytes, long CompressedBytes);

/// <summary>
/// <c>&lt;model&gt;.compress.lock.json</c>: the per-layer settings a passing run chose, the constraints it met, the
/// hash of what it was chosen for, and the gate's result. Its <c>layers</c> use the policy file's format.
/// </summary>
public sealed record LockFile
{
    public const int CurrentVersion = 1;

    public int Version { get; init; } = CurrentVersion;
    public required string Hash { get; init; }
    public required LockInputs Inputs { get; init; }
    /// <summary>The gate thresholds that were set, by setting name.</summary>
    public required IReadOnlyDictionary<string, string> Constraints { get; init; }
    /// <summary>One entry per layer whose settings were changed, as in a policy file: <c>{ "match": layer, setting: value }</c>.</summary>
    public required IReadOnlyList<IReadOnlyDictionary<string, string>> Layers { get; init; }
    public required LockGate Gate { get; init; }

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public LayerPolicy ToLayerPolicy() => new(Layers.Select(entry => new LayerChoice(entry["match"],
        entry.Where(e => e.Key != "match").ToDictionary(e => e.Key, e => e.Value))).ToList());

    public static IReadOnlyList<IReadOnlyDictionary<string, string>> Entries(LayerPolicy layers) =>
        layers.Layers.Select(l => (IReadOnlyDictionary<string, string>)new[] { KeyValuePair.Create("match", l.Layer) }
            .Concat(l.Settings.OrderBy(s => s.Key, StringComparer.Ordinal)).ToDictionary()).ToList();

    /// <summary>Reads a lock; null when there is none. An unreadable one is a CM0306 problem the caller reports.</summary>
    public static LockFile? Read(string path, out string? problem)
    {
        problem = null;
        if (!File.Exists(path)) return null;
        try
        {
            var lockFile = JsonSerializer.Deserialize<LockFile>(File.ReadAllBytes(path), Json);
            if (lockFile is null || lockFile.Version != CurrentVersion || lockFile.Layers.Any(l => !l.ContainsKey("match")))
            {
                problem = $"lock file '{path}' has an unknown format (version {lockFile?.Version})";
                return null;
            }
            return lockFile;
        }
        catch (JsonException e)
        {
            problem = $"lock file '{path}' is not a valid lock file: {e.Message}";
            return null;
        }
    }

    /// <summary>Writes the lock (atomically) unless the file already holds exactly this text, so a reproduced run leaves it untouched.</summary>
    public void Write(string path)
    {
        var text = JsonSerializer.Serialize(this, Json).ReplaceLineEndings("\n") + "\n";
        try
        {
            if (File.Exists(path) && File.ReadAllText(path) == text) return;
            var temp = $"{path}.{Guid.NewGuid():N}.tmp";
            File.WriteAllText(temp, text);
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CompressionException(DiagnosticCodes.OutputNotWritable, $"cannot write the lock file '{path}': {e.Message}", path, e);
        }
    }
}
