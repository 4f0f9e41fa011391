using System.Globalization;
using ModelCompression.Diagnostics;

namespace ModelCompression.Policy;

/// <summary>One policy knob: its name (MSBuild metadata; kebab-cased for the CLI), what it means and how it parses.</summary>
public sealed class PolicySetting
{
    internal PolicySetting(string name, string values, string description, bool perLayer, Func<CompressionPolicy, string, string, CompressionPolicy> apply)
    {
        Name = name;
        Values = values;
        Description = description;
        PerLayer = perLayer;
        Apply = apply;
    }

    public string Name { get; }
    /// <summary>The accepted values, as shown in help and docs (e.g. <c>none|int8|int8-dynamic</c>, <c>[0, 1)</c>).</summary>
    public string Values { get; }
    public string Description { get; }
    /// <summary>Whether a policy file may set it for a subset of layers.</summary>
    public bool PerLayer { get; }
    /// <summary>(policy, raw value, base directory) → policy; throws <see cref="FormatException"/> with the reason.</summary>
    internal Func<CompressionPolicy, string, string, CompressionPolicy> Apply { get; }

    /// <summary>The CLI spelling: <c>MaxAccuracyDrop</c> → <c>--max-accuracy-drop</c>.</summary>
    public string OptionName => "--" + string.Concat(Name.Select((c, i) => char.IsUpper(c) && i > 0 ? "-" + char.ToLowerInvariant(c) : char.ToLowerInvariant(c).ToString()));
}

/// <summary>
/// The table of every policy setting. CLI options and MSBuild metadata both go through <see cref="Parse"/>, so
/// the two front ends accept exactly the same names and values and report the same codes.
/// </summary>
public static class PolicySettings
{
    // Filled by Enum(...) below, so reports print enum values exactly as users type them. Declared first: static
    // fields initialize in order.
    private static readonly Dictionary<System.Enum, string> EnumText = [];

    public static string FormatEnum(System.Enum value) => EnumText.TryGetValue(value, out var text) ? text : value.ToString().ToLowerInvariant();

