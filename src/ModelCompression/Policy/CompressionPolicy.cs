using System.Collections.Concurrent;
using System.Globalization;

namespace ModelCompression.Policy;

/// <summary>N:M semi-structured sparsity (N zeros in every M consecutive weights); null means unstructured.</summary>
public readonly record struct NmPattern(int N, int M)
{
    public override string ToString() => $"{N}:{M}";
}

/// <summary>A target rank: a ratio of the full rank (0 &lt; r &lt;= 1) or an absolute rank (&gt;= 1, integer).</summary>
public readonly record struct RankSpec(double Value, bool IsRatio)
{
    public int Resolve(int fullRank) => fullRank < 1 ? 0 : Math.Clamp(IsRatio ? (int)Math.Round(Value * fullRank) : (int)Value, 1, fullRank);
    public override string ToString() => IsRatio ? Value.ToString("0.###", CultureInfo.InvariantCulture) : ((int)Value).ToString(CultureInfo.InvariantCulture);
}

/// <summary>The execution provider the gate and calibration run on: cpu, or cuda with a device id.</summary>
public readonly record struct ExecutionProviderSpec(string Name, int DeviceId)
{
    public static readonly ExecutionProviderSpec Cpu = new("cpu", 0);
    public bool IsCuda => Name == "cuda";
    public override string ToString() => IsCuda ? $"cuda:{DeviceId}" : Name;
}

/// <summary>Where a layer's setting value came from.</summary>
public enum SettingOrigin { Default, Given, PolicyFile }

/// <summary>The source of one resolved value: the default, the item/option, or a policy-file entry (by index).</summary>
public readonly record struct SettingSource(SettingOrigin Origin, int Entry = -1, string? Match = null)
{
    public static readonly SettingSource Default = new(SettingOrigin.Default);
    public static readonly SettingSource Given = new(SettingOrigin.Given);

    public override string ToString() => Origin switch
    {
        SettingOrigin.Default => "default",
        SettingOrigin.Given => "setting",
        _ => $"policy file layers[{Entry}] ({Match})",
    };
}

/// <summary>Typed settings for one layer (or the whole model), with where each value came from.</summary>
public sealed record Resolved<T>(T Options, IReadOnlyDictionary<Setting, SettingSource> Sources)
{
    public SettingSource SourceOf(string setting) =>
        Sources.Where(s => s.Key.Name == setting).Select(s => s.Value).DefaultIfEmpty(SettingSource.Default).First();
}

/// <summary>Settings applied to the layers whose name matches a glob: entry <see cref="Index"/> of a policy file.</summary>
public sealed record LayerOverride(int Index, string Match, IReadOnlyDictionary<Setting, object?> Values)
{
    public SettingSource Source => new(SettingOrigin.PolicyFile, Index, Match);
}

/// <summary>
/// The whole interface of the engine: the parsed settings (CLI options or MSBuild metadata, one parser for both:
/// <see cref="PolicySettings.Parse"/>) and the per-layer overrides of a policy file. Passes read typed options
/// records through <see cref="Get{T}"/> and <see cref="For{T}"/>; which techniques are asked for is decided here
/// only (<see cref="Requests"/>).
/// </summary>
public sealed class CompressionPolicy : IEquatable<CompressionPolicy>
{
    private readonly ConcurrentDictionary<Type, object> _global = new();

    public CompressionPolicy() : this(new Dictionary<Setting, object?>(), []) { }

    internal CompressionPolicy(IReadOnlyDictionary<Setting, object?> values, IReadOnlyList<LayerOverride> layerOverrides)
    {
        Values = values;
        LayerOverrides = layerOverrides;
    }

    /// <summary>The settings given for the whole model (not defaults).</summary>
    public IReadOnlyDictionary<Setting, object?> Values { get; }
    public IReadOnlyList<LayerOverride> LayerOverrides { get; }

    public DataOptions Data => Get<DataOptions>();
    public ExecutionOptions Execution => Get<ExecutionOptions>();

    /// <summary>The options for the whole model: defaults, then the given settings.</summary>
    public T Get<T>() where T : class, IOptions<T>, new() => (T)Options(T.Group);

    /// <summary>The options record of <paramref name="group"/> for the whole model.</summary>
    public object Options(OptionsGroup group) => _global.GetOrAdd(group.OptionsType, _ => Build(group, Values, null).Options);

    /// <summary>
    /// The options for one layer: defaults, the given settings, then every policy-file entry whose glob matches, in
    /// order (later entries win) — each value with its source.
    /// </summary>
    public Resolved<T> For<T>(string layerName) where T : class, IOptions<T>, new()
    {
        var (options, sources) = Build(T.Group, Values, LayerOverrides.Where(o => LayerGlob.IsMatch(o.Match, layerName)));
        return new Resolved<T>((T)options, sources);
    }

