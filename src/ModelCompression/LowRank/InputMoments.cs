using ModelCompression.Runtime;

namespace ModelCompression.LowRank;

/// <summary>Which axis of a layer input holds the features a weight multiplies.</summary>
internal enum FeatureAxis
{
    /// <summary>The last axis (Gemm, MatMul): every leading index is one sample row.</summary>
    Last,
    /// <summary>Axis 1 (Conv, NCHW…): every batch item and spatial position is one sample.</summary>
    Channel,
}

/// <summary>
/// The running uncentered second moment XᵀX of one layer input over calibration data — all that activation-aware
/// factorization needs: for y = W·x the output error of a change ΔW is tr(ΔW·XᵀX·ΔWᵀ). Batches are folded in and
/// dropped.
/// </summary>
internal sealed class InputMoments
{
    public InputMoments(int features, FeatureAxis axis)
    {
        Features = features;
        Axis = axis;
        Sum = new double[(long)features * features];
    }

    public int Features { get; }
    public FeatureAxis Axis { get; }
    /// <summary>Σ xxᵀ, features×features, row-major.</summary>
    public double[] Sum { get; }
    public long Samples { get; private set; }

    /// <summary>Folds in one captured batch; false when its shape does not carry <see cref="Features"/> on the expected axis.</summary>
    public bool Add(FloatTensor batch)
    {
        // Viewed as items × [features × positions] blocks, each entry of XᵀX is a sum of contiguous dot products.
        float[] blocks;
        int items, positions;
        if (Axis == FeatureAxis.Last)
        {
            if (batch.Shape.Length < 1 || batch.Shape[^1] != Features) return false;
            items = 1;
            positions = batch.Data.Length / Features;
            blocks = new float[batch.Data.Length];
            for (var s = 0; s < positions; s++)
                for (var f = 0; f < Features; f++)
                    blocks[(long)f * positions + s] = batch.Data[(long)s * Features + f];
        }
        else
        {
            if (batch.Shape.Length < 2 || batch.Shape[1] != Features) return false;
            items = checked((int)batch.Shape[0]);
            positions = batch.Data.Length / Math.Max(1, items * Features);
            blocks = batch.Data;
        }
        DenseMath.ForRows(Features, (long)items * positions * Features / 2, i =>
        {
            // Item by item, so each block stays in cache while row i meets every row j ≤ i.
            var row = new double[i + 1];
            for (var n = 0; n < items; n++)
            {
                var block = blocks.AsSpan(n * Features * positions, Features * positions);
                var xi = block.Slice(i * positions, positions);
                for (var j = 0; j <= i; j++) row[j] += DenseMath.Dot(xi, block.Slice(j * positions, positions));
            }
            for (var j = 0; j <= i; j++)
            {
                Sum[(long)i * Features + j] += row[j];
                if (j != i) Sum[(long)j * Features + i] += row[j];
            }
        });
        Samples += (long)items * positions;
        return true;
    }
}