    public static readonly IReadOnlyList<PolicySetting> All =
    [
        // Quantization
        Enum("Quantize", "Quantization: int8 = static QDQ (weights per channel, activations calibrated), int8-dynamic = weights int8, activations quantized at run time.", true,
            (p, v) => p with { Quantize = v }, ("none", QuantizeMode.None), ("int8", QuantizeMode.Int8), ("int8-dynamic", QuantizeMode.Int8Dynamic)),
        Enum("CalibrationMethod", "How activation ranges are chosen from calibration data.", false,
            (p, v) => p with { CalibrationMethod = v }, ("minmax", CalibrationMethod.MinMax), ("percentile", CalibrationMethod.Percentile), ("entropy", CalibrationMethod.Entropy)),
        Number("CalibrationPercentile", "(50, 100]", "Percentile of |activation| kept by the percentile calibrator.", false, v => v > 50 && v <= 100, (p, v) => p with { CalibrationPercentile = v }),
        Integer("CalibrationSamples", "[1, 1000000]", "At most this many calibration samples are used.", false, 1, 1_000_000, (p, v) => p with { CalibrationSamples = v }),

        // Pruning
        Number("Sparsity", "[0, 1)", "Fraction of prunable weights set to zero (unstructured or N:M).", true, v => v >= 0 && v < 1, (p, v) => p with { Sparsity = v }),
        Enum("PruneMethod", "auto = sparsegpt when CalibrationData is given, else magnitude; magnitude = smallest |w|; sparsegpt = data-aware one-shot OBS pruning with weight reconstruction (needs CalibrationData).", true,
            (p, v) => p with { PruneMethod = v }, ("auto", PruneMethod.Auto), ("magnitude", PruneMethod.Magnitude), ("sparsegpt", PruneMethod.SparseGpt)),
        Enum("PruneScope", "global = one threshold over all prunable layers; layer = the same sparsity in every layer.", false,
            (p, v) => p with { PruneScope = v }, ("global", PruneScope.Global), ("layer", PruneScope.Layer)),
        new("SparsityPattern", "unstructured|N:M", "unstructured, or N:M (N zeros in every M consecutive input weights, e.g. 2:4).", true, (p, raw, _) => p with { SparsityPattern = ParsePattern(raw) }),
        Number("PruneDamping", "(0, 1]", "Dampening added to the diagonal of the input second moments (as a fraction of its mean) by SparseGPT and the least-squares refits.", false, v => v > 0 && v <= 1, (p, v) => p with { PruneDamping = v }),
        Integer("PruneBlockSize", "[1, 4096]", "SparseGPT: columns processed per block.", false, 1, 4096, (p, v) => p with { PruneBlockSize = v }),
        Number("StructuredSparsity", "[0, 1)", "Fraction of hidden neurons (Gemm/MatMul) and conv filters removed; the graph shrinks.", true, v => v >= 0 && v < 1, (p, v) => p with { StructuredSparsity = v }),
        Enum("StructuredCriterion", "How neurons/filters are ranked for structured pruning (apoz and reconstruction need CalibrationData).", false,
            (p, v) => p with { StructuredCriterion = v }, ("l1", StructuredCriterion.L1), ("apoz", StructuredCriterion.Apoz), ("reconstruction", StructuredCriterion.Reconstruction)),
        Integer("StructuredChannelMultiple", "[1, 256]", "Structured pruning keeps a multiple of this many channels per group (CPU kernels work on blocks of 8 or 16 channels; other counts save no time).", false, 1, 256, (p, v) => p with { StructuredChannelMultiple = v }),
        Bool("PruneEdgeLayers", "Also prune the first conv (it reads the model input) and the classifier head (it writes a model output); by default both stay dense.", true, (p, v) => p with { PruneEdgeLayers = v }),
        Bool("SparseStorage", "With Sparsity > 0: store mostly-zero weights (int8 ones too) in a compact sparse form, and floats exact in float16 (int8 scales) as float16, when that is smaller; ONNX Runtime expands them at load.", false, (p, v) => p with { SparseStorage = v }),

        // Low rank
        new("Rank", "(0, 1] ratio or integer >= 1", "Low-rank factorization of Gemm/MatMul weights (and of convolutions, see ConvDecomposition): a ratio of full rank or an absolute rank.", true, (p, raw, _) => p with { Rank = ParseRank(raw) }),
        Number("RankEnergy", "(0, 1]", "Keep the smallest rank whose singular values hold this fraction of spectral energy.", true, v => v > 0 && v <= 1, (p, v) => p with { RankEnergy = v }),
        Enum("LowRankMethod", "svd = plain truncated SVD; activation-aware = truncate in the metric of the layer inputs (needs CalibrationData).", true,
            (p, v) => p with { LowRankMethod = v }, ("svd", LowRankMethod.Svd), ("activation-aware", LowRankMethod.ActivationAware)),
        Number("LowRankDamping", "(0, 100]", "Activation-aware low rank: dampening added to the diagonal of the inputs' XᵀX before whitening, as a fraction of its mean (raise it when calibration samples are fewer than a layer's input features).", true, v => v > 0 && v <= 100, (p, v) => p with { LowRankDamping = v }),
        Enum("ConvDecomposition", "Low-rank form of convolutions: tucker2 (1x1 -> kxk core -> 1x1) or spatial (kx1 then 1xk).", true,
            (p, v) => p with { ConvDecomposition = v }, ("none", ConvDecomposition.None), ("tucker2", ConvDecomposition.Tucker2), ("spatial", ConvDecomposition.Spatial)),
        Number("ParameterBudget", "(0, 1)", "Low rank: fraction of the factorizable layers' parameters to keep; ranks are allocated per layer from their spectra (a per-layer Rank in the policy file pins a layer outside the budget).", false, v => v > 0 && v < 1, (p, v) => p with { ParameterBudget = v }),

        // Graph
        Bool("FoldBatchNorm", "Fold BatchNormalization into the preceding Conv/Gemm.", false, (p, v) => p with { FoldBatchNorm = v }),
        new("Exclude", "glob;glob", "Layers (node-name globs, ';'-separated) no pass touches.", false,
            (p, raw, _) => p with { Exclude = raw.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) }),
        Bool("Excluded", "Policy file only: true leaves the matched layers untouched.", true, (p, v) => p with { Excluded = v }),

        // Data
        Path("CalibrationData", "Calibration samples (.npz, .npy or an ONNX test-data folder).", (p, v) => p with { CalibrationData = v }),
        Path("ValidationData", "Gate samples (.npz, .npy or an ONNX test-data folder); 'label'/'labels' holds class ids.", (p, v) => p with { ValidationData = v }),
        Path("PolicyFile", "JSON file with per-layer overrides (see docs/policy-file.md).", (p, v) => p with { PolicyFile = v }),

