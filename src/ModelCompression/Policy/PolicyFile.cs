using System.Text.Json;
using System.Text.RegularExpressions;
using ModelCompression.Diagnostics;

namespace ModelCompression.Policy;

/// <summary>
/// Per-layer overrides: <c>{ "layers": [ { "match": "/fc3/*", "Quantize": "none" }, … ] }</c>. Later entries win.
/// Keys are the per-layer policy settings; anything else is a CM0103 error naming the file and the entry. Values are
/// parsed once, here: layers resolve typed values that remember their entry (<see cref="CompressionPolicy.For{T}"/>).
/// </summary>
public static class PolicyFile
{
    private static readonly byte[] Utf8Bom = [0xEF, 0xBB, 0xBF];
    private static readonly System.Text.UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public static IReadOnlyList<LayerOverride> Load(string path)
    {
        if (!File.Exists(path)) throw new CompressionException(DiagnosticCodes.InvalidPolicyFile, $"policy file '{path}' does not exist", path);
        JsonDocument document;
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new CompressionException(DiagnosticCodes.InvalidPolicyFile, $"cannot read the policy file: {e.Message}", path); }
        // Editors on Windows save UTF-8 with a byte-order mark; JSON readers must accept it (RFC 8259 §8.1).
        var text = bytes.AsMemory(bytes.AsSpan().StartsWith(Utf8Bom) ? Utf8Bom.Length : 0);
        // Checked up front: the JSON reader validates strings only when they are read, and then throws outside JsonException.
        try { _ = StrictUtf8.GetCharCount(text.Span); }
        catch (System.Text.DecoderFallbackException e) { throw new CompressionException(DiagnosticCodes.InvalidPolicyFile, $"policy file is not valid UTF-8 (byte {e.Index + (text.Length < bytes.Length ? Utf8Bom.Length : 0)})", path); }
        try { document = JsonDocument.Parse(text, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }); }
        catch (JsonException e) { throw new CompressionException(DiagnosticCodes.InvalidPolicyFile, $"policy file is not valid JSON: {e.Message}", path); }

        using (document)
        {
            var errors = new List<Diagnostic>();
            void Error(string message) => errors.Add(new Diagnostic(DiagnosticCodes.InvalidPolicyFile, Severity.Error, message, path));
            var overrides = new List<LayerOverride>();
            if (document.RootElement.ValueKind != JsonValueKind.Object) Error("policy file must be a JSON object with a \"layers\" array");
            else
            {
                foreach (var property in document.RootElement.EnumerateObject())
                    if (property.Name is not ("layers" or "$schema")) Error($"unknown key '{property.Name}' (expected \"layers\")");
                if (!document.RootElement.TryGetProperty("layers", out var layers) || layers.ValueKind != JsonValueKind.Array) Error("\"layers\" must be an array");
                else
                {
                    var index = 0;
                    foreach (var entry in layers.EnumerateArray())
                    {
                        var where = $"layers[{index++}]";
                        if (entry.ValueKind != JsonValueKind.Object) { Error($"{where} must be an object"); continue; }
                        string? match = null;
                        var values = new Dictionary<Setting, object?>();
                        foreach (var property in entry.EnumerateObject())
                        {
                            if (property.Name == "match") { match = property.Value.ValueKind == JsonValueKind.String ? property.Value.GetString() : null; continue; }
                            var setting = PolicySettings.Find(property.Name);
                            if (setting is null) { Error($"{where}: unknown setting '{property.Name}'"); continue; }
                            if (!setting.PerLayer) { Error($"{where}: '{setting.Name}' cannot be set per layer"); continue; }
                            var raw = property.Value.ValueKind switch
                            {
                                JsonValueKind.String => property.Value.GetString()!,
                                JsonValueKind.Number or JsonValueKind.True or JsonValueKind.False => property.Value.GetRawText(),
                                _ => null,
                            };
                            if (raw is null) { Error($"{where}: '{setting.Name}' must be a string, number or boolean"); continue; }
                            try { values[setting] = setting.Parse(raw, Path.GetDirectoryName(Path.GetFullPath(path))!); }
                            catch (FormatException e) { Error($"{where}: {setting.Name} '{raw}' is invalid: {e.Message}"); }
                        }
                        if (string.IsNullOrEmpty(match)) Error($"{where} needs a \"match\" glob (a string)");
                        else overrides.Add(new LayerOverride(index - 1, match, values));
                    }
                }
            }
            if (errors.Count > 0) throw new CompressionException(errors);
            return overrides;
        }
    }
}

/// <summary>Layer-name globs: <c>*</c> matches any run of characters (slashes included), <c>?</c> one character.</summary>
public static class LayerGlob
{
    public static bool IsMatch(string glob, string name) =>
        Regex.IsMatch(name, "^" + Regex.Escape(glob).Replace("\\*", ".*").Replace("\\?", ".") + "$", RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
}
