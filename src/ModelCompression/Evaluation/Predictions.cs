using ModelCompression.Data;
using ModelCompression.Onnx;
using ModelCompression.Runtime;

namespace ModelCompression.Evaluation;

/// <summary>Runs a model over a whole dataset and returns its outputs for every sample, batches stacked along the sample axis (moved first).</summary>
public static class Predictions
{
    /// <summary>The first output, stacked as [N, …].</summary>
    public static FloatTensor Run(OnnxModel model, Dataset data, RuntimeOptions runtime, int batchSize, CancellationToken cancellation = default, IProgress<double>? progress = null)
    {
        using var session = OnnxRuntimeSession.Create(model, runtime);
        return Run(session, data.BindTo(ModelInput.FromGraph(model.Graph)), batchSize, cancellation, progress);
    }

    public static FloatTensor Run(OnnxRuntimeSession session, Dataset bound, int batchSize, CancellationToken cancellation = default, IProgress<double>? progress = null) =>
        RunAll(session, bound, batchSize, [session.OutputNames[0]], cancellation, progress)[session.OutputNames[0]];

    /// <summary>
    /// The named outputs (all when null), each batch's result appended along its sample axis, which is moved to the
    /// front: the axis named by the model's batch dimension (<see cref="Dataset.BatchSymbol"/>), else axis 0. A
    /// recurrent state [layers, batch, …] is returned as [N, layers, …], so rows are samples for every output.
    /// </summary>
    public static IReadOnlyDictionary<string, FloatTensor> RunAll(OnnxRuntimeSession session, Dataset bound, int batchSize, IReadOnlyList<string>? outputs = null,
        CancellationToken cancellation = default, IProgress<double>? progress = null)
    {
        var names = outputs ?? session.OutputNames;
        var parts = names.ToDictionary(n => n, _ => new List<FloatTensor>(), StringComparer.Ordinal);
        var axes = names.ToDictionary(n => n, n => bound.BatchSymbol is { } symbol && session.OutputSymbols.TryGetValue(n, out var dims) ? Math.Max(0, dims.ToList().IndexOf(symbol)) : 0, StringComparer.Ordinal);
        var done = 0;
        foreach (var batch in bound.Batches(batchSize))
        {
            cancellation.ThrowIfCancellationRequested();
            foreach (var (name, value) in session.Run(batch, names)) parts[name].Add(SamplesFirst(value, axes[name]));
            done += batch.Samples;
            progress?.Report((double)done / bound.Count);
        }
        var result = new Dictionary<string, FloatTensor>(StringComparer.Ordinal);
        foreach (var name in names)
        {
            var list = parts[name];
            if (list.Count == 0) { result[name] = new FloatTensor([], [0]); continue; }
            var all = new float[list.Sum(t => (long)t.Data.Length)];
            var offset = 0;
            foreach (var t in list) { t.Data.CopyTo(all, offset); offset += t.Data.Length; }
            var shape = (long[])list[0].Shape.Clone();
            if (shape.Length == 0) shape = [all.Length];
            else shape[0] = list.Sum(t => t.Shape.Length == 0 ? 1 : t.Shape[0]);
            result[name] = new FloatTensor(all, shape);
        }
        return result;
    }

    /// <summary>The tensor with <paramref name="axis"/> moved to the front ([L, B, H] → [B, L, H]).</summary>
    internal static FloatTensor SamplesFirst(FloatTensor t, int axis)
    {
        if (axis <= 0 || axis >= t.Shape.Length) return t;
        long outer = t.Shape.Take(axis).Aggregate(1L, (a, b) => a * b), n = t.Shape[axis], inner = t.Shape.Skip(axis + 1).Aggregate(1L, (a, b) => a * b);
        var data = new float[t.Data.Length];
        for (long s = 0; s < n; s++)
            for (long o = 0; o < outer; o++)
                Array.Copy(t.Data, (o * n + s) * inner, data, (s * outer + o) * inner, inner);
        var shape = new[] { n }.Concat(t.Shape.Take(axis)).Concat(t.Shape.Skip(axis + 1)).ToArray();
        return new FloatTensor(data, shape);
    }
}

/// <summary>Metrics over stacked outputs [N, C] (logits or probabilities).</summary>
public static class Metrics
{
    /// <summary>Fraction of samples whose label is among the <paramref name="k"/> largest outputs.</summary>
    public static double TopK(FloatTensor outputs, long[] labels, int k)
    {
        var n = outputs.Rows;
        var c = outputs.RowLength;
        var hits = 0;
        for (var i = 0; i < n; i++)
        {
            var row = outputs.Data.AsSpan(i * c, c);
            var label = labels[i];
            if (label < 0 || label >= c) continue;
            var target = row[(int)label];
            // A row with a NaN or an infinity ranks nothing: every comparison with NaN is false, so without this a
            // model that outputs NaN would score every sample as a hit.
            if (!AllFinite(row)) continue;
            var greater = 0;
            for (var j = 0; j < c; j++)
                if (row[j] > target || row[j] == target && j < label) greater++;
            if (greater < k) hits++;
        }
        return n == 0 ? 0 : (double)hits / n;
    }

    public static int[] ArgMax(FloatTensor outputs)
    {
        var c = outputs.RowLength;
        var result = new int[outputs.Rows];
        for (var i = 0; i < result.Length; i++)
        {
            var row = outputs.Data.AsSpan(i * c, c);
            var best = 0;
            for (var j = 1; j < c; j++) if (row[j] > row[best]) best = j;
            // -1: no class (a NaN row agrees with no finite one).
            result[i] = AllFinite(row) ? best : -1;
        }
        return result;
    }

    private static bool AllFinite(ReadOnlySpan<float> values)
    {
        foreach (var v in values) if (!float.IsFinite(v)) return false;
        return true;
    }

    /// <summary>Fraction of samples on which both models pick the same top-1 class.</summary>
    public static double Agreement(FloatTensor reference, FloatTensor candidate)
    {
        var a = ArgMax(reference);
        var b = ArgMax(candidate);
        return a.Length == 0 ? 1 : a.Zip(b).Count(p => p.First == p.Second) / (double)a.Length;
    }

    /// <summary>Mean over samples of the cosine similarity between the two models' output rows.</summary>
    public static double MeanCosine(FloatTensor reference, FloatTensor candidate)
    {
        var c = reference.RowLength;
        double total = 0;
        for (var i = 0; i < reference.Rows; i++)
        {
            double dot = 0, na = 0, nb = 0;
            for (var j = 0; j < c; j++)
            {
                double x = reference.Data[i * c + j], y = candidate.Data[i * c + j];
                dot += x * y; na += x * x; nb += y * y;
            }
            total += na == 0 || nb == 0 ? (na == nb ? 1 : 0) : dot / Math.Sqrt(na * nb);
        }
        return reference.Rows == 0 ? 1 : total / reference.Rows;
    }

    public static double MeanSquaredError(FloatTensor reference, FloatTensor candidate)
    {
        double total = 0;
        for (var i = 0; i < reference.Data.Length; i++)
        {
            double d = reference.Data[i] - candidate.Data[i];
            total += d * d;
        }
        return reference.Data.Length == 0 ? 0 : total / reference.Data.Length;
    }
}