    /// <summary>Whether a technique is asked for: its options are active for the model or for any policy-file entry.</summary>
    public bool Requests(OptionsGroup technique) =>
        technique.IsTechnique && (technique.IsActive(Options(technique))
            || LayerOverrides.Any(o => o.Values.Keys.Any(s => s.Group == technique) && technique.IsActive(Build(technique, Values, [o]).Options)));

    public bool Requests<T>() where T : class, IOptions<T>, new() => Requests(T.Group);

    /// <summary>Whether <paramref name="predicate"/> holds for the model's options or with any policy-file entry applied.</summary>
    public bool AnyLayer<T>(Func<T, bool> predicate) where T : class, IOptions<T>, new() =>
        predicate(Get<T>()) || LayerOverrides.Any(o => predicate((T)Build(T.Group, Values, [o]).Options));

    /// <summary>The techniques asked for, in pipeline-independent docs order.</summary>
    public IReadOnlyList<OptionsGroup> Techniques => SettingsCatalog.Techniques.Where(Requests).ToList();
    public bool HasTechnique => Techniques.Count > 0;

    /// <summary>
    /// Canonical text of the settings of <paramref name="groups"/> (given values and policy-file entries), for cache
    /// keys: equal text means equal behaviour of passes that read only these groups.
    /// </summary>
    public string Canonical(IEnumerable<OptionsGroup> groups, Func<Setting, bool>? include = null)
    {
        var set = groups.ToHashSet();
        bool Keep(Setting s) => set.Contains(s.Group) && (include is null || include(s));
        var lines = Values.Where(v => Keep(v.Key)).Select(v => $"{v.Key.Name}={v.Key.Format(v.Value)}").Order(StringComparer.Ordinal).ToList();
        foreach (var o in LayerOverrides)
        {
            var entries = o.Values.Where(v => Keep(v.Key)).Select(v => $"{v.Key.Name}={v.Key.Format(v.Value)}").Order(StringComparer.Ordinal).ToList();
            if (entries.Count > 0) lines.Add($"[{o.Match}] " + string.Join(" ", entries));
        }
        return string.Join("\n", lines);
    }

    /// <summary>
    /// Every setting of the groups that apply (general ones, and the techniques asked for) as name → value text,
    /// defaults included so a report stands alone; "auto" values say what they resolved to.
    /// </summary>
    public IReadOnlyDictionary<string, string> Describe()
    {
        var result = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var group in SettingsCatalog.Groups.Where(g => !g.IsTechnique || Requests(g)))
        {
            var options = Options(group);
            foreach (var setting in group.Settings.Where(s => s.IsOption))
            {
                var value = setting.Read(options);
                var text = setting.Format(value);
                if (group.Explain(setting, value, this) is { } meaning) text = $"{text} ({meaning})";
                result[setting.Name] = text;
            }
        }
        if (LayerOverrides.Count > 0)
            result["LayerOverrides"] = string.Join("; ", LayerOverrides.Select(o => $"{o.Match}: {string.Join(", ", o.Values.Select(s => $"{s.Key.Name}={s.Key.Format(s.Value)}"))}"));
        return result;
    }

    /// <summary>Two policies are equal when they give the same settings the same values (however they were spelled).</summary>
    public bool Equals(CompressionPolicy? other) => other is not null && Canonical(SettingsCatalog.Groups) == other.Canonical(SettingsCatalog.Groups);
    public override bool Equals(object? obj) => Equals(obj as CompressionPolicy);
    public override int GetHashCode() => StringComparer.Ordinal.GetHashCode(Canonical(SettingsCatalog.Groups));
    public override string ToString() => Canonical(SettingsCatalog.Groups);

    private static (object Options, Dictionary<Setting, SettingSource> Sources) Build(OptionsGroup group, IReadOnlyDictionary<Setting, object?> values, IEnumerable<LayerOverride>? layerOverrides)
    {
        var options = group.CreateDefault();
        var sources = new Dictionary<Setting, SettingSource>();
        foreach (var setting in group.Settings)
        {
            if (values.TryGetValue(setting, out var value)) { options = setting.Apply(options, value); sources[setting] = SettingSource.Given; }
            else sources[setting] = SettingSource.Default;
        }
        foreach (var layerOverride in layerOverrides ?? [])
            foreach (var (setting, value) in layerOverride.Values)
                if (setting.Group == group) { options = setting.Apply(options, value); sources[setting] = layerOverride.Source; }
        return (options, sources);
    }
}
