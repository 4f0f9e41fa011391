namespace ModelCompression.WeightSharing;

/// <summary>
/// A layer's weights as indices into a codebook of shared values. <see cref="Values"/> holds the entries in index
/// order (with <c>KeepZero</c>, entry 0 is 0 and every exact zero points at it); <see cref="Indices"/> has one entry
/// per weight, in the weights' order.
/// </summary>
internal sealed record SharedWeights(float[] Values, byte[] Indices, int Iterations, bool Converged);

/// <summary>
/// One-dimensional k-means (Lloyd) with linear initialization over [min, max] — the initialization Han et al. found
/// best for weight sharing, since it keeps centroids at the large weights that matter most. In one dimension every
/// cluster is a run of the sorted values between two midpoints, so after one sort each iteration only binary-searches
/// the k − 1 midpoints and reads cluster sums from prefix sums: O(k log n) per iteration, O(n log n) in all.
/// With importances (one per weight, e.g. the second moment of the input it multiplies) the centroids are weighted
/// means, so Lloyd minimizes Σ hᵢ(wᵢ − c)² instead; the nearest-centroid assignment, and so the sorted runs, stay.
/// Deterministic: no randomness, and the result depends on the values (and importances) only.
/// </summary>
internal static class ScalarKMeans
{
    /// <summary>
    /// Shares <paramref name="weights"/> among at most <paramref name="k"/> values (2..256). With
    /// <paramref name="keepZero"/>, exact zeros (pruned weights) take a fixed entry 0 and the other weights share the
    /// remaining k − 1, so zeros stay exactly zero and no nonzero weight becomes zero. Entries no weight uses are
    /// dropped (a layer with fewer distinct values than k). <paramref name="importance"/>: empty, or one positive
    /// weight per weight.
    /// </summary>
    public static SharedWeights Fit(ReadOnlySpan<float> weights, int k, int maxIterations, bool keepZero, ReadOnlySpan<double> importance = default)
    {
        if (k is < 2 or > 256) throw new ArgumentOutOfRangeException(nameof(k), k, "a codebook has 2..256 entries (uint8 indices)");
        if (!importance.IsEmpty && importance.Length != weights.Length) throw new ArgumentException("one importance per weight", nameof(importance));
        var sorted = new List<float>(weights.Length);
        var weightsOf = new List<double>(weights.Length);
        for (var i = 0; i < weights.Length; i++)
        {
            if (keepZero && weights[i] == 0) continue;
            sorted.Add(weights[i]);
            weightsOf.Add(importance.IsEmpty ? 1 : importance[i]);
        }
        var values = sorted.ToArray();
        var mass = weightsOf.ToArray();
        Array.Sort(values, mass);
        var free = keepZero ? k - 1 : k;
        var (centroids, iterations, converged) = values.Length == 0 ? (Array.Empty<double>(), 0, true) : Lloyd(values, mass, free, maxIterations);

        // The stored codebook: float centroids, each weight mapped to the nearest of them (midpoints recomputed from
        // the rounded values so that the mapping is exact for what is stored).
        var entries = centroids.Select(c => (float)c).ToArray();
        var midpoints = new double[Math.Max(0, entries.Length - 1)];
        for (var j = 0; j < midpoints.Length; j++) midpoints[j] = ((double)entries[j] + entries[j + 1]) / 2;
        var offset = keepZero ? 1 : 0;
        var raw = new int[weights.Length];
        var used = new bool[entries.Length + offset];
        for (var i = 0; i < weights.Length; i++)
        {
            var w = weights[i];
            var index = keepZero && w == 0 ? 0 : offset + Cluster(midpoints, w);
            raw[i] = index;
            used[index] = true;
        }

        // Drop unused entries (a value range narrower than k clusters, or equal centroids), keeping the order.
        var table = new List<float>();
        var renumber = new int[used.Length];
        for (var j = 0; j < used.Length; j++)
        {
            if (!used[j] && !(keepZero && j == 0)) continue;
            renumber[j] = table.Count;
            table.Add(keepZero && j == 0 ? 0f : entries[j - offset]);
        }
        var indices = new byte[weights.Length];
        for (var i = 0; i < raw.Length; i++) indices[i] = (byte)renumber[raw[i]];
        return new SharedWeights(table.ToArray(), indices, iterations, converged);
    }

    /// <summary>Lloyd iterations over sorted values: ascending centroids, iterations run, whether the clusters settled.</summary>
    private static (double[] Centroids, int Iterations, bool Converged) Lloyd(float[] sorted, double[] mass, int k, int maxIterations)
    {
        var n = sorted.Length;
        var prefix = new double[n + 1];
        var weight = new double[n + 1];
        for (var i = 0; i < n; i++)
        {
            prefix[i + 1] = prefix[i] + mass[i] * sorted[i];
            weight[i + 1] = weight[i] + mass[i];
        }

        double min = sorted[0], max = sorted[^1];
        var centroids = new double[k];
        for (var j = 0; j < k; j++) centroids[j] = k == 1 ? (min + max) / 2 : min + (max - min) * j / (k - 1);

        // split[j] = first sorted index of cluster j + 1; clusters keep their order, so sorted centroids stay sorted.
        var split = new int[k - 1];
        var previous = new int[k - 1];
        for (var iteration = 1; iteration <= maxIterations; iteration++)
        {
            for (var j = 0; j < k - 1; j++) split[j] = UpperBound(sorted, (centroids[j] + centroids[j + 1]) / 2);
            if (iteration > 1 && split.AsSpan().SequenceEqual(previous)) return (centroids, iteration - 1, true);
            for (var j = 0; j < k; j++)
            {
                var start = j == 0 ? 0 : split[j - 1];
                var end = j == k - 1 ? n : split[j];
                // An empty cluster keeps its centroid: it lies between its neighbours, so the order holds.
                var w = weight[end] - weight[start];
                if (end > start && w > 0) centroids[j] = Math.Clamp((prefix[end] - prefix[start]) / w, sorted[start], sorted[end - 1]);
            }
            (previous, split) = (split, previous);
        }
        // The last update may still have moved clusters: settled only if the next assignment equals the last one.
        for (var j = 0; j < k - 1; j++) split[j] = UpperBound(sorted, (centroids[j] + centroids[j + 1]) / 2);
        return (centroids, maxIterations, split.AsSpan().SequenceEqual(previous));
    }

    /// <summary>The cluster of <paramref name="value"/>: how many midpoints it lies above (ties go to the lower cluster).</summary>
    private static int Cluster(double[] midpoints, float value)
    {
        int lo = 0, hi = midpoints.Length;
        while (lo < hi)
        {
            var mid = (lo + hi) >>> 1;
            if (value > midpoints[mid]) lo = mid + 1;
            else hi = mid;
        }
        return lo;
    }

    /// <summary>The first index whose value is above <paramref name="bound"/> (ties stay below, as in <see cref="Cluster"/>).</summary>
    private static int UpperBound(float[] sorted, double bound)
    {
        int lo = 0, hi = sorted.Length;
        while (lo < hi)
        {
            var mid = (lo + hi) >>> 1;
            if (sorted[mid] > bound) hi = mid;
            else lo = mid + 1;
        }
        return lo;
    }
}
