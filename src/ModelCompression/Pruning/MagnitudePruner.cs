using ModelCompression.Policy;

namespace ModelCompression.Pruning;

/// <summary>Magnitude pruning of one weight matrix [rows = outputs, cols = inputs]: the smallest |w| become zero.</summary>
internal static class MagnitudePruner
{
    /// <summary>Zeroes exactly <paramref name="pruneCount"/> weights, the smallest by |w| (ties: lower index first).</summary>
    public static float[] Prune(float[] weights, long pruneCount)
    {
        var result = (float[])weights.Clone();
        if (pruneCount <= 0) return result;
        var index = SmallestFirst(weights);
        for (var t = 0; t < pruneCount; t++) result[index[t]] = 0;
        return result;
    }

    /// <summary>N:M along the input axis: in every run of M consecutive weights of a row, the N smallest by |w| become zero.</summary>
    public static float[] PruneNm(float[] weights, int rows, int cols, NmPattern pattern)
    {
        var result = (float[])weights.Clone();
        Span<int> order = stackalloc int[pattern.M];
        Span<double> magnitude = stackalloc double[pattern.M];
        for (var r = 0; r < rows; r++)
            for (var c = 0; c < cols; c += pattern.M)
            {
                var length = Math.Min(pattern.M, cols - c);
                var n = length == pattern.M ? pattern.N : pattern.N * length / pattern.M;
                for (var j = 0; j < length; j++) { order[j] = j; magnitude[j] = Math.Abs(weights[r * cols + c + j]); }
                SortAscending(order[..length], magnitude[..length]);
                for (var j = 0; j < n; j++) result[r * cols + c + order[j]] = 0;
            }
        return result;
    }

    /// <summary>Indices of <paramref name="weights"/> ordered by |w| ascending, ties by index (NaN, which a loaded model's weights never are, first).</summary>
    public static int[] SmallestFirst(float[] weights)
    {
        // One primitive sort of 64-bit keys, |w|'s bits above the index (non-negative floats order like their bits):
        // the order a comparison of (|w|, index) gives, several times faster than sorting indices through a delegate.
        var keys = new ulong[weights.Length];
        for (var i = 0; i < keys.Length; i++)
        {
            var magnitude = MathF.Abs(weights[i]);
            var bits = float.IsNaN(magnitude) ? 0u : BitConverter.SingleToUInt32Bits(magnitude) + 1;
            keys[i] = (ulong)bits << 32 | (uint)i;
        }
        Array.Sort(keys);
        var index = new int[keys.Length];
        for (var i = 0; i < index.Length; i++) index[i] = (int)(uint)keys[i];
        return index;
    }

    /// <summary>Insertion sort of a short index list by key, ties by index (N:M groups are a handful of weights).</summary>
    public static void SortAscending(Span<int> order, ReadOnlySpan<double> keys)
    {
        for (var i = 1; i < order.Length; i++)
        {
            var item = order[i];
            var j = i - 1;
            while (j >= 0 && (keys[order[j]] > keys[item] || keys[order[j]] == keys[item] && order[j] > item)) { order[j + 1] = order[j]; j--; }
            order[j + 1] = item;
        }
    }
}
