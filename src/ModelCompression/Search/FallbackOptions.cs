using ModelCompression.Policy;

namespace ModelCompression.Search;

/// <summary>Accuracy-aware fallback and the lock file that freezes its choice (see docs/fallback-and-lock.md).</summary>
public sealed record FallbackOptions : IOptions<FallbackOptions>
{
    public bool Fallback { get; init; }
    public bool Search { get; init; }
    public string? LockFile { get; init; }

    public static OptionsGroup<FallbackOptions> Group { get; } = new OptionsGroup<FallbackOptions>("Fallback", 75,
        "What to do when the candidate misses an accuracy threshold, and the lock file that makes the choice reproducible.", isTechnique: false)
        .Add("Fallback", Syntax.Bool, SettingScope.Model,
            "When the candidate misses an accuracy threshold, move the most sensitive layers (by reconstruction error) to a milder setting, then to float, bisecting over the ranked layers until the gate passes; the report lists what was reverted. A passing run writes the lock file, and later runs apply it directly.",
            o => o.Fallback, (o, v) => o with { Fallback = v })
        .Add("Search", Syntax.Bool, SettingScope.Model,
            "Ignore the lock file and choose the per-layer settings again (what a stale lock needs; a lock is never replaced otherwise).",
            o => o.Search, (o, v) => o with { Search = v })
        .Add("LockFile", Syntax.Path, SettingScope.Model,
            "Where the lock file lives; default: next to the source model, <model>.compress.lock.json (commit it).",
            o => o.LockFile, (o, v) => o with { LockFile = v });

    /// <summary>Whether runs read and write a lock file (the choice it freezes is made by the fallback).</summary>
    public bool UsesLock => Fallback;

    /// <summary>The lock file of a model: <see cref="LockFile"/>, else <c>&lt;model&gt;.compress.lock.json</c> next to it.</summary>
    public string LockPath(string modelPath) => LockFile is { } path ? Path.GetFullPath(path) : Path.GetFullPath(modelPath) + LockSuffix;

    public const string LockSuffix = ".compress.lock.json";
}
