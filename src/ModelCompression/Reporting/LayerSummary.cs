using ModelCompression.Evaluation;
using ModelCompression.Graph;
using ModelCompression.Onnx;
using ModelCompression.Passes;
using static ModelCompression.Evaluation.MetricFormat;

namespace ModelCompression.Reporting;

/// <summary>
/// One row of the report's per-layer table: a layer's final state after every pass. Parameter counts are measured
/// on the original and the final model the same way as the report's totals (<see cref="ModelWeights"/>), so a row
/// never contradicts another; <see cref="Steps"/> keeps what each pass recorded.
/// </summary>
public sealed record LayerSummary
{
    public required string Layer { get; init; }
    public required string Op { get; init; }
    public long[]? Shape { get; init; }
    /// <summary>Every technique applied to the layer, in pipeline order, e.g. "sparsegpt 80.0 % + int8"; "none" when every pass left it as it was.</summary>
    public required string Technique { get; init; }
    public long ParametersBefore { get; init; }
    public long ParametersAfter { get; init; }
    public long NonZeroParametersAfter { get; init; }
    /// <summary>Fraction of the final parameters that are zero (null when the layer has none).</summary>
    public double? Sparsity => ParametersAfter > 0 ? 1 - (double)NonZeroParametersAfter / ParametersAfter : null;
    public int? Bits { get; init; }
    public int? Rank { get; init; }
    /// <summary>
    /// The layer's stored tensors in the final model (weights, biases, codebooks, packed indices, sparse values and
    /// codes: everything its constant inputs are decoded from), as stored and each codec applied to them alone. An
    /// approximation of the layer's share of the compressed model: the model is compressed as one stream, so
    /// neighbours share a dictionary and the per-layer sizes add up to a little more than the whole.
    /// </summary>
    public CompressedSizes? StoredSizes { get; init; }
    /// <summary>
    /// The empirical entropy bound of those tensors in bytes: each tensor's Shannon entropy of its element values
    /// (bytes for packed forms) times its element count. A coder of independent symbols can not beat it; a
    /// context-modelling one (Brotli) can, where values repeat in patterns.
    /// </summary>
    public double? EntropyBytes { get; init; }
    public required IReadOnlyList<LayerRecord> Steps { get; init; }
}

/// <summary>Merges the passes' records into one row per layer.</summary>
public static class LayerTable
{
    /// <param name="records">What the passes recorded, in order (a layer may appear once per pass).</param>
    /// <param name="before">The original model's weights.</param>
    /// <param name="after">The final model's weights.</param>
    /// <param name="nodeOrder">The original model's layer names in graph order: rows follow it (others keep record order, after them).</param>
    /// <param name="final">The final model: when given, each row gets its stored tensors' sizes and entropy bound.</param>
    public static IReadOnlyList<LayerSummary> Build(IReadOnlyList<LayerRecord> records, IReadOnlyList<ModelWeight> before, IReadOnlyList<ModelWeight> after,
        IReadOnlyList<string>? nodeOrder = null, OnnxModel? final = null)
    {
        // Rows in order of first appearance. A node a pass split off a layer (low rank's "<layer>/lowrank_reduce",
        // Tucker's "<layer>/tucker_core") belongs to that layer's row, whatever later passes recorded for it.
        var names = new List<string>();
        foreach (var r in records) if (!names.Contains(r.Layer)) names.Add(r.Layer);
        var rowOf = names.ToDictionary(n => n, n => Owner(n, names, allowUnderscore: false) ?? n, StringComparer.Ordinal);
        var position = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var n in nodeOrder ?? []) position.TryAdd(n, position.Count);
        var rowNames = names.Where(n => rowOf[n] == n).Select((n, i) => (n, i))
            .OrderBy(x => position.TryGetValue(x.n, out var p) ? p : int.MaxValue).ThenBy(x => x.i).Select(x => x.n).ToList();

        var original = before.Select(w => CompressionContext.LayerName(w.Consumer)).ToHashSet(StringComparer.Ordinal);
        var beforeCount = Sum(before, rowNames, unowned: original);
        var afterCount = Sum(after, rowNames, unowned: original);
        var stored = final is null ? null : LayerStorage.Measure(final, after.GroupBy(w => RowOf(w, rowNames.ToHashSet(StringComparer.Ordinal), rowNames, original))
            .Where(g => g.Key is not null).ToDictionary(g => g.Key!, g => g.Select(w => w.Value).ToList(), StringComparer.Ordinal));