        // Gate
        Number("MinAccuracy", "[0, 1]", "Fail when the compressed model's top-1 accuracy is below this.", false, v => v >= 0 && v <= 1, (p, v) => p with { MinAccuracy = v }),
        Number("MaxAccuracyDrop", "[0, 1]", "Fail when top-1 accuracy drops by more than this (0.01 = 1 point).", false, v => v >= 0 && v <= 1, (p, v) => p with { MaxAccuracyDrop = v }),
        Number("MinAgreement", "[0, 1]", "Fail when the compressed model agrees with the original's top-1 on less than this fraction.", false, v => v >= 0 && v <= 1, (p, v) => p with { MinAgreement = v }),
        Number("MaxLatencyRatio", "(0, 100]", "Fail when compressed p50 latency / original p50 latency exceeds this.", false, v => v > 0 && v <= 100, (p, v) => p with { MaxLatencyRatio = v }),
        Number("MaxLatencyMs", "(0, 1e6]", "Fail when the compressed model's p50 batch latency exceeds this many milliseconds.", false, v => v > 0 && v <= 1e6, (p, v) => p with { MaxLatencyMs = v }),
        Number("MaxSizeRatio", "(0, 10]", "Fail when compressed bytes / original bytes exceeds this.", false, v => v > 0 && v <= 10, (p, v) => p with { MaxSizeRatio = v }),
        Integer("TopK", "[1, 1000]", "k of the top-k accuracy reported next to top-1.", false, 1, 1000, (p, v) => p with { TopK = v }),

