using ModelCompression.Data;
using ModelCompression.Onnx;
using ModelCompression.Runtime;

namespace ModelCompression.Evaluation;

/// <summary>Runs a model over a whole dataset and returns its first output for every sample, stacked as [N, …].</summary>
public static class Predictions
{
    public static FloatTensor Run(OnnxModel model, Dataset data, RuntimeOptions runtime, int batchSize, CancellationToken cancellation = default, IProgress<double>? progress = null)
    {
        using var session = OnnxRuntimeSession.Create(model.ToBytes(), runtime);
        return Run(session, data.BindTo(ModelInput.FromGraph(model.Graph)), batchSize, cancellation, progress);
    }

    public static FloatTensor Run(OnnxRuntimeSession session, Dataset bound, int batchSize, CancellationToken cancellation = default, IProgress<double>? progress = null)
    {
        var output = session.OutputNames[0];
        float[]? all = null;
        long[]? shape = null;
        var offset = 0;
        var done = 0;
        foreach (var batch in bound.Batches(batchSize))
        {
            cancellation.ThrowIfCancellationRequested();
            var result = session.Run(batch, [output])[output];
            if (all is null)
            {
                var perSample = result.Data.Length / Math.Max(1, batch[0].Count);
                all = new float[(long)perSample * bound.Count];
                shape = (long[])result.Shape.Clone();
                shape[0] = bound.Count;
            }
            result.Data.CopyTo(all, offset);
            offset += result.Data.Length;
            done += batch[0].Count;
            progress?.Report((double)done / bound.Count);
        }
        return new FloatTensor(all ?? [], shape ?? [0]);
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
            result[i] = best;
        }
        return result;
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
