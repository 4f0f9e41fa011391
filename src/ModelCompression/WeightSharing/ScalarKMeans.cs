namespace ModelCompression.WeightSharing;

/// <summary>
/// A layer's weights as indices into a codebook of shared values. <see cref="Values"/> holds the entries in index
/// order (with <c>KeepZero</c>, entry 0 is 0 and every exact zero points at it); <see cref="Indices"/> has one entry
/// per weight, in the weights' order. <see cref="Lambda"/> is the price in squared weight units of one bit of index
/// entropy the assignment paid (0: nearest value); <see cref="Bits"/> what each entry's index costs, −log2 of its
/// share of the weights it may take.
/// </summary>
internal sealed record SharedWeights(float[] Values, byte[] Indices, int Iterations, bool Converged, double Lambda = 0, double[]? Bits = null);

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
    public static SharedWeights Fit(ReadOnlySpan<float> weights, int k, int maxIterations, bool keepZero, double rate = 0, ReadOnlySpan<double> importance = default)
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
        double lambda = 0;
        double[]? bits = null;
        // The rate step prices plain squared errors: with importances it starts from the weighted centroids.
        if (rate > 0 && centroids.Length > 1) (centroids, bits, lambda) = EntropyConstrained(values, centroids, rate, maxIterations);

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
            var index = keepZero && w == 0 ? 0 : offset + (bits is null ? Cluster(midpoints, w) : Cheapest(entries, bits, lambda, w));
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
        return new SharedWeights(table.ToArray(), indices, iterations, converged, lambda, lambda > 0 ? EntryBits(indices, table.Count, offset) : null);
    }

    /// <summary>−log2 of each entry's share of the weights that may take it (entries from <paramref name="offset"/>; +∞ when unused).</summary>
    public static double[] EntryBits(byte[] indices, int entries, int offset)
    {
        var counts = new long[entries];
        foreach (var i in indices) counts[i]++;
        var total = counts.Skip(offset).Sum();
        var bits = new double[entries];
        for (var j = 0; j < entries; j++) bits[j] = j < offset || counts[j] == 0 ? double.PositiveInfinity : -Math.Log2((double)counts[j] / total);
        return bits;
    }

    /// <summary>The entry (from <paramref name="offset"/>) with the least (x − c)² + λ·bits: the rate-penalized choice.</summary>
    public static int Cheapest(ReadOnlySpan<float> entries, ReadOnlySpan<double> bits, double lambda, double x, int offset = 0)
    {
        var best = offset;
        var bestCost = double.PositiveInfinity;
        for (var j = offset; j < entries.Length; j++)
        {
            if (double.IsPositiveInfinity(bits[j])) continue;
            var d = x - entries[j];
            var cost = d * d + lambda * bits[j];
            if (cost < bestCost) { bestCost = cost; best = j; }
        }
        return best - offset;
    }

    /// <summary>
    /// Entropy-constrained scalar quantization (Chou, Lookabaugh &amp; Gray, 1989) from the k-means codebook: each value
    /// goes to the entry with the least (x − c)² + λ·bits, bits = −log2 of the entry's share, and entries move to their
    /// cells' means, until no share changes. λ = <paramref name="rate"/> × the k-means mean squared error D. The
    /// containers that ship models entropy-code them, so what an index costs is its entropy, not ⌈log2 k⌉: rare outer
    /// entries get narrower cells, frequent inner ones wider, for fewer bits at nearly the same error. Entries whose
    /// cells empty are dropped. Returns the sorted entries, their bits and λ.
    /// </summary>
    private static (double[] Centroids, double[] Bits, double Lambda) EntropyConstrained(float[] sorted, double[] centroids, double rate, int maxIterations)
    {
        var n = sorted.Length;
        var k = centroids.Length;
        var prefix = new double[n + 1];
        var squares = new double[n + 1];
        for (var i = 0; i < n; i++)
        {
            prefix[i + 1] = prefix[i] + sorted[i];
            squares[i + 1] = squares[i] + (double)sorted[i] * sorted[i];
        }
        var c = (double[])centroids.Clone();
        var bits = new double[k]; // all 0: the first pass is the nearest-value assignment, and gives D
        var counts = Cells(sorted, c, bits, 0, prefix, out var distortion);
        var lambda = rate * distortion / n;
        for (var iteration = 0; iteration < maxIterations; iteration++)
        {
            for (var j = 0; j < k; j++) bits[j] = counts[j] == 0 ? double.PositiveInfinity : -Math.Log2((double)counts[j] / n);
            var next = Cells(sorted, c, bits, lambda, prefix, out _);
            var stable = next.AsSpan().SequenceEqual(counts);
            counts = next;
            if (stable) break;
        }
        var kept = Enumerable.Range(0, k).Where(j => counts[j] > 0).ToArray();
        return (kept.Select(j => c[j]).ToArray(), kept.Select(j => -Math.Log2((double)counts[j] / n)).ToArray(), lambda);

        // One assignment (each value to the entry with the least (x − c)² + λ·bits) and update (entries to their cells'
        // means). The costs are x² plus lines in x with slopes −2c, so the cheapest entry never decreases with x and
        // the cells are runs of the sorted values: the lower envelope of the lines gives their bounds (O(k log n)).
        long[] Cells(float[] values, double[] centers, double[] price, double l, double[] sums, out double error)
        {
            var hull = new int[k];
            var bounds = new double[k];
            var h = 0;
            for (var j = 0; j < k; j++)
            {
                if (double.IsPositiveInfinity(price[j])) continue;
                var intercept = centers[j] * centers[j] + l * price[j];
                var x = double.NegativeInfinity;
                while (h > 0)
                {
                    var top = hull[h - 1];
                    var topIntercept = centers[top] * centers[top] + l * price[top];
                    // Entry j is cheaper than the top one above x (centers ascend; an equal center: the cheaper stays).
                    x = centers[j] > centers[top] ? (intercept - topIntercept) / (2 * (centers[j] - centers[top])) : intercept < topIntercept ? double.NegativeInfinity : double.PositiveInfinity;
                    if (h > 1 && x <= bounds[h - 2] || double.IsNegativeInfinity(x)) { h--; x = double.NegativeInfinity; continue; }
                    break;
                }
                if (double.IsPositiveInfinity(x)) continue;
                if (h > 0) bounds[h - 1] = x;
                hull[h++] = j;
            }
            var result = new long[k];
            error = 0;
            var start = 0;
            for (var i = 0; i < h; i++)
            {
                var end = i == h - 1 ? values.Length : UpperBound(values, bounds[i]);
                var j = hull[i];
                result[j] = end - start;
                if (end > start)
                {
                    var sum = sums[end] - sums[start];
                    error += squares[end] - squares[start] - 2 * centers[j] * sum + (end - start) * centers[j] * centers[j];
                    centers[j] = sum / (end - start);
                }
                start = end;
            }
            return result;
        }
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
    internal static int Cluster(double[] midpoints, double value)
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