        // Runtime
        new("ExecutionProvider", "cpu|cuda|cuda:N", "Where calibration and the gate run. cuda never falls back to the CPU silently.", false, (p, raw, _) => p with { ExecutionProvider = ParseProvider(raw) }),
        Path("OnnxRuntimeLibrary", "Native ONNX Runtime library to load (e.g. the CUDA build's libonnxruntime.so).", (p, v) => p with { OnnxRuntimeLibrary = v }),
        Integer("BatchSize", "[1, 65536]", "Batch size for calibration, evaluation and latency.", false, 1, 65536, (p, v) => p with { BatchSize = v }),
        Integer("Threads", "[0, 1024]", "ONNX Runtime intra-op threads (0 = its default).", false, 0, 1024, (p, v) => p with { Threads = v }),
        Integer("LatencyRounds", "[1, 1000]", "Interleaved original/compressed latency rounds.", false, 1, 1000, (p, v) => p with { LatencyRounds = v }),
        Integer("Seed", "[0, 2147483647]", "Seed for every random choice (sampling, randomized SVD).", false, 0, int.MaxValue, (p, v) => p with { Seed = v }),
    ];

    private static readonly Dictionary<string, PolicySetting> ByKey = All.ToDictionary(s => Key(s.Name));

    /// <summary>Finds a setting by metadata name or CLI spelling, case-insensitively (<c>MaxAccuracyDrop</c>, <c>max-accuracy-drop</c>).</summary>
    public static PolicySetting? Find(string name) => ByKey.GetValueOrDefault(Key(name));

    private static string Key(string name) => new(name.TrimStart('-').Where(c => c != '-' && c != '_').Select(char.ToLowerInvariant).ToArray());

    /// <summary>
    /// Builds a policy from name/value pairs (item metadata or CLI options), resolving paths against
    /// <paramref name="baseDirectory"/>. Collects every problem before failing: CM0101 unknown name, CM0102 bad
    /// value, CM0104 settings that contradict each other, CM0103 a bad policy file.
    /// </summary>
    public static CompressionPolicy Parse(IEnumerable<KeyValuePair<string, string>> settings, string baseDirectory, string? origin = null)
    {
        var diagnostics = new List<Diagnostic>();
        var policy = new CompressionPolicy();
        foreach (var (name, raw) in settings)
        {
            var setting = Find(name);
            if (setting is null || setting.Name == "Excluded")
            {
                diagnostics.Add(new Diagnostic(DiagnosticCodes.UnknownSetting, Severity.Error, $"unknown setting '{name}'{Suggest(name)}", origin));
                continue;
            }
            if (string.IsNullOrWhiteSpace(raw)) continue; // an empty metadata value means "not set"
            try { policy = setting.Apply(policy, raw.Trim(), baseDirectory); }
            catch (FormatException e)
            {
                diagnostics.Add(new Diagnostic(DiagnosticCodes.InvalidSettingValue, Severity.Error, $"{setting.Name} '{raw}' is invalid: {e.Message}", origin));
            }
        }
        if (diagnostics.Count == 0)
        {
            diagnostics.AddRange(CheckConsistency(policy, origin));
            if (diagnostics.Count == 0 && policy.PolicyFile is not null)
            {
                try { policy = policy with { LayerOverrides = Policy.PolicyFile.Load(policy.PolicyFile) }; }
                catch (CompressionException e) { diagnostics.AddRange(e.Diagnostics); }
            }
        }
        if (diagnostics.Count > 0) throw new CompressionException(diagnostics);
        return policy;
    }

    /// <summary>Applies per-layer settings (already validated when the policy file was loaded).</summary>
    internal static CompressionPolicy ApplyOverride(CompressionPolicy policy, LayerOverride layerOverride)
    {
        foreach (var (name, raw) in layerOverride.Settings)
            policy = Find(name)!.Apply(policy, raw, Directory.GetCurrentDirectory());
        return policy;
    }

    private static IEnumerable<Diagnostic> CheckConsistency(CompressionPolicy p, string? origin)
    {
        Diagnostic Conflict(string message) => new(DiagnosticCodes.ConflictingSettings, Severity.Error, message, origin);
        var needsCalibration = new List<string>();
        if (p.Quantize == QuantizeMode.Int8) needsCalibration.Add("Quantize=int8 (static)");
        if (p.Sparsity > 0 && p.PruneMethod == PruneMethod.SparseGpt) needsCalibration.Add("PruneMethod=sparsegpt");
        if (p.StructuredSparsity > 0 && p.StructuredCriterion != StructuredCriterion.L1) needsCalibration.Add($"StructuredCriterion={FormatEnum(p.StructuredCriterion)}");
        if ((p.Rank is not null || p.RankEnergy is not null || p.ParameterBudget is not null) && p.LowRankMethod == LowRankMethod.ActivationAware) needsCalibration.Add("LowRankMethod=activation-aware");
        if (needsCalibration.Count > 0 && p.CalibrationData is null)
            yield return new Diagnostic(DiagnosticCodes.MissingCalibrationData, Severity.Error,
                $"{string.Join(", ", needsCalibration)} needs CalibrationData: a few hundred representative inputs (.npz, .npy or an ONNX test-data folder)" +
                (p.Quantize == QuantizeMode.Int8 ? "; Quantize=int8-dynamic needs none" : ""), origin);
        var thresholds = new[] { ("MinAccuracy", p.MinAccuracy), ("MaxAccuracyDrop", p.MaxAccuracyDrop), ("MinAgreement", p.MinAgreement), ("MaxLatencyRatio", p.MaxLatencyRatio), ("MaxLatencyMs", p.MaxLatencyMs) }
            .Where(t => t.Item2 is not null).Select(t => t.Item1).ToList();
        if (thresholds.Count > 0 && p.ValidationData is null)
            yield return Conflict($"{string.Join(", ", thresholds)} need ValidationData to measure against");
        if (p.SparsityPattern is { } nm && p.Sparsity > 0 && Math.Abs(p.Sparsity - (double)nm.N / nm.M) > 1e-9)
            yield return Conflict($"Sparsity {p.Sparsity} contradicts SparsityPattern {nm} (which means {(double)nm.N / nm.M:0.###})");
        if (p.Rank is not null && p.RankEnergy is not null)
            yield return Conflict("Rank and RankEnergy both choose the rank: set one of them");
        if (p.ParameterBudget is not null && (p.Rank is not null || p.RankEnergy is not null))
            yield return Conflict($"ParameterBudget allocates the ranks that {(p.Rank is not null ? "Rank" : "RankEnergy")} would fix for every layer: set one of them (a per-layer Rank in the policy file pins that layer outside the budget)");
        if (p.OnnxRuntimeLibrary is not null && !File.Exists(p.OnnxRuntimeLibrary))
            yield return new Diagnostic(DiagnosticCodes.InvalidSettingValue, Severity.Error, $"OnnxRuntimeLibrary '{p.OnnxRuntimeLibrary}' does not exist", origin);
    }

    private static string Suggest(string name) =>
        ClosestMatch(name, All.Where(s => s.Name != "Excluded").Select(s => s.Name)) is { } best ? $" (did you mean '{best}'?)" : "";

    /// <summary>
    /// The candidate closest to a mistyped <paramref name="name"/> (case, dashes and underscores ignored, so it matches
    /// setting names and CLI options alike), or null when none is close enough to suggest.
    /// </summary>
    public static string? ClosestMatch(string name, IEnumerable<string> candidates)
    {
        var key = Key(name);
        var best = candidates.Select(c => (Candidate: c, d: Distance(Key(c), key))).MinBy(t => t.d);
        return best.Candidate is not null && best.d <= Math.Max(2, key.Length / 4) ? best.Candidate : null;
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

    private static PolicySetting Enum<T>(string name, string description, bool perLayer, Func<CompressionPolicy, T, CompressionPolicy> set, params (string Text, T Value)[] values)
        where T : struct, System.Enum
    {
        foreach (var (text, value) in values) EnumText[value] = text;
        return new(name, string.Join("|", values.Select(v => v.Text)), description, perLayer, (p, raw, _) =>
        {
            foreach (var (text, value) in values)
                if (string.Equals(text, raw, StringComparison.OrdinalIgnoreCase)) return set(p, value);
            throw new FormatException($"expected one of {string.Join(", ", values.Select(v => v.Text))}");
        });
    }

    private static PolicySetting Number(string name, string range, string description, bool perLayer, Func<double, bool> valid, Func<CompressionPolicy, double, CompressionPolicy> set) =>
        new(name, range, description, perLayer, (p, raw, _) =>
        {
            if (!double.TryParse(raw, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !double.IsFinite(v))
                throw new FormatException($"expected a number in {range}");
            if (!valid(v)) throw new FormatException($"out of range: expected a number in {range}");
            return set(p, v);
        });

    private static PolicySetting Integer(string name, string range, string description, bool perLayer, int min, int max, Func<CompressionPolicy, int, CompressionPolicy> set) =>
        new(name, range, description, perLayer, (p, raw, _) =>
        {
            if (!int.TryParse(raw, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v)) throw new FormatException($"expected an integer in {range}");
            if (v < min || v > max) throw new FormatException($"out of range: expected an integer in {range}");
            return set(p, v);
        });

    private static PolicySetting Bool(string name, string description, bool perLayer, Func<CompressionPolicy, bool, CompressionPolicy> set) =>
        new(name, "true|false", description, perLayer, (p, raw, _) =>
            bool.TryParse(raw, out var v) ? set(p, v) : throw new FormatException("expected true or false"));

    private static PolicySetting Path(string name, string description, Func<CompressionPolicy, string, CompressionPolicy> set) =>
        new(name, "path", description, false, (p, raw, baseDirectory) => set(p, System.IO.Path.GetFullPath(System.IO.Path.Combine(baseDirectory, raw))));

    private static NmPattern? ParsePattern(string raw)
    {
        if (raw.Equals("unstructured", StringComparison.OrdinalIgnoreCase)) return null;
        var parts = raw.Split(':');
        if (parts.Length == 2 && int.TryParse(parts[0], CultureInfo.InvariantCulture, out var n) && int.TryParse(parts[1], CultureInfo.InvariantCulture, out var m) && n >= 1 && m >= 2 && n < m && m <= 64)
            return new NmPattern(n, m);
        throw new FormatException("expected 'unstructured' or N:M with 1 <= N < M <= 64 (e.g. 2:4)");
    }

    private static RankSpec ParseRank(string raw)
    {
        if (!double.TryParse(raw, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !double.IsFinite(v) || v <= 0)
            throw new FormatException("expected a ratio in (0, 1] or an integer rank >= 1");
        if (v <= 1 && raw.Contains('.')) return new RankSpec(v, IsRatio: true);
        if (v == 1) return new RankSpec(1, IsRatio: true);
        if (v != Math.Floor(v)) throw new FormatException("expected a ratio in (0, 1] or an integer rank >= 1");
        return new RankSpec(v, IsRatio: false);
    }

    private static ExecutionProviderSpec ParseProvider(string raw)
    {
        var text = raw.ToLowerInvariant();
        if (text == "cpu") return ExecutionProviderSpec.Cpu;
        if (text == "cuda") return new ExecutionProviderSpec("cuda", 0);
        if (text.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(text[5..], NumberStyles.None, CultureInfo.InvariantCulture, out var id) && id < 64)
            return new ExecutionProviderSpec("cuda", id);
        throw new FormatException("expected cpu, cuda or cuda:N");
    }
}
