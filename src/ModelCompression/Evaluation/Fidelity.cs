using ModelCompression.Runtime;

namespace ModelCompression.Evaluation;

/// <summary>
/// How closely one output of the compressed model follows the original's over the whole validation set. Computed
/// over the pairs where both values are finite; <see cref="NonFinite"/> counts the others, and the gate fails on any.
/// </summary>
public sealed record OutputFidelity
{
    public required string Name { get; init; }
    /// <summary>The stacked shape: samples first (each batch joined along its sample axis, moved to the front).</summary>
    public required long[] Shape { get; init; }
    /// <summary>Mean over the first axis of each row's cosine similarity; for one value per row, the whole output's.</summary>
    public double Cosine { get; init; }
    /// <summary>10·log10(Σ original² / Σ (original − compressed)²); +∞ when the outputs are identical.</summary>
    public double SnrDb { get; init; }
    public double MaxAbsError { get; init; }
    public double MeanSquaredError { get; init; }
    /// <summary>The class axis argmax agreement is taken along; null when the output has none (see <see cref="Fidelity.ClassAxis"/>).</summary>
    public int? ClassAxis { get; init; }
    /// <summary>Fraction of positions (every index but the class axis) where both models pick the same class.</summary>
    public double? Agreement { get; init; }
    /// <summary>The threshold t of <see cref="DecisionAgreement"/> and <see cref="MaskIou"/> (a value is "on" when p &gt; t).</summary>
    public double DecisionThreshold { get; init; } = 0.5;
    /// <summary>For an output whose original values all lie in [0, 1]: fraction of values on the same side of the threshold.</summary>
    public double? DecisionAgreement { get; init; }
    /// <summary>
    /// For an output whose original values all lie in [0, 1]: intersection over union of the masks p &gt; threshold of
    /// original and compressed, pooled over the whole validation set (Σ intersections / Σ unions); 1 when both are empty.
    /// </summary>
    public double? MaskIou { get; init; }
    /// <summary>Compressed values that are NaN or infinite where the original's are finite.</summary>
    public long NonFinite { get; init; }
}

public static class Fidelity
{
    /// <summary>
    /// The axis that holds classes, if any: the last one of a rank-2 or rank-3 output ([N, C] logits, [N, T, C]
    /// sequences), axis 1 of a rank-4+ output ([N, C, H, W] segmentation); none when that axis has one entry (a
    /// probability [N, 1], a detection map [N, 1, H, W]), where an argmax is always the same index.
    /// </summary>
    public static int? ClassAxis(long[] shape)
    {
        int axis = shape.Length switch { 2 or 3 => shape.Length - 1, >= 4 => 1, _ => -1 };
        return axis >= 0 && shape[axis] > 1 ? axis : null;
    }

    /// <param name="threshold">Where a value in [0, 1] turns "on", for decision agreement and mask IoU.</param>
    public static OutputFidelity Compare(string name, FloatTensor reference, FloatTensor candidate, double threshold = 0.5)
    {
        var a = reference.Data;
        var b = candidate.Data;
        if (a.Length != b.Length) throw new ArgumentException($"output '{name}' has {b.Length} values in the compressed model, {a.Length} in the original");
        long nonFinite = 0;
        double signal = 0, noise = 0, maxAbs = 0;
        bool unit = true;
        long pairs = 0;
        for (var i = 0; i < a.Length; i++)
        {
            if (!float.IsFinite(a[i])) continue;
            if (!float.IsFinite(b[i])) { nonFinite++; continue; }
            double x = a[i], d = x - b[i];
            signal += x * x; noise += d * d; pairs++;
            maxAbs = Math.Max(maxAbs, Math.Abs(d));
            // A little slack: ONNX Runtime's vectorized Sigmoid can return 1 + an ulp or two.
            if (x < -1e-5 || x > 1 + 1e-5) unit = false;
        }

        var rows = reference.Shape.Length == 0 ? 1 : (int)Math.Max(1, reference.Shape[0]);
        var rowLength = a.Length / rows;
        double cosine;
        if (rowLength >= 2 && rows * rowLength == a.Length)
        {
            double total = 0;
            for (var r = 0; r < rows; r++) total += Cosine(a.AsSpan(r * rowLength, rowLength), b.AsSpan(r * rowLength, rowLength));
            cosine = total / rows;
        }
        else cosine = Cosine(a, b);

        var axis = ClassAxis(reference.Shape);
        double? agreement = axis is { } k && reference.Shape.Aggregate(1L, (p, d) => p * d) == a.Length ? ArgMaxAgreement(a, b, reference.Shape, k) : null;
        double? decision = null, iou = null;
        if (unit && pairs > 0)
        {
            long same = 0, counted = 0, intersection = 0, union = 0;
            for (var i = 0; i < a.Length; i++)
            {
                if (!float.IsFinite(a[i])) continue;
                counted++;
                // A non-finite compressed value is "off" (NaN > t is false) and never agrees.
                bool x = a[i] > threshold, y = float.IsFinite(b[i]) && b[i] > threshold;
                if (x == y && float.IsFinite(b[i])) same++;
                if (x && y) intersection++;
                if (x || y) union++;
            }
            decision = (double)same / counted;
            iou = union == 0 ? 1 : (double)intersection / union;
        }
        return new OutputFidelity
        {
            Name = name,
            Shape = (long[])reference.Shape.Clone(),
            Cosine = cosine,
            SnrDb = noise == 0 ? double.PositiveInfinity : 10 * Math.Log10(signal / noise),
            MaxAbsError = maxAbs,
            MeanSquaredError = pairs == 0 ? 0 : noise / pairs,
            ClassAxis = agreement is null ? null : axis,
            Agreement = agreement,
            DecisionThreshold = threshold,
            DecisionAgreement = decision,
            MaskIou = iou,
            NonFinite = nonFinite,
        };
    }

    /// <summary>Cosine similarity over the finite pairs; 1 when both are zero, 0 when only one is.</summary>
    private static double Cosine(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double dot = 0, na = 0, nb = 0;
        for (var j = 0; j < a.Length; j++)
        {
            if (!float.IsFinite(a[j]) || !float.IsFinite(b[j])) continue;
            double x = a[j], y = b[j];
            dot += x * y; na += x * x; nb += y * y;
        }
        return na == 0 || nb == 0 ? (na == nb ? 1 : 0) : dot / Math.Sqrt(na * nb);
    }

    private static double ArgMaxAgreement(float[] a, float[] b, long[] shape, int axis)
    {
        long outer = 1, inner = 1;
        for (var i = 0; i < axis; i++) outer *= shape[i];
        for (var i = axis + 1; i < shape.Length; i++) inner *= shape[i];
        var classes = shape[axis];
        long same = 0;
        for (long o = 0; o < outer; o++)
            for (long i = 0; i < inner; i++)
            {
                var start = o * classes * inner + i;
                if (ArgMax(a, start, classes, inner) is var x && x >= 0 && x == ArgMax(b, start, classes, inner)) same++;
            }
        return outer * inner == 0 ? 1 : (double)same / (outer * inner);
    }

    /// <summary>The index of the largest of <paramref name="count"/> values <paramref name="stride"/> apart; -1 when one is not finite.</summary>
    private static long ArgMax(float[] data, long start, long count, long stride)
    {
        long best = 0;
        for (long c = 0; c < count; c++)
        {
            var v = data[start + c * stride];
            if (!float.IsFinite(v)) return -1;
            if (v > data[start + best * stride]) best = c;
        }
        return best;
    }
}
