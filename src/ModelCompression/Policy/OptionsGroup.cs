using System.Reflection;

namespace ModelCompression.Policy;

/// <summary>
/// An options record: a technique's (or the gate's, data's, runtime's) typed settings with their defaults.
/// <see cref="Group"/> declares each setting once; <see cref="SettingsCatalog"/> finds every record in the engine, so
/// a technique folder with its pass and its options record is all it takes to add a setting end to end.
/// </summary>
public interface IOptions<TSelf> where TSelf : class, IOptions<TSelf>, new()
{
    static abstract OptionsGroup<TSelf> Group { get; }
}

/// <summary>The declaration of one options record: its settings, and for a technique, when it is asked for.</summary>
public abstract class OptionsGroup
{
    private protected readonly List<Setting> _settings = [];

    private protected OptionsGroup(string name, int order, string summary, bool isTechnique)
    {
        Name = name;
        Order = order;
        Summary = summary;
        IsTechnique = isTechnique;
    }

    /// <summary>The section name in docs and reports (e.g. <c>Pruning</c>).</summary>
    public string Name { get; }
    /// <summary>Position of the section in docs and help (techniques first, then graph, data, gate, runtime).</summary>
    public int Order { get; }
    public string Summary { get; }
    /// <summary>A technique changes the model and is present only when asked for; other groups always apply.</summary>
    public bool IsTechnique { get; }
    public IReadOnlyList<Setting> Settings => _settings;
    public abstract Type OptionsType { get; }

    internal abstract object CreateDefault();
    /// <summary>Whether these options ask the technique to do something (always false for non-techniques).</summary>
    internal abstract bool IsActive(object options);
    /// <summary>Settings of this record that contradict each other or the rest of the policy (CM0104 messages).</summary>
    internal abstract IEnumerable<string> Conflicts(object options, CompressionPolicy policy);
    /// <summary>Which chosen settings need calibration data (for one CM0124 message naming all of them).</summary>
    internal abstract IEnumerable<string> CalibrationNeeds(object options);
    /// <summary>What a setting's value means in a policy, when that is more than the value itself (auto → sparsegpt).</summary>
    internal abstract string? Explain(Setting setting, object? value, CompressionPolicy policy);

    public override string ToString() => Name;
}

public sealed class OptionsGroup<TOptions> : OptionsGroup where TOptions : class, IOptions<TOptions>, new()
{
    private readonly Dictionary<Setting, Func<object?, CompressionPolicy, string?>> _explain = [];

    public OptionsGroup(string name, int order, string summary, bool isTechnique) : base(name, order, summary, isTechnique) { }

    /// <summary>For a technique: whether options ask it to change the model (e.g. Sparsity &gt; 0).</summary>
    public Func<TOptions, bool>? Active { get; init; }
    public Func<TOptions, CompressionPolicy, IEnumerable<string>>? Conflicting { get; init; }
    public Func<TOptions, IEnumerable<string>>? NeedsCalibration { get; init; }

    public override Type OptionsType => typeof(TOptions);

    /// <summary>
    /// Declares a setting. <paramref name="explain"/> may name what a value resolves to in this policy (auto →
    /// "auto (sparsegpt)"), for reports.
    /// </summary>
    public OptionsGroup<TOptions> Add<TValue>(string name, ValueSyntax<TValue> syntax, SettingScope scope, string description,
        Func<TOptions, TValue> get, Func<TOptions, TValue, TOptions> set, Func<TValue, CompressionPolicy, string?>? explain = null)
    {
        var setting = new Setting<TOptions, TValue>(this, name, description, scope, syntax, get, set);
        _settings.Add(setting);
        if (explain is not null) _explain[setting] = (value, policy) => explain((TValue)value!, policy);
        return this;
    }

    internal override string? Explain(Setting setting, object? value, CompressionPolicy policy) =>
        _explain.TryGetValue(setting, out var explain) ? explain(value, policy) : null;

    internal override object CreateDefault() => new TOptions();
    internal override bool IsActive(object options) => IsTechnique && Active is not null && Active((TOptions)options);
    internal override IEnumerable<string> Conflicts(object options, CompressionPolicy policy) => Conflicting?.Invoke((TOptions)options, policy) ?? [];
    internal override IEnumerable<string> CalibrationNeeds(object options) => NeedsCalibration?.Invoke((TOptions)options) ?? [];
}

/// <summary>Every options record in the engine, found once by reflection, and every setting they declare.</summary>
public static class SettingsCatalog
{
    private static readonly Lazy<IReadOnlyList<OptionsGroup>> LazyGroups = new(FindGroups);
    private static readonly Lazy<Dictionary<string, Setting>> LazyByKey = new(() => All.ToDictionary(s => Key(s.Name)));

    /// <summary>The groups in docs order (techniques first).</summary>
    public static IReadOnlyList<OptionsGroup> Groups => LazyGroups.Value;
    public static IEnumerable<OptionsGroup> Techniques => Groups.Where(g => g.IsTechnique);
    /// <summary>Every setting, in docs order.</summary>
    public static IEnumerable<Setting> All => Groups.SelectMany(g => g.Settings);

    /// <summary>Finds a setting by metadata name or CLI spelling, case-insensitively (<c>MaxAccuracyDrop</c>, <c>--max-accuracy-drop</c>).</summary>
    public static Setting? Find(string name) => LazyByKey.Value.GetValueOrDefault(Key(name));

    internal static string Key(string name) => new(name.TrimStart('-').Where(c => c != '-' && c != '_').Select(char.ToLowerInvariant).ToArray());

    private static IReadOnlyList<OptionsGroup> FindGroups()
    {
        var groups = new List<OptionsGroup>();
        foreach (var type in typeof(SettingsCatalog).Assembly.GetTypes())
        {
            if (type.IsAbstract || !type.GetInterfaces().Any(i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(IOptions<>))) continue;
            var property = type.GetProperty("Group", BindingFlags.Public | BindingFlags.Static)
                ?? throw new InvalidOperationException($"{type.Name} implements IOptions but has no public static Group");
            groups.Add((OptionsGroup)property.GetValue(null)!);
        }
        var ordered = groups.OrderBy(g => g.Order).ThenBy(g => g.Name, StringComparer.Ordinal).ToList();
        var duplicate = ordered.SelectMany(g => g.Settings).GroupBy(s => Key(s.Name)).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new InvalidOperationException($"setting '{duplicate.First().Name}' is declared twice");
        return ordered;
    }
}
