using ModelCompression.Numerics;
using ModelCompression.Runtime;

namespace ModelCompression.Calibration;

/// <summary>Which axis of a layer input holds the features a weight multiplies.</summary>
internal enum FeatureAxis
{
    /// <summary>The last axis (Gemm, MatMul): every leading index is one sample row.</summary>
    Last,
    /// <summary>Axis 1 (Conv, NCHW…): every batch item and spatial position is one sample.</summary>
    Channel,
}

/// <summary>
/// Running second moments of one layer input X̂ over calibration data, features on one axis (captured by
/// <see cref="LayerCapture"/>) — all activation-aware factorization needs:
/// for y = W·x the output error of a change ΔW is tr(ΔW·X̂ᵀX̂·ΔWᵀ). Paired with the input X the same layer sees in
/// the uncompressed model, it also keeps X̂ᵀX and XᵀX from the same batches, so a layer can be fitted to the original
/// outputs X·Wᵀ from the inputs upstream compression really leaves it. Batches are folded in and dropped.
/// </summary>
internal sealed class InputMoments
{
    /// <param name="paired">Whether batches come paired with the same value in a reference model (<see cref="Add(FloatTensor, FloatTensor)"/>).</param>
    public InputMoments(int features, FeatureAxis axis, bool paired = false)
    {
        Features = features;
        Axis = axis;
        Sum = new double[(long)features * features];
        if (!paired) return;
        Cross = new double[(long)features * features];
        ReferenceSum = new double[(long)features * features];
    }

    public int Features { get; }
    public FeatureAxis Axis { get; }
    /// <summary>X̂ᵀX̂, features×features, row-major.</summary>
    public double[] Sum { get; }
    /// <summary>X̂ᵀX (null unless paired).</summary>
    public double[]? Cross { get; }
    /// <summary>XᵀX of the reference inputs, over the same samples (null unless paired).</summary>
    public double[]? ReferenceSum { get; }
    public bool IsPaired => Cross is not null;
    public long Samples { get; private set; }

    /// <summary>Folds in one captured batch; false when its shape does not carry <see cref="Features"/> on the expected axis.</summary>
    public bool Add(FloatTensor batch)
    {
        if (Blocks(batch) is not { } x) return false;
        Accumulate(Sum, x, x, symmetric: true);
        Samples += (long)x.Items * x.Positions;
        return true;
    }

    /// <summary>Folds in the same batch as seen by this model (<paramref name="batch"/>) and the reference model.</summary>
    public bool Add(FloatTensor batch, FloatTensor reference)
    {
        if (Blocks(batch) is not { } x || Blocks(reference) is not { } r || r.Data.Length != x.Data.Length) return false;
        Accumulate(Sum, x, x, symmetric: true);
        Accumulate(Cross!, x, r, symmetric: false);
        // Summed exactly as a plain capture of the reference would (same batches, same order): the same XᵀX.
        Accumulate(ReferenceSum!, r, r, symmetric: true);
        Samples += (long)x.Items * x.Positions;
        return true;
    }

    /// <summary>A batch viewed as items × [features × positions] blocks: each moment entry is then a sum of contiguous dot products.</summary>
    private readonly record struct BlockView(float[] Data, int Items, int Positions);

    private BlockView? Blocks(FloatTensor batch)
    {
        if (Axis == FeatureAxis.Last)
        {
            if (batch.Shape.Length < 1 || batch.Shape[^1] != Features) return null;
            var positions = batch.Data.Length / Features;
            var blocks = new float[batch.Data.Length];
            for (var s = 0; s < positions; s++)
                for (var f = 0; f < Features; f++)
                    blocks[(long)f * positions + s] = batch.Data[(long)s * Features + f];
            return new BlockView(blocks, 1, positions);
        }
        if (batch.Shape.Length < 2 || batch.Shape[1] != Features) return null;
        var items = checked((int)batch.Shape[0]);
        return new BlockView(batch.Data, items, batch.Data.Length / Math.Max(1, items * Features));
    }

    /// <summary>target[i, j] += Σ aᵢ·bⱼ over samples; symmetric fills j ≤ i and mirrors.</summary>
    private void Accumulate(double[] target, BlockView a, BlockView b, bool symmetric)
    {
        int features = Features, positions = a.Positions, blockSize = Features * a.Positions;
        DenseMath.ForRows(features, (long)a.Items * positions * features, i =>
        {
            // Item by item, so each block stays in cache while row i meets every row j.
            var count = symmetric ? i + 1 : features;
            var row = new double[count];
            for (var n = 0; n < a.Items; n++)
            {
                var ai = a.Data.AsSpan(n * blockSize + i * positions, positions);
                var block = b.Data.AsSpan(n * blockSize, blockSize);
                for (var j = 0; j < count; j++) row[j] += DenseMath.Dot(ai, block.Slice(j * positions, positions));
            }
            for (var j = 0; j < count; j++)
            {
                target[(long)i * features + j] += row[j];
                if (symmetric && j != i) target[(long)j * features + i] += row[j];
            }
        });
    }
}
