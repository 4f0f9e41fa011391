using System.Text.Json;
using System.Text.Json.Serialization;

// The contract between the MSBuild task and the engine's `batch` verb, compiled into both (the task never references
// the engine's assemblies): one definition of the request, its version, the exit codes and the summary lines.
namespace ModelCompression.Contracts;

/// <summary>Process exit codes (documented in the README).</summary>
public enum ReturnCode
{
    /// <summary>Done; the gate (if any) passed.</summary>
    Success = 0,
    /// <summary>The gate failed: a threshold was missed. No output model was written.</summary>
    GateFailed = 1,
    /// <summary>Bad usage or bad input (model, data, policy, provider).</summary>
    BadInput = 2,
    /// <summary>An internal error: a bug; please report it.</summary>
    InternalError = 3,
    /// <summary>Cancelled (Ctrl+C); nothing was written to the output.</summary>
    Cancelled = 130,
}

/// <summary>What the task asks the engine to do: every stale item of one project.</summary>
public sealed record EngineRequest(int Version, bool GateFailureAsWarning, IReadOnlyList<EngineRequestItem> Items)
{
    public const int CurrentVersion = 2;

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        PropertyNameCaseInsensitive = true,
        ReadCommentHandling = JsonCommentHandling.Skip,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public void Write(string path) => File.WriteAllBytes(path, JsonSerializer.SerializeToUtf8Bytes(this, Json));

    /// <summary>Reads a request; <see cref="JsonException"/> when it is not one of this version.</summary>
    public static EngineRequest Read(string path)
    {
        var request = JsonSerializer.Deserialize<EngineRequest>(File.ReadAllBytes(path), Json);
        if (request?.Items is null || request.Version != CurrentVersion)
            throw new JsonException($"expected {{ \"version\": {CurrentVersion}, \"items\": [ … ] }} (task and engine come from different package versions?)");
        // The serializer leaves absent or null fields null whatever their declared nullability: check them here.
        for (var i = 0; i < request.Items.Count; i++)
        {
            var item = request.Items[i];
            if (item is null) throw new JsonException($"items[{i}] is null");
            foreach (var (name, value) in new[] { ("model", item.Model), ("output", item.Output), ("reportDirectory", item.ReportDirectory), ("baseDirectory", item.BaseDirectory) })
                if (string.IsNullOrWhiteSpace(value)) throw new JsonException($"items[{i}].{name} is missing or empty");
            if (item.Settings?.FirstOrDefault(s => s.Value is null) is { Key: { } key }) throw new JsonException($"items[{i}].settings.{key} is null");
        }
        return request;
    }
}

/// <summary>
/// One model: its paths, the project file that defines the item (where setting mistakes are reported), a cache
/// folder of its own for incremental builds, and its settings (item metadata, verbatim).
/// </summary>
public sealed record EngineRequestItem(
    string Model, string Output, string ReportDirectory, string BaseDirectory,
    string? ProjectFile, string? CacheDirectory, IReadOnlyDictionary<string, string>? Settings);

/// <summary>The engine's output lines the task treats specially.</summary>
public static class EngineOutput
{
    /// <summary>Starts the one summary line per model (shown at normal build verbosity).</summary>
    public const string SummaryPrefix = "compress-model: ";
}
