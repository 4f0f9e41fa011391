using ModelCompression.Diagnostics;

namespace ModelCompression.Policy;

/// <summary>
/// One layer's chosen settings, in the policy file's vocabulary (setting name → value text, e.g. <c>Sparsity=0.45</c>
/// or <c>Excluded=true</c>). Text, not typed values: the fallback, the lock file and (later) the search all speak it,
/// and a value read back from a lock parses to exactly what the run that wrote it used.
/// </summary>
public sealed record LayerChoice(string Layer, IReadOnlyDictionary<string, string> Settings)
{
    public string Describe() => string.Join(", ", Settings.OrderBy(s => s.Key, StringComparer.Ordinal).Select(s => $"{s.Key}={s.Value}"));
}

/// <summary>
/// Per-layer choices made on top of a policy (by the fallback, a lock file, or a search): applied after the policy
/// file's entries, so they win, each as an entry matching exactly its layer.
/// </summary>
public sealed record LayerPolicy(IReadOnlyList<LayerChoice> Layers)
{
    public static readonly LayerPolicy Empty = new([]);

    public bool IsEmpty => Layers.Count == 0;

    /// <summary>The policy with these choices as extra per-layer entries; bad names or values are CM0103 errors naming <paramref name="origin"/>.</summary>
    public CompressionPolicy ApplyTo(CompressionPolicy policy, string? origin = null)
    {
        if (IsEmpty) return policy;
        var errors = new List<Diagnostic>();
        var overrides = new List<LayerOverride>(policy.LayerOverrides);
        foreach (var choice in Layers)
        {
            var values = new Dictionary<Setting, object?>();
            foreach (var (name, raw) in choice.Settings.OrderBy(s => s.Key, StringComparer.Ordinal))
            {
                var setting = PolicySettings.Find(name);
                if (setting is null || !setting.PerLayer) { errors.Add(new Diagnostic(DiagnosticCodes.InvalidPolicyFile, Severity.Error, $"layer '{choice.Layer}': '{name}' is not a per-layer setting", origin)); continue; }
                try { values[setting] = setting.Parse(raw, Directory.GetCurrentDirectory()); }
                catch (FormatException e) { errors.Add(new Diagnostic(DiagnosticCodes.InvalidPolicyFile, Severity.Error, $"layer '{choice.Layer}': {name} '{raw}' is invalid: {e.Message}", origin)); }
            }
            overrides.Add(new LayerOverride(overrides.Count, choice.Layer, values));
        }
        if (errors.Count > 0) throw new CompressionException(errors);
        return new CompressionPolicy(policy.Values, overrides);
    }

    /// <summary>These choices with <paramref name="other"/>'s layered on top (a layer named in both takes <paramref name="other"/>'s).</summary>
    public LayerPolicy With(IEnumerable<LayerChoice> other)
    {
        var byLayer = Layers.ToDictionary(l => l.Layer, StringComparer.Ordinal);
        foreach (var choice in other) byLayer[choice.Layer] = choice;
        return new LayerPolicy(byLayer.Values.OrderBy(l => l.Layer, StringComparer.Ordinal).ToList());
    }
}
