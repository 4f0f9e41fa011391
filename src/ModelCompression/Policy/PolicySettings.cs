using ModelCompression.Diagnostics;

namespace ModelCompression.Policy;

/// <summary>
/// The front door to the settings: CLI options and MSBuild metadata both go through <see cref="Parse"/>, so the two
/// front ends accept exactly the same names and values and report the same codes. The settings themselves are
/// declared by the options records (<see cref="SettingsCatalog"/>).
/// </summary>
public static class PolicySettings
{
    /// <summary>Every setting that can be given as a CLI option or MSBuild metadata, in docs order.</summary>
    public static IEnumerable<Setting> Options => SettingsCatalog.All.Where(s => s.IsOption);

    /// <summary>Finds a setting by metadata name or CLI spelling, case-insensitively.</summary>
    public static Setting? Find(string name) => SettingsCatalog.Find(name);

    /// <summary>An enum value exactly as users type it (<c>int8-dynamic</c>).</summary>
    public static string FormatEnum(System.Enum value)
    {
        _ = SettingsCatalog.Groups; // declares every enum syntax
        return Syntax.EnumText.TryGetValue(value, out var text) ? text : value.ToString().ToLowerInvariant();
    }

    /// <summary>
    /// Builds a policy from name/value pairs (item metadata or CLI options), resolving paths against
    /// <paramref name="baseDirectory"/>. Collects every problem before failing: CM0101 unknown name, CM0102 bad
    /// value, CM0104 settings that contradict each other, CM0124 missing calibration data, CM0103 a bad policy file.
    /// </summary>
    public static CompressionPolicy Parse(IEnumerable<KeyValuePair<string, string>> settings, string baseDirectory, string? origin = null)
    {
        var diagnostics = new List<Diagnostic>();
        var values = new Dictionary<Setting, object?>();
        foreach (var (name, raw) in settings)
        {
            var setting = Find(name);
            if (setting is null || !setting.IsOption)
            {
                diagnostics.Add(new Diagnostic(DiagnosticCodes.UnknownSetting, Severity.Error, $"unknown setting '{name}'{Suggest(name)}", origin));
                continue;
            }
            if (string.IsNullOrWhiteSpace(raw)) continue; // an empty metadata value means "not set"
            try { values[setting] = setting.Parse(raw, baseDirectory); }
            catch (FormatException e)
            {
                diagnostics.Add(new Diagnostic(DiagnosticCodes.InvalidSettingValue, Severity.Error, $"{setting.Name} '{raw}' is invalid: {e.Message}", origin));
            }
        }
        var policy = new CompressionPolicy(values, []);
        if (diagnostics.Count == 0)
        {
            diagnostics.AddRange(CheckConsistency(policy, origin));
            if (diagnostics.Count == 0 && policy.Data.PolicyFile is { } file)
            {
                try { policy = new CompressionPolicy(values, PolicyFile.Load(file)); }
                catch (CompressionException e) { diagnostics.AddRange(e.Diagnostics); }
            }
        }
        if (diagnostics.Count > 0) throw new CompressionException(diagnostics);
        return policy;
    }

    /// <summary>" (did you mean 'Sparsity'?)" for a near miss of a setting name, else empty.</summary>
    public static string Suggest(string name) =>
        ClosestMatch(name, Options.Select(s => s.Name)) is { } best ? $" (did you mean '{best}'?)" : "";

    /// <summary>
    /// The candidate closest to a mistyped <paramref name="name"/> (case, dashes and underscores ignored, so it matches
    /// setting names and CLI options alike), or null when none is close enough to suggest.
    /// </summary>
    public static string? ClosestMatch(string name, IEnumerable<string> candidates)
    {
        var key = SettingsCatalog.Key(name);
        var best = candidates.Select(c => (Candidate: c, d: Distance(SettingsCatalog.Key(c), key))).MinBy(t => t.d);
        return best.Candidate is not null && best.d <= Math.Max(2, key.Length / 4) ? best.Candidate : null;
    }

    private static IEnumerable<Diagnostic> CheckConsistency(CompressionPolicy policy, string? origin)
    {
        var needsCalibration = new List<string>();
        foreach (var group in SettingsCatalog.Groups)
        {
            var options = policy.Options(group);
            if (!group.IsTechnique || group.IsActive(options)) needsCalibration.AddRange(group.CalibrationNeeds(options));
            foreach (var conflict in group.Conflicts(options, policy))
                yield return new Diagnostic(DiagnosticCodes.ConflictingSettings, Severity.Error, conflict, origin);
        }
        if (needsCalibration.Count > 0 && policy.Data.CalibrationData is null)
            yield return new Diagnostic(DiagnosticCodes.MissingCalibrationData, Severity.Error,
                $"{string.Join(", ", needsCalibration)} needs CalibrationData: a few hundred representative inputs (.npz, .npy or an ONNX test-data folder)", origin);
    }

    private static int Distance(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (var i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (var j = 0; j <= b.Length; j++) d[0, j] = j;
        for (var i = 1; i <= a.Length; i++)
            for (var j = 1; j <= b.Length; j++)
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
        return d[a.Length, b.Length];
    }
}