        var rows = new List<LayerSummary>();
        foreach (var name in rowNames)
        {
            var steps = records.Where(r => rowOf[r.Layer] == name).ToList();
            var first = steps.First(r => r.Layer == name);
            var applied = steps.Where(Applied).ToList();
            var parametersBefore = beforeCount.TryGetValue(name, out var b) ? b.Parameters : first.ParametersBefore;
            var (parametersAfter, nonZeros) = afterCount.TryGetValue(name, out var a) ? a
                : (steps[^1].ParametersAfter, steps[^1].ParametersAfter);
            rows.Add(new LayerSummary
            {
                Layer = name,
                Op = first.Op,
                Shape = first.Shape,
                Technique = applied.Count == 0 ? "none" : string.Join(" + ", applied.Select(Label).Distinct()),
                ParametersBefore = parametersBefore,
                ParametersAfter = parametersAfter,
                NonZeroParametersAfter = nonZeros,
                Bits = steps.LastOrDefault(r => r.Bits is not null)?.Bits,
                Rank = steps.LastOrDefault(r => r.Rank is not null)?.Rank,
                StoredSizes = stored is not null && stored.TryGetValue(name, out var sizes) ? sizes.Sizes : null,
                EntropyBytes = stored is not null && stored.TryGetValue(name, out var bound) ? bound.Entropy : null,
                Steps = steps,
            });
        }
        return rows;
    }

    /// <summary>Whether a record says the pass changed the layer (rather than why it left it alone).</summary>
    public static bool Applied(LayerRecord r) =>
        r.Bits is < 32 || r.Rank is not null || r.ReconstructionError is not null || r.Sparsity is > 0 ||
        r.ParametersAfter != r.ParametersBefore || r.Rewritten;

    /// <summary>A step as the Technique column names it: "sparsegpt 80.0 %", "svd rank 32", "int8".</summary>
    public static string Label(LayerRecord r) => r switch
    {
        { Technique: "prune" } => $"{Method(r)} {Sparsity(r.Sparsity ?? 0)}",
        { Rank: { } rank } => $"{r.Technique} rank {rank}",
        _ => r.Technique,
    };

    /// <summary>The relative error of each applied step, named when there are several.</summary>
    public static string Errors(LayerSummary row)
    {
        var errors = row.Steps.Where(s => Applied(s) && s.ReconstructionError is not null).ToList();
        return errors.Count switch
        {
            0 => "",
            1 => LayerError(errors[0].ReconstructionError),
            _ => string.Join(", ", errors.Select(s => $"{(s.Technique == "prune" ? Method(s) : s.Technique)} {LayerError(s.ReconstructionError)}")),
        };
    }

    /// <summary>What the passes noted (variants, kernels, why a pass left the layer alone), each once.</summary>
    public static string Notes(LayerSummary row) =>
        string.Join("; ", row.Steps.Where(s => !string.IsNullOrEmpty(s.Note)).Select(s => Applied(s) ? $"{s.Technique}: {s.Note}" : $"{s.Technique} not applied: {s.Note}").Distinct());

    private static string Method(LayerRecord r) => r.Note?.Split([',', ';'], 2)[0].Trim() is { Length: > 0 } method ? method : r.Technique;

    /// <summary>Which row a node's weights count toward: its own, or the layer it was split off (longest prefix).</summary>
    private static string? Owner(string name, IReadOnlyCollection<string> rows, bool allowUnderscore) =>
        rows.Where(r => r != name && name.Length > r.Length && name.StartsWith(r, StringComparison.Ordinal) &&
                        (name[r.Length] == '/' || (allowUnderscore && name[r.Length] == '_')))
            .MaxBy(r => r.Length);

    private static string? RowOf(ModelWeight w, HashSet<string> set, List<string> rows, HashSet<string> unowned)
    {
        var layer = CompressionContext.LayerName(w.Consumer);
        return set.Contains(layer) ? layer : unowned.Contains(layer) ? null : Owner(layer, rows, allowUnderscore: true);
    }

    /// <summary>
    /// Parameters and nonzeros per row. In the final model a layer may be several nodes: "&lt;layer&gt;/…" from low rank,
    /// and "&lt;layer&gt;_…" from dynamic quantization (MatMulInteger, bias Add), which replaces the node under fresh
    /// names. A node of the original model (<paramref name="unowned"/>) counts only toward its own row.
    /// </summary>
    private static Dictionary<string, (long Parameters, long NonZeros)> Sum(IReadOnlyList<ModelWeight> weights, List<string> rows, HashSet<string> unowned)
    {
        var set = rows.ToHashSet(StringComparer.Ordinal);
        var result = new Dictionary<string, (long Parameters, long NonZeros)>(StringComparer.Ordinal);
        foreach (var w in weights)
        {
            var row = RowOf(w, set, rows, unowned);
            if (row is null) continue;
            var (p, nz) = result.GetValueOrDefault(row);
            result[row] = (p + w.Elements, nz + (w.NonZeros ?? w.Elements));
        }
        return result;
    }
}
