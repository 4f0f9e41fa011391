using System.Globalization;
using System.Text.Json.Nodes;
using ModelCompression.Policy;

namespace ModelCompression.Pruning;

public enum PruneMethod { Auto, Magnitude, SparseGpt }
public enum PruneScope { Global, Layer }

/// <summary>Unstructured and N:M pruning: which weights become zero, chosen how, and how the result is stored.</summary>
public sealed record PruningOptions : IOptions<PruningOptions>
{
    public double Sparsity { get; init; }
    public PruneMethod PruneMethod { get; init; } = PruneMethod.Auto;
    public PruneScope PruneScope { get; init; } = PruneScope.Global;
    public NmPattern? SparsityPattern { get; init; }
    public double PruneDamping { get; init; } = 0.01;
    public int PruneBlockSize { get; init; } = 128;
    /// <summary>Also prune the first conv (reads the model input) and the classifier head (writes a model output).</summary>
    public bool PruneEdgeLayers { get; init; }
    /// <summary>Store mostly-zero initializers in a compact sparse form when that is smaller.</summary>
    public bool SparseStorage { get; init; } = true;

    /// <summary>The method that runs: auto is sparsegpt when calibration data is given (far more accurate), else magnitude.</summary>
    public PruneMethod MethodFor(bool calibrated) => PruneMethod != PruneMethod.Auto ? PruneMethod : calibrated ? PruneMethod.SparseGpt : PruneMethod.Magnitude;

    public static OptionsGroup<PruningOptions> Group { get; } = new OptionsGroup<PruningOptions>("Pruning", 20,
        "Unstructured and N:M sparsity.", isTechnique: true)
    {
        Active = o => o.Sparsity > 0 || o.SparsityPattern is not null,
        NeedsCalibration = o => o.PruneMethod == PruneMethod.SparseGpt ? ["PruneMethod=sparsegpt"] : [],
        Conflicting = (o, _) => o.SparsityPattern is { } nm && o.Sparsity > 0 && Math.Abs(o.Sparsity - (double)nm.N / nm.M) > 1e-9
            ? [$"Sparsity {o.Sparsity.ToString(CultureInfo.InvariantCulture)} contradicts SparsityPattern {nm} (which means {((double)nm.N / nm.M).ToString("0.###", CultureInfo.InvariantCulture)})"]
            : [],
    }
        .Add("Sparsity", Syntax.Number(0, 1, maxOpen: true), SettingScope.PerLayer,
            "Fraction of prunable weights set to zero (unstructured or N:M).",
            o => o.Sparsity, (o, v) => o with { Sparsity = v })
        .Add("PruneMethod", Syntax.Enum(("auto", PruneMethod.Auto), ("magnitude", PruneMethod.Magnitude), ("sparsegpt", PruneMethod.SparseGpt)), SettingScope.PerLayer,
            "auto = sparsegpt when CalibrationData is given, else magnitude; magnitude = smallest |w|; sparsegpt = data-aware one-shot OBS pruning with weight reconstruction (needs CalibrationData).",
            o => o.PruneMethod, (o, v) => o with { PruneMethod = v },
            explain: (v, p) => v == PruneMethod.Auto ? PolicySettings.FormatEnum(new PruningOptions().MethodFor(p.Data.CalibrationData is not null)) : null)
        .Add("PruneScope", Syntax.Enum(("global", PruneScope.Global), ("layer", PruneScope.Layer)), SettingScope.Model,
            "global = one threshold over all prunable layers, on scale-free (LAMP) weight scores, at most 98 % of any layer; layer = the same sparsity in every layer.",
            o => o.PruneScope, (o, v) => o with { PruneScope = v })
        .Add("SparsityPattern", Syntax.Custom<NmPattern?>("unstructured|N:M", ParsePattern, v => v?.ToString() ?? "unstructured",
                () => new JsonObject { ["type"] = "string", ["pattern"] = "^(unstructured|[0-9]+:[0-9]+)$" }), SettingScope.PerLayer,
            "unstructured, or N:M (N zeros in every M consecutive input weights, e.g. 2:4); N:M alone sets the sparsity N/M.",
            o => o.SparsityPattern, (o, v) => o with { SparsityPattern = v })
        .Add("PruneDamping", Syntax.Number(0, 1, minOpen: true), SettingScope.Model,
            "Dampening added to the diagonal of the input second moments (as a fraction of its mean) by SparseGPT and the least-squares refits.",
            o => o.PruneDamping, (o, v) => o with { PruneDamping = v })
        .Add("PruneBlockSize", Syntax.Integer(1, 4096), SettingScope.Model,
            "SparseGPT: columns processed per block.",
            o => o.PruneBlockSize, (o, v) => o with { PruneBlockSize = v })
        .Add("PruneEdgeLayers", Syntax.Bool, SettingScope.PerLayer,
            "Also prune the first conv (it reads the model input) and the classifier head (it writes a model output); by default both stay dense.",
            o => o.PruneEdgeLayers, (o, v) => o with { PruneEdgeLayers = v })
        .Add("SparseStorage", Syntax.Bool, SettingScope.Model,
            "With pruning: store mostly-zero weights (int8 ones too) in a compact sparse form, and floats exact in float16 (int8 scales) as float16, when that is smaller; ONNX Runtime expands them at load. On a model over 64 MiB gap-coded forms are not used (their load holds about 10× the model in memory; a CM0302 warning says which weights stay dense).",
            o => o.SparseStorage, (o, v) => o with { SparseStorage = v });

    private static NmPattern? ParsePattern(string raw)
    {
        if (raw.Equals("unstructured", StringComparison.OrdinalIgnoreCase)) return null;
        var parts = raw.Split(':');
        if (parts.Length == 2 && int.TryParse(parts[0], CultureInfo.InvariantCulture, out var n) && int.TryParse(parts[1], CultureInfo.InvariantCulture, out var m) && n >= 1 && m >= 2 && n < m && m <= 64)
            return new NmPattern(n, m);
        throw new FormatException("expected 'unstructured' or N:M with 1 <= N < M <= 64 (e.g. 2:4)");
    }
}
